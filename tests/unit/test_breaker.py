"""Plain unit tests of the breaker: an injected clock, no sleeps, no I/O."""

from __future__ import annotations

import logging

import pytest

from regionguard.core.breaker import (
    ALLOWED, BreakerState as S, CircuitBreaker, IllegalTransition, from_published, published,
)
from regionguard.core.config import BreakerConfig


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make(**kw):
    clock = Clock()
    cfg = BreakerConfig(**{"consecutive_failures": 3, "window": 10, "min_calls": 5, "failure_rate": 0.5,
                           "slow_call_s": 0.3, "slow_call_rate": 0.8, "open_wait_s": 5,
                           "half_open_calls": 2, **kw})
    cb = CircuitBreaker("eu", cfg, clock=clock)
    seen = []
    cb.add_listener(seen.append)
    return cb, clock, seen


def test_opens_on_consecutive_failures_only():
    cb, _, seen = make(failure_rate=1.0)
    cb.record(False), cb.record(False)
    assert cb.state is S.closed
    cb.record(True)  # a success resets the run
    cb.record(False), cb.record(False)
    assert cb.state is S.closed
    [t] = cb.record(False)
    assert (t.from_state, t.to_state, t.reason) == (S.closed, S.open, "consecutive_failures")
    assert t.stats["consecutive_failures"] == 3 and seen == [t]


def test_opens_on_failure_rate_after_min_calls():
    cb, _, _ = make(consecutive_failures=100)
    for ok in (False, True, False, True):
        cb.record(ok)
    assert cb.state is S.closed  # 4 < min_calls
    [t] = cb.record(False)  # 3/5 failed
    assert t.reason == "failure_rate" and t.stats["failure_rate"] == 0.6


def test_failure_rate_uses_only_the_window():
    cb, _, _ = make(consecutive_failures=100, window=4, min_calls=4, failure_rate=0.75)
    for ok in (False, False, True, True, True, False, True):
        cb.record(ok)
    assert cb.state is S.closed
    cb.record(False)
    assert cb.state is S.closed  # window T,F,T,F = 0.5
    cb.record(False)
    assert cb.state is S.open  # F,T,F,F = 0.75


def test_opens_on_slow_call_rate():
    cb, _, _ = make()
    for _ in range(4):
        cb.record(True, 0.5)
    assert cb.state is S.closed
    [t] = cb.record(True, 0.31)
    assert t.reason == "slow_call_rate"


def test_min_calls_above_window_means_window():
    cb, _, _ = make(consecutive_failures=100, window=3, min_calls=50)
    cb.record(False), cb.record(True), cb.record(False)
    assert cb.state is S.open


def test_open_rejects_then_half_open_then_closed():
    cb, clock, seen = make()
    for _ in range(3):
        cb.record(False)
    assert cb.record(True) == [] and cb.ignored == 1  # not permitted while open
    assert not cb.permits_calls()
    clock.t += 4.99
    assert cb.tick() == []
    clock.t += 0.01
    [t] = cb.tick()
    assert t.to_state is S.half_open and cb.permits_calls()
    cb.record(True)
    assert cb.state is S.half_open
    [t] = cb.record(True)
    assert (t.to_state, t.reason) == (S.closed, "trial_succeeded") and cb.openings == 0
    assert [x.to_state for x in seen] == [S.open, S.half_open, S.closed]


def test_record_after_wait_is_a_trial_call():
    cb, clock, _ = make()
    for _ in range(3):
        cb.record(False)
    clock.t += 5
    ts = cb.record(False)
    assert [(t.to_state, t.reason) for t in ts] == [(S.half_open, "open_wait_elapsed"), (S.open, "trial_failed")]


def test_half_open_slow_trials_reopen():
    cb, clock, _ = make(half_open_calls=2)
    for _ in range(3):
        cb.record(False)
    clock.t += 5
    cb.record(True, 1.0)
    [t] = cb.record(True, 1.0)
    assert (t.to_state, t.reason) == (S.open, "slow_call_rate")


def test_backoff_after_repeated_openings_is_capped():
    cb, clock, _ = make(open_wait_s=2, open_wait_multiplier=2, open_wait_max_s=5)
    waits = []
    for _ in range(3):
        cb.record(False)
    for _ in range(4):
        waits.append(cb.open_until() - clock.t)
        clock.t = cb.open_until()
        cb.record(False)  # half_open trial fails -> open again
    assert waits == [2, 4, 5, 5]
    clock.t = cb.open_until()
    cb.record(True), cb.record(True)
    assert cb.state is S.closed and cb.openings == 0
    for _ in range(3):
        cb.record(False)
    assert cb.open_until() - clock.t == 2  # backoff restarts after a real close


def test_forced_open_and_disabled_and_release():
    cb, clock, seen = make()
    [t] = cb.force_open()
    assert (t.to_state, t.reason) == (S.forced_open, "forced")
    assert cb.force_open() == []
    clock.t += 1e6
    assert cb.tick() == [] and cb.record(True) == []  # never leaves by itself
    assert published(cb.state, "x") == ("open", "forced")
    cb.disable()
    for _ in range(50):
        cb.record(False)
    assert cb.state is S.disabled and cb.permits_calls()
    assert published(cb.state) == ("closed", "disabled")
    [t] = cb.release()
    assert (t.from_state, t.to_state, t.reason) == (S.disabled, S.closed, "released")
    assert cb.release() == []  # no-op when not operator-held
    assert [x.to_state for x in seen] == [S.forced_open, S.disabled, S.closed]


def test_listener_errors_are_logged_and_do_not_break(caplog):
    cb, _, seen = make()

    def bad(t):
        raise ValueError("boom")

    cb.add_listener(bad)
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            cb.record(False)
    assert cb.state is S.open and len(seen) == 1
    assert "listener" in caplog.text


def test_illegal_transition_raises():
    cb, _, _ = make()
    with pytest.raises(IllegalTransition):
        cb._move(S.half_open, "bug")
    assert (S.closed, S.half_open) not in ALLOWED
    assert cb.state is S.closed


def test_restore_keeps_elapsed_open_time_and_emits_nothing():
    cb, clock, seen = make()
    cb.restore(S.open, opened_ago_s=4.0, reason="consecutive_failures")
    assert cb.state is S.open and seen == []
    clock.t += 0.5
    assert cb.tick() == []
    clock.t += 0.5
    assert [t.to_state for t in cb.tick()] == [S.half_open]


@pytest.mark.parametrize("state,reason,expect", [
    ("open", "forced", S.forced_open), ("closed", "disabled", S.disabled),
    ("open", "consecutive_failures", S.open), ("half_open", "", S.half_open), ("closed", "", S.closed),
])
def test_from_published_inverts_published(state, reason, expect):
    assert from_published(state, reason) is expect
    assert published(expect, reason)[0] == state
