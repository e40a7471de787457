"""Prober logic without a database: a fake asyncpg connector, no sockets, no sleeps."""

from __future__ import annotations

import asyncio
import errno
import socket

import asyncpg
import pytest

from regionguard.core.config import HealthConfig
from regionguard.health.freshgate import BACKOFF_AFTER, BACKOFF_MAX_S
from regionguard.health.probe import WRITABLE_CHECK, LoopLagMonitor, ProbeTally, RegionProber, observation_kind


def pg_error(sqlstate: str) -> asyncpg.PostgresError:
    return asyncpg.PostgresError.new({"C": sqlstate, "M": "server says no", "S": "ERROR"})


@pytest.mark.parametrize("exc,kind", [
    (TimeoutError(), "timeout"),
    (asyncio.TimeoutError(), "timeout"),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused"),
    (OSError(errno.ECONNREFUSED, "Connect call failed"), "refused"),
    (ConnectionResetError(), "reset"),
    (BrokenPipeError(), "reset"),
    (asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle"), "reset"),
    (pg_error("28P01"), "auth"),
    (pg_error("28000"), "auth"),
    (pg_error("25006"), "read_only"),
    (pg_error("RGREC"), "recovery"),
    (pg_error("57P03"), "recovery"),
    (pg_error("57P01"), "reset"),
    (pg_error("42P01"), "error"),
    (socket.gaierror(-2, "Name or service not known"), "error"),
    (ValueError("anything else"), "error"),
])
def test_observation_kind_by_type_and_sqlstate(exc, kind):
    assert observation_kind(exc) == kind


def test_kind_ignores_message_text():
    assert observation_kind(ValueError("connection refused timeout reset")) == "error"


class FakeConn:
    def __init__(self, script):
        self.script = script
        self.queries = []
        self.closed = False

    async def execute(self, q):
        self.queries.append(q)
        err = self.script.on_query(q)
        if err:
            raise err

    def terminate(self):
        self.closed = True

    def is_closed(self):
        return self.closed

    async def close(self):
        self.closed = True


class Script:
    """What the fake server does: connect errors and query errors, changeable between probes."""

    def __init__(self):
        self.connect_error: BaseException | None = None
        self.query_error: BaseException | None = None
        self.connect_delay = 0.0  # a slow path: new connections take this long (kept ones stay fast)
        self.conns: list[FakeConn] = []

    async def connect(self, dsn, **kw):
        if self.connect_delay:
            await asyncio.sleep(self.connect_delay)
        if self.connect_error:
            raise self.connect_error
        c = FakeConn(self)
        self.conns.append(c)
        return c

    def on_query(self, q):
        return self.query_error


clock = [1000.0]  # the gate's clock: moved by hand, never by sleeping


def prober(script, **kw):
    cfg = HealthConfig(**{"fresh_connection_every": 4, "timeout_s": 0.3, **kw})
    return RegionProber("eu", "postgresql://x@h/db", cfg, "h1", connect=script.connect, clock=lambda: clock[0])


async def test_kept_connection_and_every_nth_fresh_with_writability_check():
    s = Script()
    p = prober(s)
    obs = [await p.probe() for _ in range(8)]
    assert all(o.ok and o.kind == "ok" and o.observer == "h1" and o.region == "eu" for o in obs)
    queries = [q for c in s.conns for q in c.queries]
    assert queries.count(WRITABLE_CHECK) == 3  # probe 1 (no kept connection yet), 4 and 8
    assert queries.count("SELECT 1") == 5
    await p.close()


async def test_connection_failure_escalates_to_fresh_connections_until_one_works():
    s = Script()
    p = prober(s)
    await p.probe()
    await p.probe()
    s.connect_error = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    await p.probe()  # kept connection: still fine (a listener can die while old connections live)
    o = await p.probe()  # 4th: fresh -> refused
    assert (o.ok, o.kind) == (False, "refused") and p.escalated
    for _ in range(BACKOFF_AFTER + 2):  # every probe now needs a fresh connection (kept ones were dropped)
        assert (await p.probe()).kind == "refused"
    assert p.held == 3  # the eighth refused fresh attempt in a row started the backoff: held back since
    s.connect_error = None
    assert (await p.probe()).kind == "refused" and p.escalated  # backing off: held back, still "refused"
    clock[0] += BACKOFF_MAX_S  # the backoff is over: the next probe tries a fresh connection, which works
    assert (await p.probe()).ok and not p.escalated
    await p.close()


async def test_read_only_and_recovery_are_failures():
    s = Script()
    p = prober(s)
    s.query_error = pg_error("25006")
    o = await p.probe()
    assert (o.ok, o.kind) == (False, "read_only")
    s.query_error = pg_error("RGREC")
    assert (await p.probe()).kind == "recovery"
    assert all(c.closed for c in s.conns)
    await p.close()


async def test_timeout_during_own_stall_is_not_an_observation():
    s = Script()
    lag = LoopLagMonitor()
    p = RegionProber("eu", "postgresql://x@h/db", HealthConfig(timeout_s=0.3), "h1", connect=s.connect, lag=lag)
    s.connect_error = TimeoutError()
    o = await p.probe()
    assert (o.ok, o.kind) == (False, "timeout")  # no stall: a real timeout

    async def stalled_connect(dsn, **kw):
        lag.record(0.5)  # our own loop was 0.5 s late during this probe
        raise TimeoutError()

    p._connect = stalled_connect
    assert await p.probe() is None and p.stalled == 1  # says nothing about the region
    p._connect = s.connect
    s.connect_error = ConnectionRefusedError()
    assert (await p.probe()).kind == "refused"  # only timeouts are excused
    await p.close()


def test_failed_probes_are_summarised_at_most_every_few_seconds():
    now = [0.0]
    tally = ProbeTally("ap", every_s=5.0, clock=lambda: now[0])
    for i in range(100):  # 20 probes a second for 5 s, every fourth one refused
        now[0] = i * 0.05
        if i % 4:
            tally.ok()
        else:
            tally.failed("error", pg_error("53300"), fresh=True)
    now[0] = 5.0
    line = tally._maybe_report()
    assert line == ("region ap: probes in the last 5s: error 25, ok 75; "
                    "last: error on a fresh connection: TooManyConnectionsError (SQLSTATE 53300)")
    now[0] = 10.0
    tally.ok()  # a quiet window: nothing to say
    assert tally._maybe_report() is None


async def _escalate(p, s):
    s.connect_error = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    assert (await p.probe()).kind == "refused" and p.escalated
    s.connect_error = None


async def test_escalated_prober_recovers_when_new_connections_are_only_slow():
    """The chaos runs' stuck region: after a refused/crash episode the region is back, but a new connection
    needs longer than timeout_s (loaded machine, starved proxy) while a kept one answers at once. Before,
    every escalated probe was a fresh connection timing out, for as long as the path stayed slow."""
    s = Script()
    p = prober(s, timeout_s=0.02, fresh_connection_every=10)
    await _escalate(p, s)
    s.connect_delay = 0.05  # > timeout_s, < the recheck's RECHECK_TIMEOUTS x timeout_s
    o = await p.probe()
    assert (o.ok, o.kind) == (False, "timeout") and p.escalated
    await p._refill  # the background recheck it started
    assert not p.escalated and p.rechecks == 1
    assert s.conns[-1].queries == [WRITABLE_CHECK]  # the recheck checked writability
    kinds = [(await p.probe()).kind for _ in range(3)]
    assert kinds == ["ok", "ok", "ok"]  # on the kept connection, like a prober that never failed
    await p.close()


async def test_recheck_never_ends_escalation_for_a_dead_or_refusing_region():
    s = Script()
    p = prober(s, timeout_s=0.02)
    await _escalate(p, s)
    s.connect_delay = 0.3  # blackholed: nothing answers within the recheck's deadline either
    assert (await p.probe()).kind == "timeout"
    await p._refill
    assert p.escalated and p.rechecks == 0
    s.connect_delay = 0.0
    s.query_error = pg_error("25006")  # connects fine, but read-only: the recheck's writability check fails
    s.connect_delay = 0.05
    assert (await p.probe()).kind == "timeout"
    await p._refill
    assert p.escalated and p.rechecks == 0
    s.connect_delay, s.query_error = 0.0, None
    s.connect_error = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    clock[0] += BACKOFF_MAX_S  # past the backoff the failed rechecks started: the next probe connects
    for _ in range(3):  # a clear answer starts no recheck (nor does repeating it while backing off)
        assert (await p.probe()).kind == "refused"
        assert p._refill is None or p._refill.done()
    await p.close()


async def test_a_connection_failure_during_a_recheck_keeps_the_escalation():
    s = Script()
    p = prober(s, timeout_s=0.02)
    await _escalate(p, s)
    s.connect_delay = 0.05
    assert (await p.probe()).kind == "timeout"
    recheck = p._refill
    await asyncio.sleep(0.01)  # the recheck is connecting
    p._conn_failures += 1  # as if a probe saw "refused" meanwhile
    await recheck
    assert p.escalated and p.rechecks == 0 and not p._idle
    await p.close()
