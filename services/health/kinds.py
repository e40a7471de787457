"""What a probe saw, in one word: the observation kinds, and the writability check that tells two of them.

Kinds are decided by exception type and SQLSTATE, never by message text. The
router uses :func:`observation_kind` for its passive observations too, so the
rule lives apart from the prober that does the I/O.
"""

from __future__ import annotations

import asyncio
import errno

import asyncpg

from ..core.errors import RegionUnavailable, classify_db_error

# One round trip, simple protocol; raises a distinct SQLSTATE when not writable.
SQLSTATE_RECOVERY = "RGREC"
SQLSTATE_READ_ONLY = "25006"  # read_only_sql_transaction
WRITABLE_CHECK = f"""DO $rg$ BEGIN
  IF pg_is_in_recovery() THEN
    RAISE EXCEPTION USING ERRCODE = '{SQLSTATE_RECOVERY}', MESSAGE = 'regionguard: server is in recovery';
  END IF;
  IF current_setting('transaction_read_only') = 'on' THEN
    RAISE EXCEPTION USING ERRCODE = '{SQLSTATE_READ_ONLY}', MESSAGE = 'regionguard: transaction_read_only is on';
  END IF;
END $rg$"""

KINDS = ("ok", "timeout", "refused", "reset", "auth", "read_only", "recovery", "error")
#: kinds that say "the connection path itself is broken" (escalate to fresh connections)
CONNECTION_KINDS = frozenset({"refused", "reset", "auth", "read_only", "recovery", "error"})


def observation_kind(exc: BaseException) -> str:
    """Map a driver/socket exception to an Observation kind, by type and SQLSTATE only."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        if state == SQLSTATE_RECOVERY:
            return "recovery"
        if state == SQLSTATE_READ_ONLY:
            return "read_only"
        if state.startswith("28"):  # invalid authorization specification / password
            return "auth"
        if state in ("57P03",):  # cannot_connect_now: starting up / shutting down / recovery
            return "recovery"
        if state in ("57P01", "57P02"):  # admin/crash shutdown terminated our session
            return "reset"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                        asyncpg.exceptions.ConnectionDoesNotExistError)):
        return "reset"
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno == errno.ECONNREFUSED:
            return "refused"
        if exc.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
            return "reset"
        if exc.errno in (errno.ETIMEDOUT,):
            return "timeout"
    typed = classify_db_error("", exc)
    if isinstance(typed, RegionUnavailable):
        return {"timeout": "timeout", "refused": "refused", "reset": "reset",
                "connection_lost": "reset"}.get(typed.kind, "error")
    return "error"
