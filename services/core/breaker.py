"""A per-region circuit breaker with resilience4j's semantics, as a pure state machine.

No I/O, no sleeps, no threads: time comes from an injected monotonic clock
(``Callable[[], float]``), outcomes are fed in with :meth:`CircuitBreaker.record`
and time-based moves (open -> half_open) happen in :meth:`CircuitBreaker.tick`
(``record`` ticks first). Every state change is a :class:`Transition`, checked
against :data:`ALLOWED` (anything else is a bug and raises
:class:`IllegalTransition`) and handed to listeners; a listener that raises is
logged and never breaks the breaker.

Semantics (resilience4j's ``CircuitBreaker``, count-based sliding window):

- **closed -> open** when the last ``consecutive_failures`` calls all failed, or,
  once the window holds ``min(min_calls, window)`` calls, when the failure rate
  of the last ``window`` calls is >= ``failure_rate``, or their slow-call rate
  (latency > ``slow_call_s``, failed or not) is >= ``slow_call_rate``.
- **open -> half_open** after the open wait: ``open_wait_s``, multiplied by
  ``open_wait_multiplier`` for each further opening without a successful close
  in between, capped at ``open_wait_max_s``; or earlier, after
  ``recovery_probes`` successful calls in a row while open (reason
  ``probes_succeeded``; a failure or a slow call restarts the count; 0 turns
  this off). Calls while open are not permitted (:meth:`permits_calls` is
  false): the health service's probes keep running anyway, and
  :meth:`record` counts them only towards that early move. This is not
  resilience4j: its open state ignores calls, so after a long outage the
  heal is noticed only when the (grown) open wait ends; here it is noticed
  within ``recovery_probes`` probe intervals, and the half-open trial still
  decides, so a single success during a fault never closes the breaker.
- **half_open -> open** on any failed trial call; **half_open -> closed** after
  ``half_open_calls`` successful trials, unless at least ``slow_call_rate`` of
  them were slow (then -> open, reason ``slow_call_rate``).
- Entering closed (or any operator state) resets the window and counters.
- Operators: :meth:`force_open` (``forced_open``: not permitted, never moves by
  itself), :meth:`disable` (``disabled``: always permitted, never trips) and
  :meth:`release` (back to closed, counters reset).

Published states (``RegionState.state`` has only closed|open|half_open):
``forced_open`` is published as ``open`` with reason ``forced`` and
``disabled`` as ``closed`` with reason ``disabled`` (:func:`published`).

Why not a library (evaluated from their sources, 2026-11):

- **pybreaker 1.4**: consecutive-failure counter only (``fail_max``), no
  failure-rate or slow-call window; opening time from ``datetime.now()``
  (no injectable clock, tests would have to sleep or patch); it is built
  around wrapping a call (``cb.call(func)``), while our health leader judges
  outcomes observed by other processes.
- **aiobreaker 1.2**: an asyncio port of an older pybreaker: same counter-only
  model, ``datetime.now()``/``utcnow()`` timing.
- **purgatory 3.0**: consecutive-failure ``threshold`` and ``ttl`` only,
  ``time.time()`` clock, half-open closes after one success; no sliding
  window, slow calls, backoff, forced/disabled states, or transition table.

None has the sliding-window rates, slow calls, multi-call half-open, open
backoff or operator states, and none takes a clock, so this module implements
the state machine itself (about 250 lines) and is property-tested against a
reference model in ``tests/unit/test_breaker_model.py``.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from .config import BreakerConfig
from .supervise import swallowed

log = logging.getLogger(__name__)


class BreakerState(str, enum.Enum):
    closed = "closed"
    open = "open"
    half_open = "half_open"
    forced_open = "forced_open"
    disabled = "disabled"


_C, _O, _H, _F, _D = (BreakerState.closed, BreakerState.open, BreakerState.half_open,
                      BreakerState.forced_open, BreakerState.disabled)

#: Every allowed (from, to) pair and what causes it. Any other move raises.
ALLOWED: dict[tuple[BreakerState, BreakerState], str] = {
    (_C, _O): "trip: consecutive failures, failure rate or slow-call rate",
    (_O, _H): "open wait elapsed, or recovery_probes successful calls in a row while open",
    (_H, _C): "half_open_calls trial calls succeeded",
    (_H, _O): "a trial call failed (or too many were slow)",
    (_C, _F): "operator force-open",
    (_O, _F): "operator force-open",
    (_H, _F): "operator force-open",
    (_D, _F): "operator force-open",
    (_C, _D): "operator disable",
    (_O, _D): "operator disable",
    (_H, _D): "operator disable",
    (_F, _D): "operator disable",
    (_F, _C): "operator release",
    (_D, _C): "operator release",
}

#: Breaker state -> (published RegionState.state, forced reason or None)
PUBLISHED: dict[BreakerState, tuple[str, str | None]] = {
    _C: ("closed", None),
    _O: ("open", None),
    _H: ("half_open", None),
    _F: ("open", "forced"),
    _D: ("closed", "disabled"),
}


def published(state: BreakerState, reason: str = "") -> tuple[str, str]:
    """(``RegionState.state``, reason) to publish for a breaker state."""
    pub, forced_reason = PUBLISHED[state]
    return pub, forced_reason or reason


def from_published(state: str, reason: str = "", breaker_state: str | None = None) -> BreakerState:
    """Inverse of :func:`published`, used by a new leader to restore a breaker."""
    if breaker_state:
        try:
            return BreakerState(breaker_state)
        except ValueError:
            pass
    if state == "open" and reason == "forced":
        return _F
    if state == "closed" and reason == "disabled":
        return _D
    return BreakerState(state)


class IllegalTransition(RuntimeError):
    """A state change outside :data:`ALLOWED`: a bug in the breaker."""


@dataclass(frozen=True)
class Transition:
    name: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str
    at: float
    stats: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[Transition], None]


class CircuitBreaker:
    """One breaker (one region). Not thread-safe: drive it from one thread/loop."""

    def __init__(self, name: str, config: BreakerConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._state = _C
        self._listeners: list[Listener] = []
        self._window: deque[tuple[bool, bool]] = deque(maxlen=self.config.window)  # (failed, slow)
        self._consecutive = 0
        self._half_ok = 0
        self._half_slow = 0
        self._open_ok = 0  # successful (not slow) calls in a row while open
        self._openings = 0  # openings since the last successful close
        self._opened_at: float | None = None
        self._open_wait = 0.0
        self.last_reason = ""
        self.calls = 0  # calls recorded (not ignored) since creation
        self.ignored = 0  # calls ignored because not permitted

    # ---- inspection -------------------------------------------------------------------
    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def openings(self) -> int:
        return self._openings

    def permits_calls(self) -> bool:
        """Would a call go through now (closed, half_open, disabled)? Does not tick."""
        return self._state in (_C, _H, _D)

    def open_wait_for(self, openings: int) -> float:
        c = self.config
        wait = c.open_wait_s * (c.open_wait_multiplier ** max(0, openings - 1))
        return min(wait, max(c.open_wait_max_s, c.open_wait_s))

    def open_until(self) -> float | None:
        """Clock time at which an open breaker moves to half_open."""
        if self._state is _O and self._opened_at is not None:
            return self._opened_at + self._open_wait
        return None

    def stats(self) -> dict[str, Any]:
        n = len(self._window)
        failures = sum(1 for f, _ in self._window if f)
        slow = sum(1 for _, s in self._window if s)
        out: dict[str, Any] = {
            "breaker_state": self._state.value,
            "window_calls": n,
            "window_failures": failures,
            "window_slow": slow,
            "failure_rate": round(failures / n, 4) if n else 0.0,
            "slow_call_rate": round(slow / n, 4) if n else 0.0,
            "consecutive_failures": self._consecutive,
            "openings": self._openings,
        }
        if self._state is _H:
            out["half_open_successes"] = self._half_ok
        if self._state is _O:
            out["open_wait_s"] = round(self._open_wait, 3)
            out["recovery_successes"] = self._open_ok
        return out

    # ---- listeners --------------------------------------------------------------------
    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        self._listeners.remove(fn)

    # ---- inputs -----------------------------------------------------------------------
    def tick(self) -> list[Transition]:
        """Apply time-based moves (open -> half_open once the open wait elapsed)."""
        until = self.open_until()
        if until is not None and self._clock() >= until:
            return [self._move(_H, "open_wait_elapsed")]
        return []

    def record(self, ok: bool, latency_s: float = 0.0) -> list[Transition]:
        """Feed one call outcome; returns the transitions it caused (maybe none)."""
        out = self.tick()
        state = self._state
        c = self.config
        failed = not ok
        slow = latency_s > c.slow_call_s
        if state not in (_C, _H):
            self.ignored += 1
            if state is _O:  # not permitted, but a probe: counts towards recovery_probes
                self._open_ok = self._open_ok + 1 if not failed and not slow else 0
                if c.recovery_probes and self._open_ok >= c.recovery_probes:
                    out.append(self._move(_H, "probes_succeeded"))
            return out
        self.calls += 1
        if state is _H:
            if failed:
                out.append(self._open("trial_failed"))
            else:
                self._half_ok += 1
                self._half_slow += slow
                if self._half_ok >= c.half_open_calls:
                    if self._half_slow / self._half_ok >= c.slow_call_rate:
                        out.append(self._open("slow_call_rate"))
                    else:
                        self._openings = 0
                        out.append(self._move(_C, "trial_succeeded"))
            return out
        # closed
        self._window.append((failed, slow))
        self._consecutive = self._consecutive + 1 if failed else 0
        n = len(self._window)
        reason = None
        if self._consecutive >= c.consecutive_failures:
            reason = "consecutive_failures"
        elif n >= min(c.min_calls, c.window):
            if sum(1 for f, _ in self._window if f) / n >= c.failure_rate:
                reason = "failure_rate"
            elif sum(1 for _, s in self._window if s) / n >= c.slow_call_rate:
                reason = "slow_call_rate"
        if reason:
            out.append(self._open(reason))
        return out

    def force_open(self, reason: str = "forced") -> list[Transition]:
        if self._state is _F:
            return []
        return [self._move(_F, reason)]

    def disable(self, reason: str = "disabled") -> list[Transition]:
        if self._state is _D:
            return []
        return [self._move(_D, reason)]

    def release(self, reason: str = "released") -> list[Transition]:
        """Leave forced_open/disabled for closed; a no-op in any other state."""
        if self._state not in (_F, _D):
            return []
        self._openings = 0
        return [self._move(_C, reason)]

    def restore(self, state: BreakerState, *, opened_ago_s: float = 0.0, openings: int | None = None,
                reason: str = "") -> None:
        """Set the state without a transition (a new leader resuming a published state).

        For ``open``, ``opened_ago_s`` says how long ago it opened, so the
        open wait is not restarted from scratch; counters start empty.
        """
        self._reset_counters()
        self._state = state
        self.last_reason = reason
        if state is _O:
            self._openings = max(1, openings or 1)
            self._open_wait = self.open_wait_for(self._openings)
            self._opened_at = self._clock() - max(0.0, opened_ago_s)
        else:
            self._openings = max(0, openings or 0)
            self._opened_at = None

    # ---- internals --------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self._window.clear()
        self._consecutive = 0
        self._half_ok = 0
        self._half_slow = 0
        self._open_ok = 0

    def _open(self, reason: str) -> Transition:
        self._openings += 1
        return self._move(_O, reason)

    def _move(self, to: BreakerState, reason: str) -> Transition:
        frm = self._state
        if (frm, to) not in ALLOWED:
            raise IllegalTransition(f"breaker {self.name}: {frm.value} -> {to.value} is not allowed ({reason})")
        stats = self.stats()  # the numbers that led to the move
        now = self._clock()
        self._state = to
        self.last_reason = reason
        self._reset_counters()
        if to is _O:
            self._opened_at = now
            self._open_wait = self.open_wait_for(self._openings)
        else:
            self._opened_at = None
        if to is not _O:
            stats.pop("open_wait_s", None)
        else:
            stats["open_wait_s"] = round(self._open_wait, 3)
            stats["recovery_successes"] = 0
        stats["breaker_state"] = to.value
        t = Transition(self.name, frm, to, reason, now, stats)
        for fn in list(self._listeners):
            try:
                fn(t)
            except Exception as exc:  # a listener must never break the breaker (reported)
                swallowed("breaker", exc, what=f"breaker {self.name}: listener {getattr(fn, '__name__', fn)!s} on "
                          f"{frm.value} -> {to.value}", logger=log, level=logging.ERROR)
        return t
