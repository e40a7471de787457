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


class BadWrite(RegionGuardError):
    """A write that can never apply as it is: it goes to the dead-letter topic."""

    retriable = False

    def __init__(self, reason: DeadReason, detail: str):
        super().__init__(f"{reason.value}: {detail}")
        self.reason, self.detail = reason, detail


class PoisonWrite(RegionGuardError):
    """The server rejected a row for a reason we can't name (a trigger's RAISE, say).

    Isolated row by row like a bad write; a single row failing this way is
    dead-lettered as ``poison`` so it can never block its partition.
    """

    retriable = False


class RegionNotReady(RegionGuardError):
    """Reachable, but not a writable primary with our tables (replay readiness)."""

    retriable = True


# SQLSTATE classes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_TRANSIENT_STATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57014",  # query_canceled (statement timeout)
    "42501",  # insufficient_privilege: an operator must fix grants; hold, don't drop
    "42P01",  # undefined_table: an allow-listed table is missing in this region
    "53000", "53100", "53200", "53300", "53400",  # insufficient resources, too many connections
}
_UNAVAILABLE_STATES = {
    "57P01", "57P02", "57P03",  # admin/crash shutdown, cannot connect now
    "08000", "08003", "08006", "08001", "08004",  # connection exceptions
    "28000", "28P01",  # auth failures: listener replaced / credentials rotated
    "3D000",  # database does not exist
    "25006",  # read_only_sql_transaction: a demoted primary is not our region's writer
}
_SCHEMA_STATES_PREFIX = ("22",)  # data exceptions: bad text representation, out of range...
_CONSTRAINT_PREFIX = ("23",)  # integrity constraint violations
_UNKNOWN_COLUMN = {"42703"}


def classify_db_error(region: str, exc: BaseException) -> RegionGuardError:
    """Map a driver / socket exception to a typed regionguard error."""
    if isinstance(exc, RegionGuardError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        name = type(exc).__name__
        if state in _UNAVAILABLE_STATES:
            return RegionUnavailable(region, name)
        if state in _TRANSIENT_STATES:
            return TransientDBError(region, name)
        if state.startswith(_CONSTRAINT_PREFIX):
            return BadWrite(DeadReason.constraint, f"{name}: {exc.args[0] if exc.args else ''}")
        if state.startswith(_SCHEMA_STATES_PREFIX):
            return BadWrite(DeadReason.schema, f"{name}: {exc.args[0] if exc.args else ''}")
        if state in _UNKNOWN_COLUMN:
            return BadWrite(DeadReason.unknown_column, name)
        if state.startswith(("P0", "XX", "0A", "42")):
            return PoisonWrite(f"{name} ({state})")
        return TransientDBError(region, name)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return RegionUnavailable(region, "timeout")
    if isinstance(exc, ConnectionRefusedError):
        return RegionUnavailable(region, "refused")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return RegionUnavailable(region, "reset")
    if isinstance(exc, socket.gaierror):
        return RegionUnavailable(region, "dns")
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        return RegionUnavailable(region, "connection_lost")
    if isinstance(exc, OSError):
        return RegionUnavailable(region, "os_error", type(exc).__name__)
    return TransientDBError(region, type(exc).__name__)
