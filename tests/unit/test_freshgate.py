"""The fresh-connection gate: cap and backoff as pure bookkeeping (injected clock and RNG), and the prober
obeying it with a fake connector (no sockets, no sleeps: connects fail at once or wait on an event)."""

from __future__ import annotations

import asyncio
import errno
import random

from regionguard.core.config import HealthConfig
from regionguard.health.freshgate import BACKOFF_AFTER, BACKOFF_MAX_S, FRESH_IN_FLIGHT, FreshGate
from regionguard.health.probe import RegionProber


class Fixed(random.Random):
    """An RNG whose random() is always ``x``: the jitter's two ends."""

    def __init__(self, x: float) -> None:
        super().__init__(0)
        self.x = x

    def random(self) -> float:
        return self.x


def test_cap_counts_slots_and_a_full_gate_makes_probes_wait():
    g = FreshGate(0.3, cap=2)
    assert [g.admit(0.0), g.admit(0.0)] == ["go", "go"] and g.in_flight == 2
    assert g.admit(0.0) == "wait"  # every slot taken: the probe waits for one (within its deadline)
    g.failed("timeout", 0.3)
    assert g.admit(0.3) == "wait"  # one failure starts no backoff
    g.release()
    assert g.admit(0.3) == "go" and g.last_kind == "timeout"
    g.release()
    g.release()
    g.release()  # never below zero
    assert g.in_flight == 0


def test_backoff_starts_at_the_eighth_failure_in_a_row_doubles_up_to_the_bound_with_jitter():
    assert BACKOFF_AFTER == 8  # the breaker's default consecutive_failures
    for x, share in ((0.0, 0.5), (0.999999, 1.0)):
        g = FreshGate(0.3, rng=Fixed(x))
        delays = [round(g.failed("refused", 10.0), 3) for _ in range(12)]
        assert delays == [0.0] * 7 + [round(d * share, 3) for d in (0.3, 0.6, BACKOFF_MAX_S, BACKOFF_MAX_S,
                                                                     BACKOFF_MAX_S)], (x, delays)
    g = FreshGate(0.3)
    for _ in range(BACKOFF_AFTER - 1):
        g.failed("refused", 0.0)
    g.succeeded()  # a success in between: the count starts over
    assert g.failed("refused", 0.0) == 0.0 and g.admit(0.0) == "go"


def test_attempts_are_spaced_until_one_succeeds():
    g = FreshGate(0.3, rng=Fixed(0.0))
    now = 0.0
    starts = []
    while now < 10.0:  # a probe every 50 ms; every attempt fails at once (refused)
        verdict = g.admit(now)
        assert verdict in ("go", "backoff")
        if verdict == "go":
            starts.append(now)
            g.failed("refused", now)
            g.release()
        now = round(now + 0.05, 2)
    gaps = [round(b - a, 2) for a, b in zip(starts, starts[1:])]
    # 200 probes, 28 attempts: eight in a row, then 0.15, 0.3, and every 0.5 s (half the 1 s bound: jitter)
    assert gaps[:9] == [0.05] * 7 + [0.15, 0.3] and set(gaps[9:]) == {0.5}, gaps
    assert len(starts) == 28
    g.succeeded()
    assert g.admit(now) == "go"


def test_recheck_and_spares_obey_the_cap_but_not_the_backoff():
    g = FreshGate(0.3, cap=2)
    for _ in range(BACKOFF_AFTER):
        g.failed("timeout", 0.0)
    assert g.admit(0.01) == "backoff"
    assert g.admit(0.01, backoff=False) == "go"
    assert g.admit(0.01, backoff=False) == "go"
    assert g.admit(0.01, backoff=False) == "wait"  # the cap holds for them too


# ---- the prober obeying the gate -----------------------------------------------------------------

class Conn:
    def __init__(self):
        self.closed = False

    async def execute(self, q):
        return None

    def terminate(self):
        self.closed = True

    def is_closed(self):
        return self.closed

    async def close(self):
        self.closed = True


class Server:
    """Counts connects; each fails at once with ``error``, or waits for ``gate`` (an event) first."""

    def __init__(self):
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.attempts = 0
        self.in_flight = 0
        self.most_in_flight = 0

    async def connect(self, dsn, **kw):
        self.attempts += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.error is not None:
                raise self.error
            return Conn()
        finally:
            self.in_flight -= 1


def prober(server, now):
    return RegionProber("eu", "postgresql://x@h/db", HealthConfig(timeout_s=5.0), "h1",
                        connect=server.connect, clock=lambda: now[0])


async def test_failing_connects_are_attempted_a_bounded_number_of_times_not_once_per_probe():
    for error, kind in ((ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused"),
                        (TimeoutError(), "timeout")):  # refused, and a connect that timed out
        server, now = Server(), [0.0]
        server.error = error
        p = prober(server, now)
        obs = [await p.probe() for _ in range(100)]  # the clock stands still: all within one backoff
        assert [o.kind for o in obs] == [kind] * 100 and not any(o.ok for o in obs)
        assert server.attempts == BACKOFF_AFTER and p.held == 100 - BACKOFF_AFTER, (kind, server.attempts)
        now[0] += BACKOFF_MAX_S
        assert (await p.probe()).kind == kind and server.attempts == BACKOFF_AFTER + 1  # once the backoff is over
        server.error = None
        now[0] += BACKOFF_MAX_S
        assert (await p.probe()).ok and server.attempts == BACKOFF_AFTER + 2 and p.gate.failures == 0
        await p.close()


async def test_probes_beyond_the_cap_wait_for_a_slot():
    server, now = Server(), [0.0]
    server.gate = asyncio.Event()
    p = prober(server, now)
    probes = [asyncio.ensure_future(p.probe()) for _ in range(2 * FRESH_IN_FLIGHT)]  # no kept connection yet: all want fresh
    for _ in range(5):
        await asyncio.sleep(0)
    assert server.in_flight == FRESH_IN_FLIGHT and p.gate.in_flight == FRESH_IN_FLIGHT
    server.gate.set()  # the region answers
    obs = await asyncio.gather(*probes)
    assert all(o.ok for o in obs) and server.most_in_flight == FRESH_IN_FLIGHT
    await p.close()
