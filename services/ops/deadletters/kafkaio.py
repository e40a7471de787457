"""Reading the topics a redrive needs: the dead letters, single records by offset, a target's tail.

Every reader reads committed records only and never commits: the redrive's one
consumer group is committed by its transactional producer (:mod:`.redrive`).
Reads stop at the end the partition had when they started. Where the broker's
high watermarks are inexact (tansu: the last batch's base offset + 1) they also
read on until a short quiet spell, so no record acknowledged before is missed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from ...core.config import Config, UsageError
from ...core.kafka import watermarks_exact

QUIET_S = 0.5      # inexact watermarks: the partition counts as read after this long without news
TIMEOUT_S = 60.0   # one read of a partition range gives up after this long (a one-line error)


def reader(cfg: Config, group: str | None = None, **extra: Any) -> Consumer:
    """A consumer that reads committed records and never commits (``group`` only names whose offsets it reads)."""
    return Consumer(cfg.kafka_client_conf(**{
        "group.id": group or f"{cfg.kafka.topic_prefix}redrive-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 50,
        "log_level": 0,
        **extra,
    }))


def connect(cfg: Config, topic: str, *, timeout: float = 10.0) -> tuple[list[int], bool]:
    """Partitions of ``topic`` and whether watermarks are exact; a one-line UsageError if the broker is unreachable."""
    admin = AdminClient(cfg.kafka_client_conf(**{"log_level": 0, "socket.connection.setup.timeout.ms": int(timeout * 1000)}))
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise UsageError(f"cannot reach the Kafka broker at {cfg.kafka.bootstrap}: {_why(exc)}") from None
    t = md.topics.get(topic)
    if t is None or t.error is not None:
        raise UsageError(f"topic {topic} does not exist on {cfg.kafka.bootstrap} (no dead letters were ever written "
                         "with this config's kafka.topic_prefix)")
    return sorted(t.partitions), watermarks_exact(md.cluster_id)


def _why(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return err.str()
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def watermarks(c: Consumer, topic: str, partition: int) -> tuple[int, int]:
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    except KafkaException as exc:
        raise UsageError(f"{topic}[{partition}]: cannot read its offsets: {_why(exc)}") from None


def read_range(c: Consumer, topic: str, partition: int, start: int, *, exact: bool,
               end: int | None = None) -> Iterator[Any]:
    """Records of ``topic[partition]`` from ``start`` up to the end it has now (or ``end``), in order."""
    low, high = watermarks(c, topic, partition)
    stop = high if end is None else min(end, high) if exact else end
    start = max(start, low)
    if exact and start >= stop:
        return
    c.assign([TopicPartition(topic, partition, start)])
    pos, last_news, deadline = start, time.monotonic(), time.monotonic() + TIMEOUT_S
    eof = False
    try:
        while True:
            if time.monotonic() > deadline:
                raise UsageError(f"{topic}[{partition}]: not read to offset {stop} in {TIMEOUT_S:.0f} s (at {pos})")
            msg = c.poll(0.1)
            if msg is None:
                if not exact and (eof or pos >= stop) and time.monotonic() - last_news >= QUIET_S:
                    return
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    eof = True
                    pos = max(pos, msg.offset())
                    if exact and pos >= stop:
                        return
                    continue
                if err.fatal() or not err.retriable():
                    raise UsageError(f"{topic}[{partition}]: {err.str()}")
                continue
            last_news = time.monotonic()
            if end is not None and msg.offset() >= end:
                return
            if exact and msg.offset() >= stop:
                return
            pos = msg.offset() + 1
            yield msg
            if exact and pos >= stop:
                return
    finally:
        c.unassign()


def fetch_headers(c: Consumer, wanted: Iterable[tuple[str, int, int]], *,
                  exact: bool) -> dict[tuple[str, int, int], list[tuple[str, bytes]] | None]:
    """Headers of the records at these (topic, partition, offset); None for one no longer (or not) there."""
    return _fetch(c, wanted, exact=exact, take=lambda msg: list(msg.headers() or []))


def fetch_values(c: Consumer, wanted: Iterable[tuple[str, int, int]], *,
                 exact: bool) -> dict[tuple[str, int, int], bytes | None]:
    """Values of the records at these (topic, partition, offset); None for one no longer (or not) there."""
    return _fetch(c, wanted, exact=exact, take=lambda msg: msg.value() or b"")


def _fetch(c: Consumer, wanted: Iterable[tuple[str, int, int]], *, exact: bool,
           take: Callable[[Any], Any]) -> dict[tuple[str, int, int], Any]:
    """``take(record)`` of the records at these offsets; None for one no longer (or not) there.

    Offsets of one partition are read in order; a gap of more than ``GAP`` records is jumped by seeking.
    """
    GAP = 2000
    out: dict[tuple[str, int, int], Any] = {}
    by_tp: dict[tuple[str, int], list[int]] = {}
    for topic, part, off in set(wanted):
        by_tp.setdefault((topic, part), []).append(off)
    for (topic, part), offsets in by_tp.items():
        offsets.sort()
        i = 0
        while i < len(offsets):
            # one sequential read covers the offsets from offsets[i] while the gaps stay small
            j = i
            while j + 1 < len(offsets) and offsets[j + 1] - offsets[j] <= GAP:
                j += 1
            want = set(offsets[i:j + 1])
            for msg in read_range(c, topic, part, offsets[i], exact=exact, end=offsets[j] + 1):
                if msg.offset() in want:
                    out[(topic, part, msg.offset())] = take(msg)
            for off in want:
                out.setdefault((topic, part, off), None)
            i = j + 1
    return out


def first_offset_after(c: Consumer, topic: str, partition: int, at_ms: int) -> int:
    """The first offset of a record timestamped at or after ``at_ms`` (0 when the broker can't tell)."""
    try:
        [tp] = c.offsets_for_times([TopicPartition(topic, partition, max(0, at_ms))], timeout=10)
    except KafkaException as exc:
        raise UsageError(f"{topic}[{partition}]: cannot look up offsets by time: {_why(exc)}") from None
    if tp.error is not None:
        return 0
    if tp.offset < 0:  # no record that new: start at the end
        return watermarks(c, topic, partition)[1]
    return tp.offset
