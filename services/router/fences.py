"""Read a short range of a held partition: is everything in it a fence?

A restarted router fences each held partition it owns before going direct
(``modes.py``), so fences pile up at the end of a held partition whose
backlog was replayed long ago. Only the replayer moves its committed offset
past them, so with the replayer slow, busy elsewhere or stopped, the router
waited on records that need no replay. Reading the few records between the
replayer's commit and our fence answers the question exactly, on any broker
(tansu's high watermark can't: it is not a record position).

Blocking (librdkafka calls): run it in a thread.
"""

from __future__ import annotations

import time
from typing import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from ..core.held import H_FENCE

#: A longer run of records than this between the replayer's commit and our fence is a backlog,
#: not a pile of fences: leave it to the replayer rather than read it.
MAX_SCAN = 1000


#: Seconds since the replayer's commit of a held partition last moved during which it counts as
#: working on it: the router then waits for it instead of reading the partition.
ACTIVE_S = 1.0


class ReplayerWatch:
    """Is the replayer working on a held partition right now? (Pure; the clock is injected.)

    Reading a held range to look for fences takes a consumer assignment and a fetch (0.1-0.8 s
    measured on Apache Kafka, during which the lane checks nothing else), and it only helps when
    the replayer is slow or stopped. While its commit moves, it reaches the fence on its own:
    reading then only delayed the switch back to direct (by 0.4-0.8 s after 10k and 100k drains).
    So a range is read only once the commit has stood still for ``active_s``, counted from the
    first look: a replayer just starting on a recovered region gets that long to show progress.
    """

    def __init__(self, active_s: float = ACTIVE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.active_s, self.clock = active_s, clock
        self._seen: dict[int, tuple[int | None, float]] = {}  # p -> (commit, first look or last move)

    def busy(self, partition: int, committed: int | None) -> bool:
        """Record the replayer's commit of ``partition``; True until it stood still for ``active_s``."""
        now = self.clock()
        prev = self._seen.get(partition)
        since = now if prev is None or committed != prev[0] else prev[1]
        self._seen[partition] = (committed, since)
        return now - since < self.active_s

    def forget(self, partition: int) -> None:
        self._seen.pop(partition, None)


def is_fence(msg) -> bool:
    return msg.value() is None and any(k == H_FENCE for k, _ in (msg.headers() or []))


def only_fences(consumer: Consumer, topic: str, partition: int, first: int, last: int,
                timeout: float = 5.0) -> bool:
    """True when every record of ``topic[partition]`` with an offset in ``[first, last]`` is a fence.

    False as soon as one is not, when the range is too long, or when the records can't be read
    within ``timeout`` (the caller then keeps waiting for the replayer, which is always safe).
    ``consumer`` is used through ``assign`` only: it must not be subscribed, and nothing is committed.
    """
    if last - first + 1 > MAX_SCAN:
        return False
    start = first if first > 0 else OFFSET_BEGINNING
    consumer.assign([TopicPartition(topic, partition, start)])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().retriable() or msg.error().code() < 0:
                    continue  # e.g. partition EOF or a transient fetch error: read on
                return False
            if msg.partition() != partition or msg.topic() != topic or msg.offset() < first:
                continue  # e.g. a fetch for an earlier assignment of this consumer, answered late
            if msg.offset() > last:
                return True  # the range had gaps (offsets need not be dense): all of it was read
            if not is_fence(msg):
                return False
            if msg.offset() == last:
                return True
        return False
    except KafkaException:
        return False
    finally:
        consumer.unassign()
