"""How many fresh connections one region's prober may have in flight, and how often it may start one.

Probing a region whose new connections fail or hang used to start a fresh
connection for nearly every probe (20 a second per region per observer at the
default ``health.interval_s``). On a CPU-starved machine each one is a forked
PostgreSQL backend that outlives the probe's deadline; three observers drove a
server to 900+ backends until it refused everyone. :class:`FreshGate` bounds
that, per region:

- a **cap** (:data:`FRESH_IN_FLIGHT`) on fresh connections in flight: a connect
  (and its writability check) that has not finished or been torn down, be it a
  probe's, the background recheck's or a spare's. A probe that finds every slot
  taken waits for one within its own deadline (it times out like a connect
  that never answered);
- **backoff** while the connection path is failing: from the
  :data:`BACKOFF_AFTER`-th failed fresh attempt in a row (any kind, timeouts
  included) the next attempt may start only after an exponentially growing,
  jittered delay (``timeout_s``, doubling, at most :data:`BACKOFF_MAX_S`); the
  first success ends it. A probe turned away by the backoff reports the last
  failure kind at once: the path is still failing as far as the prober knows,
  so breakers open as fast as before.

Why not back off from the first failure: every probe the backoff turns away is
a failure the breaker counts without anything having been tried. With 10% of
replies lost (the flapping target, docs/health.md) a fresh attempt fails about
one time in five; backing off from the third failure in a row made runs of up
to 15 failed probes on a loaded machine (false opens), where the probes without
a gate never failed more than 3 in a row. Eight failed fresh attempts in a row
(the breaker's default ``consecutive_failures``) are, with an empty pool, eight
failed probes: the breaker opened on them already, so the probes held back
after them cannot open it falsely. A real outage reaches eight within about a
probe deadline; a kept connection that breaks starts no backoff at all (a pooler
closing an idle connection is no outage).

Bookkeeping only, no I/O and no clock of its own (``now`` is passed in), so it
is unit-tested with an injected clock; written by hand because it is a few
counters tied to our probe semantics, not a general rate limiter.
"""

from __future__ import annotations

import random
from typing import Literal

#: fresh connections in flight per region and observer (probe, recheck and spare together). 3 was
#: enough against a blackhole, but with 10% of replies lost on a loaded machine it made probes wait
#: for a slot and fail: 1 false open in one of two 60 s flapping runs (main: 0); 8 flapped as main did
#: in-process, and three observers still hold at most 8 x 3 backends per region, not 900
FRESH_IN_FLIGHT = 8
#: failed fresh attempts in a row before the backoff starts (the breaker's default consecutive_failures)
BACKOFF_AFTER = 8
#: longest wait between fresh attempts while failing; bounds how late a healed region is noticed
BACKOFF_MAX_S = 1.0

Admission = Literal["go", "wait", "backoff"]


class FreshGate:
    """Per-region cap and backoff for fresh connections (see the module docstring)."""

    def __init__(self, base_s: float, *, cap: int = FRESH_IN_FLIGHT, max_s: float = BACKOFF_MAX_S,
                 after: int = BACKOFF_AFTER, rng: random.Random | None = None) -> None:
        self.base_s = min(base_s, max_s)
        self.cap = cap
        self.max_s = max_s
        self.after = after
        self.rng = rng or random.Random()
        self.in_flight = 0
        self.failures = 0  # failed fresh attempts in a row
        self.last_kind: str | None = None
        self.not_before = 0.0  # backing off: no new attempt before this (monotonic seconds)

    def admit(self, now: float, *, backoff: bool = True) -> Admission:
        """May a fresh connection start now? ``go`` takes a slot (give it back with :meth:`release`).

        ``backoff``: turned away while backing off; the caller reports :attr:`last_kind`. ``wait``:
        every slot is taken. ``backoff=False`` (the recheck and spares, one at a time each) obeys the
        cap only.
        """
        if backoff and now < self.not_before:
            return "backoff"
        if self.in_flight >= self.cap:
            return "wait"
        self.in_flight += 1
        return "go"

    def release(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

    def failed(self, kind: str, now: float) -> float:
        """A fresh attempt failed: maybe back off; returns the delay chosen (0: none)."""
        self.failures += 1
        self.last_kind = kind
        delay = self.delay(self.failures)
        if delay:
            self.not_before = max(self.not_before, now + delay)
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.last_kind = None
        self.not_before = 0.0

    def delay(self, failures: int) -> float:
        """0 before ``after`` failures, then ``base_s * 2**(failures-after)``, at most ``max_s``, jittered
        down to half of it (equal jitter: observers spread out, yet never come back sooner than half)."""
        if failures < self.after:
            return 0.0
        full = min(self.max_s, self.base_s * 2 ** min(failures - self.after, 30))
        return full * (0.5 + 0.5 * self.rng.random())

    def __repr__(self) -> str:
        return (f"<FreshGate in_flight={self.in_flight}/{self.cap} failures={self.failures} "
                f"last={self.last_kind} not_before={self.not_before:.3f}>")
