"""How many fresh connections one region's prober may have in flight, and how often it may start one.

Probing a region whose new connections fail or hang used to start a fresh
connection for nearly every probe (20 a second per region per observer at the
default ``health.interval_s``). On a CPU-starved machine each one is a forked
PostgreSQL backend that outlives the probe's deadline; three observers drove a
server to 900+ backends until it refused everyone. :class:`FreshGate` bounds
that, per region:

- a **cap** (:data:`FRESH_IN_FLIGHT`) on fresh connections in flight: a connect
  (and its writability check) that has not finished or been torn down, be it a
  probe's, the background recheck's or a spare's;
- **backoff** while the connection path is failing (fresh attempts failed,
  whatever the kind, timeouts included): from the second failure in a row the
  next attempt may start only after an exponentially growing, jittered delay
  (``timeout_s``, doubling, at most :data:`BACKOFF_MAX_S`); the first success
  ends it. The first failure gets no delay: one lost reply (10% probe loss)
  must not turn the following probes into failures; a kept connection that
  breaks (a pooler closing an idle one) starts no backoff at all.

A probe the gate turns away while the path is failing reports the last failure
kind (what the prober knows: the path is still failing), so breakers open as
fast as before. Bookkeeping only, no I/O and no clock of its own (``now`` is
passed in), so it is unit-tested with an injected clock; written by hand
because it is a few counters tied to our probe semantics, not a general
rate limiter.
"""

from __future__ import annotations

import random
from typing import Literal

#: fresh connections in flight per region and observer (probe, recheck and spare together)
FRESH_IN_FLIGHT = 2
#: longest wait between fresh attempts while failing; bounds how late a healed region is noticed
BACKOFF_MAX_S = 1.0

Admission = Literal["go", "wait", "failing"]


class FreshGate:
    """Per-region cap and backoff for fresh connections (see the module docstring)."""

    def __init__(self, base_s: float, *, cap: int = FRESH_IN_FLIGHT, max_s: float = BACKOFF_MAX_S,
                 rng: random.Random | None = None) -> None:
        self.base_s = min(base_s, max_s)
        self.cap = cap
        self.max_s = max_s
        self.rng = rng or random.Random()
        self.in_flight = 0
        self.failures = 0  # consecutive failed fresh attempts (or connection-level failures) since a success
        self.last_kind: str | None = None
        self.not_before = 0.0  # while failing: no new attempt before this (monotonic seconds)

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def admit(self, now: float, *, backoff: bool = True) -> Admission:
        """May a fresh connection start now? ``go`` takes a slot (give it back with :meth:`release`).

        ``failing``: turned away while the path is known to fail (backoff not over, or no slot): the
        caller reports :attr:`last_kind`. ``wait``: every slot is taken but nothing failed yet.
        ``backoff=False`` (the recheck and spares, one at a time each) obeys the cap only.
        """
        if backoff and self.failing and now < self.not_before:
            return "failing"
        if self.in_flight >= self.cap:
            return "failing" if self.failing else "wait"
        self.in_flight += 1
        return "go"

    def release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

    def failed(self, kind: str, now: float) -> float:
        """A fresh attempt failed (or the prober escalated): back off; returns the delay chosen."""
        self.failures += 1
        self.last_kind = kind
        delay = self.delay(self.failures)
        self.not_before = max(self.not_before, now + delay)
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.last_kind = None
        self.not_before = 0.0

    def delay(self, failures: int) -> float:
        """0 after one failure, then ``base_s * 2**(failures-2)``, at most ``max_s``, jittered down to half
        of it (equal jitter: attempts of several observers spread out, yet never come sooner than half)."""
        if failures < 2:
            return 0.0
        full = min(self.max_s, self.base_s * 2 ** min(failures - 2, 30))
        return full * (0.5 + 0.5 * self.rng.random())

    def __repr__(self) -> str:
        return (f"<FreshGate in_flight={self.in_flight}/{self.cap} failures={self.failures} "
                f"last={self.last_kind} not_before={self.not_before:.3f}>")
