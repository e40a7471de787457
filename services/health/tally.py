"""Failed probes summed up for the log, so a dead region's 20 probes a second never flood it."""

from __future__ import annotations

import logging
import time
from typing import Callable

log = logging.getLogger("regionguard.health.probe")  # the logger operators already filter on


class ProbeTally:
    """Failed probes, logged as a summary at most every ``every_s``: a dead region probed 20 times a
    second must not flood the log, yet an operator must see why a breaker keeps opening."""

    def __init__(self, region: str, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.region, self.every_s, self.clock = region, every_s, clock
        self.counts: dict[str, int] = {}
        self.last_error = ""
        self.since = clock()

    def ok(self) -> None:
        self.counts["ok"] = self.counts.get("ok", 0) + 1
        self._maybe_report()

    def held_back(self, kind: str) -> None:
        """A probe the fresh-connection backoff turned away: it reported the last kind without connecting."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self._maybe_report()

    def failed(self, kind: str, exc: BaseException, fresh: bool) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        state = getattr(exc, "sqlstate", None)
        self.last_error = (f"{kind} on a {'fresh' if fresh else 'kept'} connection: {type(exc).__name__}"
                           + (f" (SQLSTATE {state})" if state else ""))
        self._maybe_report()

    def _maybe_report(self) -> str | None:
        now = self.clock()
        if now - self.since < self.every_s:
            return None
        failed = {k: n for k, n in self.counts.items() if k != "ok"}
        line = None
        if failed:
            parts = ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items()))
            line = f"region {self.region}: probes in the last {now - self.since:.0f}s: {parts}; last: {self.last_error}"
            log.warning("%s", line)
        self.counts, self.since = {}, now
        return line
