"""A token bucket for ``replay.max_rate`` (writes per second; 0 = unlimited).

Hand-written because it is ten lines on an injectable clock; the libraries
we looked at (aiolimiter) sleep on the real clock, which our tests avoid.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable


class TokenBucket:
    def __init__(self, rate: float, *, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.rate, self.burst = rate, max(1, burst)
        self.clock, self.sleep = clock, sleep
        self.tokens = float(self.burst)
        self.stamp = clock()

    def delay_for(self, n: int) -> float:
        """Take ``n`` tokens now (possibly going negative) and return how long to wait."""
        if self.rate <= 0 or n <= 0:
            return 0.0
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def take(self, n: int) -> None:
        delay = self.delay_for(n)
        if delay > 0:
            await self.sleep(delay)
