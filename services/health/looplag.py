"""How late this process's event loop wakes up: a probe that timed out while the loop itself stalled
(CPU starvation, GC) says nothing about its region."""

from __future__ import annotations

import asyncio
import time
from collections import deque


class LoopLagMonitor:
    """Measures how late this event loop wakes up; probes use it to spot self-inflicted timeouts."""

    def __init__(self, period_s: float = 0.02, keep_s: float = 30.0) -> None:
        self.period_s = period_s
        self.keep_s = keep_s
        self._samples: deque[tuple[float, float]] = deque()  # (monotonic time, lag) of late wake-ups
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.period_s)
            now = time.monotonic()
            lag = now - t0 - self.period_s
            if lag > 0.01:
                self._samples.append((now, lag))
            while self._samples and self._samples[0][0] < now - self.keep_s:
                self._samples.popleft()

    def record(self, lag: float, at: float | None = None) -> None:
        """For tests: pretend the loop was ``lag`` seconds late at ``at``."""
        self._samples.append((time.monotonic() if at is None else at, lag))

    def max_lag_since(self, t0: float) -> float:
        """The longest stall that ended after ``t0`` (a stall ending later covers part of [t0, now])."""
        return max((lag for t, lag in self._samples if t >= t0), default=0.0)
