"""Source records an earlier owner of a partition handled, though it never committed them.

A router commits a batch's source offsets only after the batch's held copies
and dead letters are in Kafka. A router that dies in between leaves them
handled but uncommitted, and the next owner reads them again. In held mode
that is harmless: a second held copy (the replayer's inbox skips it), a
second dead letter (the dead-letter topic is at least once). But the next
owner may read them once the region is closed and the partition direct: it
applied them. A write dead-lettered as ``shed`` or ``expired`` -- by the
router, or by the replayer from its held copy -- ended applied (a dead letter
named an applied write), and a held write was applied after later writes of
its key that the replayer had applied from the held topic (issue 25, model
finding A).

So what the router diverts leaves a trace in ``rg.held.<region>[p]``, in
source order: a held copy names its source offset (``rg-source-offset``), and
a batch that dead-letters a write as ``shed`` or ``expired`` adds a *mark*
after its held copies: a fence (no value, ``rg-fence``, which the replayer,
the drain check and ``status`` already step over) that names the batch's last
offset of ``p``. At assignment a new owner reads the tail of ``held[p]``: the
last source offset named there, S. A lane handles a partition's records in
order, batch after batch, so S's batch being delivered means every record of
``p`` up to S was applied, held or dead-lettered. Records of ``p`` up to S are
committed without being handled again: a held one reaches the region through
the held topic only (in order with the records held after it), a
dead-lettered one is never applied.

Why not Kafka transactions (produce, then ``send_offsets_to_transaction``):
every batch commit would become a transaction on a transactional producer per
lane, the replayer and the tools would have to read ``read_committed``, and
the direct path's paced asynchronous commits would change, all for a window
only the divert path has. Why the held topic and not the dead-letter topic: a
dead letter goes to the partition of its key in a topic all regions share,
so finding an owner's last ones means reading the tail of every partition;
``held[p]`` is one partition, ordered like ``writes[p]``, and its end offset is
looked up at assignment anyway (:mod:`.switch`).

The scan is blocking (librdkafka calls): run it in a thread.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from ..core.held import H_FENCE, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC
from ..core.writes import Record

#: Records read at first from the end of a held partition; widened (x8) while none of them names a
#: source offset, up to ``MOST`` (the records after the last held copy or mark are fences, one per
#: restart or outage: a longer run of them is not expected).
TAIL = 64
MOST = 4096


class Handled:
    """Per partition, the offset below which an earlier owner handled every record (pure)."""

    def __init__(self) -> None:
        self.below: dict[int, int] = {}

    def assigned(self, p: int, last_source: int | None) -> None:
        if last_source is None:
            self.below.pop(p, None)
        else:
            self.below[p] = last_source + 1

    def revoked(self, p: int) -> None:
        self.below.pop(p, None)

    def covers(self, rec: Record) -> bool:
        return rec.offset < self.below.get(rec.partition, 0)


def mark_headers(instance: str, source_topic: str, p: int, offset: int) -> list[tuple[str, bytes]]:
    """A mark: a fence that also names the last source offset of ``p`` its batch handled."""
    return [(H_FENCE, instance.encode()), (H_SOURCE_TOPIC, source_topic.encode()),
            (H_SOURCE_PARTITION, str(p).encode()), (H_SOURCE_OFFSET, str(offset).encode())]


def source_offset(headers, source_topic: str, p: int) -> int | None:
    """The source offset a held record names, if it names one of ``source_topic[p]``."""
    h = dict(headers or [])
    try:
        if h.get(H_SOURCE_TOPIC) == source_topic.encode() and int(h[H_SOURCE_PARTITION]) == p:
            return int(h[H_SOURCE_OFFSET])
    except (KeyError, ValueError):
        return None
    return None


def last_sources(consumer: Consumer, held_topic: str, source_topic: str, ends: dict[int, tuple[int, int]],
                 *, exact: bool = True, timeout: float = 10.0) -> dict[int, int | None]:
    """For each held partition ``p`` (-> its ``(low, high)`` watermarks): the last source offset of
    ``source_topic[p]`` that a record of it names (None: none), read from its tail.

    A partition missing from the answer could not be read within ``timeout``. ``consumer`` is used
    through ``assign`` only: it must not be subscribed, and nothing is committed. ``exact``: the
    high watermarks are record positions (Apache Kafka); otherwise each partition is read until idle.
    """
    found: dict[int, int | None] = {}
    tail = TAIL
    todo = {p: lh for p, lh in ends.items() if lh[1] > lh[0]}
    found.update({p: None for p in ends if p not in todo})
    deadline = time.monotonic() + timeout
    while todo and time.monotonic() < deadline:
        starts = {p: max(low, high - tail) for p, (low, high) in todo.items()}
        last = _read(consumer, held_topic, source_topic, starts, {p: h for p, (_, h) in todo.items()},
                     exact=exact, deadline=deadline)
        for p in list(todo):
            if p not in last:
                continue  # not read to its end in time: unknown
            low, _high = todo[p]
            if last[p] is not None or starts[p] <= low or tail >= MOST:
                found[p] = last[p]
                del todo[p]
        tail *= 8
    return found


def _read(consumer: Consumer, topic: str, source_topic: str, starts: dict[int, int], highs: dict[int, int], *,
          exact: bool, deadline: float) -> dict[int, int | None]:
    last: dict[int, int | None] = {p: None for p in starts}
    reached: set[int] = set()
    done: dict[int, int | None] = {}
    consumer.assign([TopicPartition(topic, p, off) for p, off in starts.items()])
    try:
        while len(done) < len(starts) and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                if not exact:  # read to the end and idle: the watermark was no record position
                    done.update({p: last[p] for p in reached if p not in done})
                continue
            if msg.error() is not None:
                continue  # partition EOF or a transient fetch error: read on until the deadline
            p = msg.partition()
            if msg.topic() != topic or p not in starts or msg.offset() < starts[p] or p in done:
                continue  # e.g. a fetch for an earlier assignment of this consumer, answered late
            off = source_offset(msg.headers(), source_topic, p)
            if off is not None:
                last[p] = off if last[p] is None else max(last[p], off)
            if msg.offset() >= highs[p] - 1:
                reached.add(p)
                if exact:
                    done[p] = last[p]
    except KafkaException:
        pass
    finally:
        consumer.unassign()
    return done
