"""Typed errors. Services decide retry / hold / dead-letter from the type.

Modelled on aiokafka's and asyncpg's error hierarchies: every error carries a
``retriable`` flag, and :func:`classify_db_error` maps a driver exception to
one of ours by its class and SQLSTATE, never by its message text.
"""

from __future__ import annotations

import asyncio
import socket

import asyncpg

from .models import DeadReason


class RegionGuardError(Exception):
    retriable: bool = False


class RegionUnavailable(RegionGuardError):
    """Connection-level failure: the region's database can't be reached.

    Retriable, counts against the region's breaker, and makes the router stop
    direct applies to that region at once.
    """

    retriable = True

    def __init__(self, region: str, kind: str, detail: str = ""):
        super().__init__(f"region {region} unavailable ({kind}){': ' + detail if detail else ''}")
        self.region, self.kind = region, kind


class TransientDBError(RegionGuardError):
    """The server answered but asked us to try again (serialization, deadlock, shutdown...)."""

    retriable = True

    def __init__(self, region: str, kind: str, detail: str = ""):
        super().__init__(f"region {region} transient error ({kind}){': ' + detail if detail else ''}")
        self.region, self.kind = region, kind


class MissingPrivilege(TransientDBError):
    """SQLSTATE 42501: the service's role lacks a grant (``regionguard grants``, docs/grants.md).

    An operator's error, not a row's: every write of the table would fail alike, so none is
    dead-lettered. The batch is retried with backoff until the grant is fixed, counted in
    ``regionguard_apply_errors_total{kind="insufficient_privilege"}`` and reported to the
    health service as a failed passive observation, so it counts against the region's breaker.
    """

    def __init__(self, region: str, detail: str = ""):
        super().__init__(region, "insufficient_privilege", detail)


class PreparedStatementLost(TransientDBError):
    """SQLSTATE 26000 / 42P05: the driver's prepared statements and the server session disagree.

    Our SQL never names a prepared statement; asyncpg's statement cache does. A pooler in
    transaction mode (PgBouncer without ``max_prepared_statements``, RDS Proxy) hands each
    transaction whichever server session is free, so a cached statement is missing there
    (``InvalidSQLStatementNameError``) or its name is taken by another client's
    (``DuplicatePreparedStatementError``). About the connection, never a row: retried with
    backoff, never dead-lettered, counted as ``kind="prepared_statement"``; the fix is the
    region's ``statement_cache_size: 0`` (docs/poolers.md). The connection is dropped, not
    pooled again: its cache names statements of a session it no longer holds.
    """

    def __init__(self, region: str, name: str):
        super().__init__(region, "prepared_statement", name)


class BadWrite(RegionGuardError):
    """A write that can never apply as it is: it goes to the dead-letter topic."""

    retriable = False

    def __init__(self, reason: DeadReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason, self.detail = reason, detail


class PoisonWrite(RegionGuardError):
    """The server (or the client library) rejected a row for a reason we can't name.

    A trigger's RAISE, a cardinality violation (SQLSTATE 21000), a key too long
    for its index (54000), any SQLSTATE outside the known classes, or an error
    raised while encoding a row. Isolated like a bad write: the batch is split
    until the failing row stands alone, which is dead-lettered as ``poison``
    with the SQLSTATE in its detail, so it can never block its partition. Only
    errors that say the region is unreachable or overloaded are retried.
    """

    retriable = False

    def __init__(self, detail: str, sqlstate: str | None = None):
        super().__init__(detail)
        self.detail, self.sqlstate = detail, sqlstate


class RegionNotReady(RegionGuardError):
    """Reachable, but not a writable primary with our tables (replay readiness)."""

    retriable = True


# SQLSTATE classes (https://www.postgresql.org/docs/current/errcodes-appendix.html).
# Only the states below are retried; every other state belongs to the rows of the statement that
# raised it and is isolated row by row (issue 25: an unknown state retried forever stopped a lane).
_TRANSIENT_STATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "40003",  # statement_completion_unknown
    "55P03",  # lock_not_available
    "55006",  # object_in_use
    "57014",  # query_canceled (statement timeout)
    "42P01",  # undefined_table: an allow-listed table is missing in this region
    "72000",  # snapshot_too_old
}
_TRANSIENT_PREFIX = (
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "58",  # system error: I/O error, undefined file (the server's, not the row's)
)
_UNAVAILABLE_STATES = {
    "57P01", "57P02", "57P03", "57P04", "57P05",  # admin/crash shutdown, cannot connect now, idle timeouts
    "08000", "08003", "08006", "08001", "08004", "08007", "08P01",  # connection exceptions
    "28000", "28P01",  # auth failures: listener replaced / credentials rotated
    "3D000",  # database does not exist
    "25006",  # read_only_sql_transaction: a demoted primary is not our region's writer
}
_PREPARED_STATEMENT_STATES = {
    "26000",  # invalid_sql_statement_name: a cached statement is not in this server session
    "42P05",  # duplicate_prepared_statement: another client's statement of that name is
}
_INSUFFICIENT_PRIVILEGE = "42501"  # an operator must fix grants: retried, never a row's dead letter
_SCHEMA_STATES_PREFIX = ("22",)  # data exceptions: bad text representation, out of range...
_CONSTRAINT_PREFIX = ("23",)  # integrity constraint violations
_UNKNOWN_COLUMN = {"42703"}

