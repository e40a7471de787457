"""Background work that never dies silently.

Used by every service and by the client library:

``swallowed(component, exc, what=...)``
    for a handler that goes on after an error (a callback, one record, a
    best-effort close): one WARNING line with the exception type and message
    (first line only, passwords redacted), the redacted traceback at DEBUG,
    and ``regionguard_background_errors_total{component, kind}`` + 1, where
    ``kind`` is the exception type. The counter counts every error; the
    WARNING line of one ``(component, kind)`` is written at most once per
    ``REPORT_EVERY_S`` and then says how many were not reported in between, so
    a poison record read a thousand times a second can't flood the log.

``supervised(component, fn, stop)`` and ``supervised_async(component, fn, stop)``
    for a thread body or a task loop: run ``fn``; when it raises, report it like
    ``swallowed`` (one WARNING line naming the delay, no traceback), count a
    restart in ``regionguard_background_restarts_total{component}``, wait a
    capped exponential backoff and run ``fn`` again. ``stop`` ends the wait at
    once. ``fn`` returning means done. A run that lasted ``healthy_after_s``
    resets the delay, so a thread that fails once a day restarts at once.

``component`` must be a small, fixed set of names (it is a metric label):
``stateview``, ``health.leader``, ``follower:features``, ...
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from .dsn import redact_dsn
from .counters import BACKGROUND_ERRORS, BACKGROUND_RESTARTS

log = logging.getLogger("regionguard.core.supervise")  # its name before the move (loggers stay in the regionguard tree)

REPORT_EVERY_S = 10.0
_MAX_MESSAGE = 300


class Backoff:
    """Capped exponential delays between restarts."""

    def __init__(self, initial_s: float = 0.1, max_s: float = 30.0, factor: float = 2.0,
                 healthy_after_s: float = 60.0) -> None:
        if initial_s <= 0 or max_s < initial_s or factor < 1:
            raise ValueError("backoff: need 0 < initial_s <= max_s and factor >= 1")
        self.initial_s, self.max_s, self.factor, self.healthy_after_s = initial_s, max_s, factor, healthy_after_s
        self._next = initial_s

    def next_delay(self, ran_for_s: float = 0.0) -> float:
        """The wait before the next run, after a run that lasted ``ran_for_s`` and failed."""
        if ran_for_s >= self.healthy_after_s:
            self._next = self.initial_s
        delay = self._next
        self._next = min(self.max_s, self._next * self.factor)
        return delay

    def reset(self) -> None:
        self._next = self.initial_s


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``, redacted and bounded: fit for one log line."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if len(first) > _MAX_MESSAGE:
        first = first[:_MAX_MESSAGE] + "..."
    name = type(exc).__name__
    return redact_dsn(f"{name}: {first}" if first else name)


def redacted_traceback(exc: BaseException) -> str:
    """The full traceback of ``exc`` as text, passwords redacted: for DEBUG lines."""
    return redact_dsn("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())


class _Throttle:
    """At most one report per key and ``every`` seconds; counts what it held back."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}

    def admit(self, key: tuple[str, str]) -> int | None:
        """None: hold this one back; else the number held back since the last report."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)


_throttle = _Throttle(REPORT_EVERY_S)


def swallowed(component: str, exc: BaseException, *, what: str = "", logger: logging.Logger | None = None,
              level: int = logging.WARNING) -> None:
    """Report an exception a handler catches and goes on after: a log line and a metric, never silence.

    ``level`` below WARNING is for errors that are expected and reported
    elsewhere as well (e.g. closing a connection to a region that is down);
    they are still counted.
    """
    lg = logger or log
    kind = type(exc).__name__
    BACKGROUND_ERRORS.labels(component, kind).inc()
    held = _throttle.admit((component, kind))
    if held is not None and lg.isEnabledFor(level):
        more = f" (+{held} more since the last report)" if held else ""
        lg.log(level, "%s: %s failed: %s%s", component, what or "handler", describe(exc), more)
    if lg.isEnabledFor(logging.DEBUG):
        lg.debug("%s: traceback of the error above:\n%s", component, redacted_traceback(exc))


def guard(component: str, fn: Callable[..., Any], *, what: str = "", logger: logging.Logger | None = None
          ) -> Callable[..., None]:
    """``fn`` wrapped so that an exception is reported with :func:`swallowed` instead of raised."""

    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # reported: a line, a metric, the traceback at DEBUG
            swallowed(component, exc, what=what or getattr(fn, "__name__", "handler"), logger=logger)

    return guarded


def _restarting(component: str, exc: BaseException, delay: float, restarts: int, stopping: bool,
                logger: logging.Logger | None) -> None:
    lg = logger or log
    BACKGROUND_ERRORS.labels(component, type(exc).__name__).inc()
    if stopping:
        lg.warning("%s: failed while stopping: %s", component, describe(exc))
    else:
        BACKGROUND_RESTARTS.labels(component).inc()
        lg.warning("%s: failed: %s; restarting in %.1fs (restart %d)", component, describe(exc), delay, restarts)
    if lg.isEnabledFor(logging.DEBUG):
        lg.debug("%s: traceback of the error above:\n%s", component, redacted_traceback(exc))


def supervised(component: str, fn: Callable[[], Any], stop: threading.Event, *, backoff: Backoff | None = None,
               logger: logging.Logger | None = None, wait: Callable[[float], bool] | None = None,
               clock: Callable[[], float] = time.monotonic) -> None:
    """Run ``fn`` until it returns or ``stop`` is set, restarting it with backoff when it raises.

    Meant as a thread's target: ``Thread(target=supervised, args=("stateview", self._run, self._stop))``.
    ``wait(delay) -> stopped`` defaults to ``stop.wait``; tests inject their own (no real sleeps).
    """
    backoff = backoff or Backoff()
    wait = wait or stop.wait
    restarts = 0
    while not stop.is_set():
        started = clock()
        try:
            fn()
            return
        except Exception as exc:  # reported and restarted below
            stopping = stop.is_set()
            delay = backoff.next_delay(clock() - started)
            if not stopping:
                restarts += 1
            _restarting(component, exc, delay, restarts, stopping, logger)
            if stopping or wait(delay):
                return


async def _wait_event(stop: asyncio.Event, delay: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), delay)
    except asyncio.TimeoutError:
        return False
    return True


async def supervised_async(component: str, fn: Callable[[], Awaitable[Any]], stop: asyncio.Event, *,
                           backoff: Backoff | None = None, logger: logging.Logger | None = None,
                           sleep: Callable[[float], Awaitable[bool]] | None = None,
                           clock: Callable[[], float] = time.monotonic) -> None:
    """:func:`supervised` for a coroutine: ``await fn()`` again after an error, until it returns or ``stop``.

    Cancellation is not an error: it ends the loop at once. ``sleep(delay) -> stopped``
    defaults to waiting on ``stop``; tests inject their own.
    """
    backoff = backoff or Backoff()
    restarts = 0
    while not stop.is_set():
        started = clock()
        try:
            await fn()
            return
        except Exception as exc:  # reported and restarted below (CancelledError is not an Exception)
            stopping = stop.is_set()
            delay = backoff.next_delay(clock() - started)
            if not stopping:
                restarts += 1
            _restarting(component, exc, delay, restarts, stopping, logger)
            if stopping:
                return
            if await (sleep(delay) if sleep is not None else _wait_event(stop, delay)):
                return
