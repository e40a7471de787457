"""When a lane sends its offset commits: at most once per ``interval_s``, coalesced (pure; the clock is injected).

A lane used to commit after every batch. A consumer's commits and heartbeats go
to the group coordinator over one connection, answered one request at a time.
With small batches (a low ``router.batch_wait_ms``, a fast database) a lane sent
several hundred commits a second, more than Apache Kafka's coordinator answered:
the queue grew, heartbeats waited behind commits for over 6 s, and every lane's
session expired (bench/latency.py with ``batch_wait_ms: 1``, twice: p99 15 s, librdkafka
"HeartbeatRequest ... held back by preceeding OffsetCommitRequest").

A commit only records progress: a record read again after a crash is skipped
by the inbox, and a revoked partition's position is handed over synchronously
(the lane's ``done``), so coalescing loses nothing. The newest offset of each
partition wins; an idle lane sends what is left within ``interval_s`` plus its
poll wait.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

#: 10 commits a second per lane at most; the redelivery window after a crash grows by as much
COMMIT_INTERVAL_S = 0.1


class CommitPacer:
    def __init__(self, interval_s: float = COMMIT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self.clock = interval_s, clock
        self._unsent: dict[int, int] = {}  # partition -> next offset to commit, not sent yet
        self._last: float | None = None    # when offsets were last handed out

    def settled(self, offsets: dict[int, int]) -> None:
        """These partitions' batches are durable up to (excluding) these offsets."""
        self._unsent.update(offsets)

    def due(self) -> dict[int, int]:
        """The offsets to send now: all unsent ones once ``interval_s`` has passed since the last send, else none."""
        if not self._unsent:
            return {}
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            return {}
        return self._take(now)

    def flush(self) -> dict[int, int]:
        """Every unsent offset, whenever the last send was (stopping)."""
        return self._take(self.clock()) if self._unsent else {}

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget partitions whose position was handed over another way (revoked, committed synchronously)."""
        for p in partitions:
            self._unsent.pop(p, None)

    def _take(self, now: float) -> dict[int, int]:
        out, self._unsent = self._unsent, {}
        self._last = now
        return out
