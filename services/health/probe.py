"""Active probing of one region's PostgreSQL with asyncpg.

Each :meth:`RegionProber.probe` returns one :class:`~regionguard.core.models.Observation`:

- normally ``SELECT 1`` (simple query protocol: one round trip) on a *kept*
  connection;
- every ``health.fresh_connection_every``-th probe on a *fresh* connection,
  with a writability check instead of ``SELECT 1``: ``pg_is_in_recovery()``
  and ``transaction_read_only`` (the ``SHOW`` value), evaluated server-side in
  one ``DO`` block that raises a distinct SQLSTATE when the server is not a
  writable primary, so it costs one round trip and is classified by SQLSTATE;
- after a *connection-level* failure (refused, reset, auth, DNS, read-only...)
  every probe uses a fresh connection until one succeeds ("escalated"):
  a region whose listener died while old connections still work is caught
  in a few probes instead of one per ``fresh_connection_every``;
- while escalated, a probe that merely *timed out* also starts (one at a
  time) a background recheck: a fresh connection plus the writability check
  with a longer deadline (:data:`RECHECK_TIMEOUTS` x ``timeout_s``). If it works, and
  no connection-level failure was seen meanwhile, escalation ends and the
  connection is kept. Without it a recovered region whose new connections
  are merely slow (several round trips: connect, startup, check) stayed
  failing for as long as it was slow -- every escalated probe is a fresh
  connection that must finish within ``timeout_s`` -- while a region that
  never failed, on the same path, probed fine on kept connections. That is
  what kept region ``ap`` failing after its last crash in two long chaos runs
  (docs/health.md, "Recovery after a heal").
- one deadline, ``health.timeout_s``, covers connect and query together
  (``asyncio.timeout`` around everything, plus asyncpg's own connect
  timeout). On timeout the connection is ``terminate()``-d (its socket
  aborted; a connect cancelled half-way is closed by asyncpg), so a blackholed
  region (TCP accepted, nothing ever answered) can never hang a probe.
- every fresh connection (probe, recheck, spare) passes a
  :class:`~regionguard.health.freshgate.FreshGate`: at most a few in flight
  per region (a probe finding all taken waits for one within its deadline),
  and, once fresh attempts keep failing, spaced by a jittered exponential
  backoff. A probe the backoff turns away reports the last failure kind
  without connecting. Without it a
  starved server got a fresh connection (a forked backend) per probe from
  every observer, hundreds at a time (docs/health.md, "Probes under load").

Kinds (classified by exception type / SQLSTATE, never by message text):
``ok, timeout, refused, reset, auth, read_only, recovery, error``
(:func:`observation_kind`; the router uses it for its passive observations).

Kept connections form a small pool (:data:`KEEP_IDLE`), refilled in the
background, so a single lost reply (one terminated connection) does not make
the next probe pay for a new connection.

A probe that timed out while this process's event loop was itself stalled
(CPU starvation, GC) says nothing about the region: it returns ``None``
instead of an observation (see :class:`LoopLagMonitor`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

import asyncpg

from ..core.config import HealthConfig
from ..core.dsn import dsn_host
from ..core.models import Observation
from ..core.supervise import swallowed
from .freshgate import FreshGate
from .kinds import CONNECTION_KINDS, KINDS, SQLSTATE_READ_ONLY, SQLSTATE_RECOVERY, WRITABLE_CHECK, observation_kind
from .looplag import LoopLagMonitor
from .tally import ProbeTally

__all__ = ["CONNECTION_KINDS", "KINDS", "SQLSTATE_READ_ONLY", "SQLSTATE_RECOVERY", "WRITABLE_CHECK", "LoopLagMonitor",
           "ProbeTally", "RegionProber", "observation_kind", "probe_loop"]

log = logging.getLogger(__name__)

KEEP_IDLE = 2  # kept connections per region
#: deadline of an escalated prober's background recheck, in probe timeouts: "do new connections work at
#: all?" (a dead or blackholed region never answers; a slow one does, e.g. 4 round trips at 0.17 s: 0.7 s)
RECHECK_TIMEOUTS = 10

Connector = Callable[..., Awaitable[asyncpg.Connection]]


class RegionProber:
    """Probes one region; :meth:`probe` never raises and never outlives ``timeout_s``."""

    def __init__(self, region: str, dsn: str, health: HealthConfig, observer: str, *,
                 lag: LoopLagMonitor | None = None, connect: Connector = asyncpg.connect,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.region = region
        self.dsn = dsn
        self.cfg = health
        self.observer = observer
        self.lag = lag
        self._connect = connect
        self._clock = clock  # the gate's backoff runs on it (tests inject one)
        self._idle: list[asyncpg.Connection] = []
        self._n = 0
        self.escalated = False
        self._refill: asyncio.Task | None = None
        self._closed = False
        self.stalled = 0  # probes discarded because our own loop stalled
        self.rechecks = 0  # background rechecks that ended an escalation
        self._conn_failures = 0  # connection-level failures seen (a recheck started before one can't de-escalate)
        self.gate = FreshGate(health.timeout_s)
        self.held = 0  # probes the backoff turned away (reported the last failure kind without connecting)
        self._turn: asyncio.Event | None = None  # set when a slot is given back or a connection kept
        self._tally = ProbeTally(region)

    # ---- connections -------------------------------------------------------------------
    async def _open(self, timeout: float) -> asyncpg.Connection:
        return await self._connect(
            self.dsn, timeout=timeout, command_timeout=None, statement_cache_size=0,
            server_settings={"application_name": f"regionguard-health:{self.observer}"[:63]},
        )

    def _keep(self, conn: asyncpg.Connection) -> None:
        if self._closed or conn.is_closed():
            return
        self._idle.append(conn)
        self._wake()  # a probe waiting for a fresh-connection slot may use this one instead
        while len(self._idle) > KEEP_IDLE:
            old = self._idle.pop(0)
            asyncio.get_running_loop().create_task(self._close_quietly(old))

    @staticmethod
    async def _close_quietly(conn: asyncpg.Connection) -> None:
        try:
            await asyncio.wait_for(conn.close(), 1.0)
        except BaseException as exc:  # noqa: BLE001 - anything: just drop it (counted, DEBUG line)
            conn.terminate()
            if not isinstance(exc, asyncio.CancelledError):
                swallowed("health.probe", exc, what="closing a kept connection", logger=log, level=logging.DEBUG)

    def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for c in idle:
            c.terminate()

    def _release(self) -> None:
        """Give a fresh-connection slot back (after the outcome went to the gate) and wake a waiting probe."""
        self.gate.release()
        self._wake()

    def _wake(self) -> None:
        if self._turn is not None:
            self._turn.set()
            self._turn = None

    async def _next_turn(self) -> None:
        """Until a slot is given back or a connection kept."""
        if self._turn is None:
            self._turn = asyncio.Event()
        await self._turn.wait()

    def _maybe_refill(self) -> None:
        """One background connection task at a time: a spare (normal) or a recheck (escalated).

        Either takes a gate slot (the cap) but ignores its backoff: one at a time already, and the
        recheck is what notices a region that is back but slow to connect (its deadline is longer)."""
        if self._closed or (self._refill is not None and not self._refill.done()):
            return
        if not self.escalated and len(self._idle) >= KEEP_IDLE:
            return
        if self.gate.admit(self._clock(), backoff=False) != "go":
            return
        self._refill = asyncio.get_running_loop().create_task(self._background(), name=f"refill:{self.region}")

    async def _background(self) -> None:
        try:
            if self.escalated:
                await self._recheck()
            elif len(self._idle) < KEEP_IDLE:
                await self._refill_one()
        finally:
            self._release()

    async def _recheck(self) -> None:
        """Escalated: do new connections work at all (a longer deadline than a probe's)? Then de-escalate."""
        seen = self._conn_failures
        conn = None
        deadline = self.cfg.timeout_s * RECHECK_TIMEOUTS
        try:
            async with asyncio.timeout(deadline):
                conn = await self._open(deadline)
                await conn.execute(WRITABLE_CHECK)
        except BaseException as exc:  # noqa: BLE001 - the probes report the region (counted, DEBUG line)
            if conn is not None:
                conn.terminate()
            if isinstance(exc, asyncio.CancelledError):
                raise
            self.gate.failed(observation_kind(exc), self._clock())
            swallowed("health.probe", exc, what=f"rechecking fresh connections to {self.region}", logger=log,
                      level=logging.DEBUG)
            return
        if not self.escalated or self._conn_failures != seen or self._closed:
            conn.terminate()  # a connection-level failure since we started: it proves nothing
            return
        self.gate.succeeded()
        self.escalated = False
        self.rechecks += 1
        log.info("region %s: a fresh connection works again (within %.1fs, slower than a probe's %.3fs); "
                 "back to kept connections", self.region, deadline, self.cfg.timeout_s)
        self._keep(conn)

    async def _refill_one(self) -> None:
        conn = None
        try:
            async with asyncio.timeout(self.cfg.timeout_s * 2):
                conn = await self._open(self.cfg.timeout_s * 2)
            self.gate.succeeded()
            self._keep(conn)
        except BaseException as exc:  # noqa: BLE001 - a probe will report it (counted, DEBUG line)
            if conn is not None:
                conn.terminate()
            if isinstance(exc, asyncio.CancelledError):
                raise
            swallowed("health.probe", exc, what=f"opening a spare connection to {self.region}", logger=log,
                      level=logging.DEBUG)

    # ---- probing -----------------------------------------------------------------------
    async def probe(self) -> Observation | None:
        """One probe. Returns None only when our own event loop stalled past the deadline."""
        self._n += 1
        nth = self._n % self.cfg.fresh_connection_every == 0
        conn: asyncpg.Connection | None = None
        started = time.monotonic()
        kind = "ok"
        fresh = slot = False
        admitted = "go"
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                while fresh := (self.escalated or not self._idle or nth):
                    admitted = self.gate.admit(self._clock())
                    if admitted != "wait":
                        break
                    await self._next_turn()  # every slot taken: wait for one within the deadline
                if fresh and admitted == "backoff":
                    return self._held_back(started)
                if fresh:
                    slot = True
                    conn = await self._open(self.cfg.timeout_s)
                    await conn.execute(WRITABLE_CHECK)
                else:
                    conn = self._idle.pop()
                    await conn.execute("SELECT 1")
        except asyncio.CancelledError:
            if conn is not None:
                conn.terminate()
            if slot:
                self._release()
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an observation
            kind = observation_kind(exc)
            if conn is not None:
                conn.terminate()
                conn = None
            self._tally.failed(kind, exc, fresh)
        latency = time.monotonic() - started
        stalled = (kind == "timeout" and self.lag is not None
                   and self.lag.max_lag_since(started) >= self.cfg.timeout_s / 2)
        if slot:  # the outcome first, so a probe woken by the release sees it
            if kind == "ok":
                self.gate.succeeded()
            elif not stalled:  # our own stall says nothing about the path
                self.gate.failed(kind, self._clock())
            self._release()
        if kind == "ok":
            self._tally.ok()
            if fresh and self.escalated:
                log.info("region %s: fresh connection works again", self.region)
            if fresh:
                self.escalated = False
            assert conn is not None
            self._keep(conn)
            self._maybe_refill()
        else:
            if kind in CONNECTION_KINDS:
                self._conn_failures += 1
                if not self.escalated:
                    log.info("region %s: %s on %s connection; probing with fresh connections",
                             self.region, kind, "a fresh" if fresh else "the kept")
                self.escalated = True
                self._drop_idle()  # a region whose connections break gets no benefit of the doubt
            elif self.escalated:  # a timeout: maybe only slow; a recheck with a longer deadline tells
                self._maybe_refill()
            if stalled:
                self.stalled += 1
                log.warning("probe %s: timed out while this process stalled %.3fs; not counted",
                            self.region, self.lag.max_lag_since(started) if self.lag else 0.0)
                return None
        return Observation(region=self.region, observer=self.observer, ok=kind == "ok",
                           latency_s=round(latency, 6), kind=kind)

    def _held_back(self, started: float) -> Observation:
        """The gate's backoff turned a fresh probe away: the path still fails as far as we know; say so."""
        kind = self.gate.last_kind or "error"
        self.held += 1
        self._tally.held_back(kind)
        if self.escalated and kind == "timeout":
            self._maybe_refill()  # the recheck (cap only) still tells a slow region from a dead one
        return Observation(region=self.region, observer=self.observer, ok=False,
                           latency_s=round(time.monotonic() - started, 6), kind=kind)

    async def close(self) -> None:
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
            try:
                await self._refill
            except asyncio.CancelledError:  # cancelled just above
                pass
            except Exception as exc:  # noqa: BLE001 - closing goes on (reported)
                swallowed("health.probe", exc, what="the spare connection task", logger=log)
        idle, self._idle = self._idle, []
        await asyncio.gather(*(self._close_quietly(c) for c in idle), return_exceptions=True)

    def __repr__(self) -> str:
        return f"<RegionProber {self.region} {dsn_host(self.dsn)}>"


async def probe_loop(prober: RegionProber, interval_s: float, timeout_s: float,
                     emit: Callable[[Observation], None], stop: asyncio.Event) -> None:
    """Start a probe every ``interval_s`` (overlapping when the region is slow), emit each result.

    At most ``ceil(timeout/interval) + 1`` probes are in flight; a tick that
    finds that many running is skipped, so a dead region costs bounded work.
    """
    limit = int(timeout_s / interval_s) + 2
    inflight: set[asyncio.Task] = set()

    async def one() -> None:
        try:
            obs = await prober.probe()
            if obs is not None:
                emit(obs)
        except Exception as exc:  # a probe task must not end with an unread exception: reported
            swallowed("health.probe", exc, what=f"probe of {prober.region}", logger=log)

    next_t = time.monotonic()
    try:
        while not stop.is_set():
            if len(inflight) < limit:
                t = asyncio.get_running_loop().create_task(one())
                inflight.add(t)
                t.add_done_callback(inflight.discard)
            next_t += interval_s
            now = time.monotonic()
            if next_t < now:  # we fell behind (stall): don't burst to catch up
                next_t = now + interval_s
            try:
                await asyncio.wait_for(stop.wait(), next_t - now)
            except asyncio.TimeoutError:
                pass
    finally:
        for t in list(inflight):
            t.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)
        await prober.close()