#: Python errors a row's own values raise while a batch is built or encoded (nesting deeper than
#: the JSON encoder's limit, a number it can't represent...): the row's fault, a ``schema`` dead letter.
ROW_VALUE_ERRORS = (TypeError, ValueError, RecursionError, OverflowError, UnicodeError)


_ClientDataError = asyncpg.exceptions._base.DataError  # an InterfaceError too: tested before them
_ClientInternalError = asyncpg.exceptions._base.InternalClientError  # ProtocolError, OutdatedSchemaCacheError...


def classify_db_error(region: str, exc: BaseException) -> RegionGuardError:
    """Map a driver / socket exception to a typed regionguard error.

    Retriable: the region is unreachable (:class:`RegionUnavailable`) or asks us to try again
    (:class:`TransientDBError`: the states above). Anything else is about the rows in hand:
    :class:`BadWrite` for states with a dead-letter reason of their own, else :class:`PoisonWrite`.
    """
    if isinstance(exc, RegionGuardError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        name = type(exc).__name__
        if state in _UNAVAILABLE_STATES:
            return RegionUnavailable(region, name)
        if state in _PREPARED_STATEMENT_STATES:
            return PreparedStatementLost(region, name)  # the pooler's session, not the row (docs/poolers.md)
        if state == _INSUFFICIENT_PRIVILEGE:
            return MissingPrivilege(region, _message(exc))  # the message names the object, never a value
        if state in _TRANSIENT_STATES or state.startswith(_TRANSIENT_PREFIX):
            return TransientDBError(region, name)
        if state.startswith(_CONSTRAINT_PREFIX):
            return BadWrite(DeadReason.constraint, f"{name} (SQLSTATE {state}): {_message(exc)}")
        if state.startswith(_SCHEMA_STATES_PREFIX):
            return BadWrite(DeadReason.schema, f"{name} (SQLSTATE {state}): {_message(exc)}")
        if state in _UNKNOWN_COLUMN:
            return BadWrite(DeadReason.unknown_column, f"{name} (SQLSTATE {state})")
        if state.startswith("08") or state.startswith("57P"):
            return RegionUnavailable(region, name)  # the connection classes, whatever new code they grow
        return PoisonWrite(f"{name} (SQLSTATE {state or 'none'}): {_message(exc)}", state or None)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return RegionUnavailable(region, "timeout")
    if isinstance(exc, ConnectionRefusedError):
        return RegionUnavailable(region, "refused")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return RegionUnavailable(region, "reset")
    if isinstance(exc, socket.gaierror):
        return RegionUnavailable(region, "dns")
    if isinstance(exc, _ClientDataError):
        # raised by asyncpg while encoding a bind parameter: the row's value, not the connection
        return BadWrite(DeadReason.schema, f"{type(exc).__name__}: {_message(exc)}")
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        return RegionUnavailable(region, "connection_lost")
    if isinstance(exc, _ClientInternalError):
        # the driver's own state, not a row: a protocol error on a broken connection, a statement
        # cache outdated by a schema change, a server that is not the kind asked for; retried
        return TransientDBError(region, type(exc).__name__)
    if isinstance(exc, OSError):
        return RegionUnavailable(region, "os_error", type(exc).__name__)
    if isinstance(exc, ROW_VALUE_ERRORS):
        return BadWrite(DeadReason.schema, f"cannot be sent to PostgreSQL: {type(exc).__name__}: {_message(exc)}")
    # an error nobody foresaw: never retried forever, isolated like a row error (issue 25)
    return PoisonWrite(f"unexpected {type(exc).__name__}: {_message(exc)}")


def _message(exc: BaseException) -> str:
    return (str(exc.args[0]) if exc.args else "")[:300]
