"""Property test: the breaker against a deliberately naive reference model.

The model keeps the full list of outcomes since the last reset and derives
everything (consecutive failures, window rates) from it, instead of the
breaker's incremental counters; hypothesis drives both with random outcomes,
clock advances and operator commands and compares every transition.
"""

from __future__ import annotations

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from regionguard.core.breaker import ALLOWED, BreakerState as S, CircuitBreaker
from regionguard.core.config import BreakerConfig


class Model:
    def __init__(self, c: BreakerConfig):
        self.c = c
        self.state = "closed"
        self.hist: list[tuple[bool, bool]] = []  # (failed, slow) since last reset
        self.openings = 0
        self.opened_at = 0.0
        self.wait = 0.0
        self.log: list[tuple[str, str, str]] = []

    def _go(self, to, reason, now):
        self.log.append((self.state, to, reason))
        self.state = to
        self.hist = []
        if to == "open":
            self.opened_at = now
            w = self.c.open_wait_s * self.c.open_wait_multiplier ** (self.openings - 1)
            self.wait = min(w, max(self.c.open_wait_max_s, self.c.open_wait_s))

    def tick(self, now):
        if self.state == "open" and now >= self.opened_at + self.wait:
            self._go("half_open", "open_wait_elapsed", now)

    def record(self, ok, latency, now):
        self.tick(now)
        c = self.c
        slow = latency > c.slow_call_s
        if self.state == "open":  # the outcomes while open, since it opened: a clean run of them moves early
            self.hist.append((not ok, slow))
            run = 0
            for f, s in reversed(self.hist):
                if f or s:
                    break
                run += 1
            if c.recovery_probes and run >= c.recovery_probes:
                self._go("half_open", "probes_succeeded", now)
            return
        if self.state not in ("closed", "half_open"):
            return
        self.hist.append((not ok, slow))
        if self.state == "half_open":
            if not ok:
                self.openings += 1
                self._go("open", "trial_failed", now)
            elif len(self.hist) >= c.half_open_calls:
                if sum(s for _, s in self.hist) / len(self.hist) >= c.slow_call_rate:
                    self.openings += 1
                    self._go("open", "slow_call_rate", now)
                else:
                    self.openings = 0
                    self._go("closed", "trial_succeeded", now)
            return
        tail = 0
        for f, _ in reversed(self.hist):
            if not f:
                break
            tail += 1
        win = self.hist[-c.window:]
        reason = None
        if tail >= c.consecutive_failures:
            reason = "consecutive_failures"
        elif len(win) >= min(c.min_calls, c.window):
            if sum(f for f, _ in win) / len(win) >= c.failure_rate:
                reason = "failure_rate"
            elif sum(s for _, s in win) / len(win) >= c.slow_call_rate:
                reason = "slow_call_rate"
        if reason:
            self.openings += 1
            self._go("open", reason, now)

    def force_open(self, now):
        if self.state != "forced_open":
            self._go("forced_open", "forced", now)

    def disable(self, now):
        if self.state != "disabled":
            self._go("disabled", "disabled", now)

    def release(self, now):
        if self.state in ("forced_open", "disabled"):
            self.openings = 0
            self._go("closed", "released", now)


configs = st.builds(
    BreakerConfig,
    consecutive_failures=st.integers(1, 6),
    window=st.integers(1, 12),
    min_calls=st.integers(1, 15),
    failure_rate=st.sampled_from([0.2, 0.5, 0.75, 1.0]),
    slow_call_s=st.just(0.3),
    slow_call_rate=st.sampled_from([0.3, 0.8, 1.0]),
    open_wait_s=st.sampled_from([0.5, 1.0, 5.0]),
    open_wait_max_s=st.sampled_from([1.0, 4.0, 60.0]),
    open_wait_multiplier=st.sampled_from([1.0, 2.0, 3.0]),
    half_open_calls=st.integers(1, 4),
    recovery_probes=st.sampled_from([0, 2, 3, 5]),
)


class BreakerVsModel(RuleBasedStateMachine):
    @initialize(c=configs)
    def setup(self, c):
        self.now = 100.0
        self.cb = CircuitBreaker("r", c, clock=lambda: self.now)
        self.model = Model(c)
        self.seen: list[tuple[str, str, str]] = []
        self.cb.add_listener(lambda t: self.seen.append((t.from_state.value, t.to_state.value, t.reason)))

    @rule(ok=st.booleans(), latency=st.sampled_from([0.001, 0.1, 0.35, 1.0]))
    def record(self, ok, latency):
        got = self.cb.record(ok, latency)
        before = len(self.model.log)
        self.model.record(ok, latency, self.now)
        assert [(t.from_state.value, t.to_state.value, t.reason) for t in got] == self.model.log[before:]

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 2.5, 10.0, 100.0]))
    def advance(self, dt):
        self.now += dt

    @rule()
    def tick(self):
        self.cb.tick()
        self.model.tick(self.now)

    @rule()
    def force_open(self):
        self.cb.force_open()
        self.model.force_open(self.now)

    @rule()
    def disable(self):
        self.cb.disable()
        self.model.disable(self.now)

    @rule()
    def release(self):
        self.cb.release()
        self.model.release(self.now)

    @invariant()
    def same_state(self):
        if hasattr(self, "cb"):
            assert self.cb.state.value == self.model.state
            assert self.cb.openings == self.model.openings
            assert self.seen == self.model.log
            for frm, to, _ in self.seen:
                assert (S(frm), S(to)) in ALLOWED


BreakerVsModel.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestBreakerVsModel = BreakerVsModel.TestCase
