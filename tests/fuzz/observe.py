"""What the fuzzer reads back from the real system: offsets, dead letters, held headers, the database.

Everything here is an observation of Kafka or PostgreSQL (never a service's log), handed to the
pure :func:`tests.fuzz.verdict.judge`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable

from confluent_kafka import Consumer, Producer, TopicPartition

from regionguard.core.held import H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC
from regionguard.core.kafka import producer_conf

from .stream import LONG_NOTE, FuzzRecord


def produce(bootstrap: str, topic: str, records: Iterable[FuzzRecord]) -> dict[int, tuple[int, int]]:
    """Produce in order, one idempotent producer; record index -> (partition, offset) Kafka confirmed."""
    p = Producer(producer_conf(bootstrap, **{"linger.ms": 5, "message.max.bytes": 1_000_000}))
    where: dict[int, tuple[int, int]] = {}
    errors: list[str] = []

    def confirmed(index: int):
        def cb(err, msg) -> None:
            if err is not None:
                errors.append(f"record {index}: {err}")
            else:
                where[index] = (msg.partition(), msg.offset())
        return cb

    for r in records:
        kw: dict[str, Any] = {"key": r.made.key, "value": r.made.value, "on_delivery": confirmed(r.index)}
        if r.made.headers:
            kw["headers"] = list(r.made.headers)
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(60) == 0, "produce not confirmed"
    assert not errors, errors[:5]
    return where


def _consumer(bootstrap: str, group: str | None = None) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group or f"rg-fuzz-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "enable.partition.eof": False, "log_level": 0})


def ends(bootstrap: str, topic: str) -> dict[int, int]:
    c = _consumer(bootstrap)
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1] for p in parts}
    finally:
        c.close()


def committed(bootstrap: str, group: str, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    c = _consumer(bootstrap, group)
    try:
        tps = c.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in tps}
    finally:
        c.close()


def read_all(bootstrap: str, topic: str, timeout: float = 120.0) -> list:
    """Every record of ``topic`` up to its end now."""
    c = _consumer(bootstrap)
    try:
        want = {p: e for p, e in ends(bootstrap, topic).items() if e > 0}
        c.assign([TopicPartition(topic, p, 0) for p in want])
        out: list = []
        deadline = time.monotonic() + timeout
        while want:
            assert time.monotonic() < deadline, f"{topic}: not read to the end in {timeout}s"
            for m in c.consume(1000, 0.2):
                if m.error() is None and m.partition() in want and m.offset() < want[m.partition()]:
                    out.append(m)
                    if m.offset() + 1 >= want[m.partition()]:
                        del want[m.partition()]
    finally:
        c.close()
    return out


@dataclass(frozen=True)
class DeadLetterSeen:
    topic: str
    partition: int
    offset: int
    reason: str
    detail: str


def dead_letters(bootstrap: str, topic: str) -> list[DeadLetterSeen]:
    out = []
    for m in read_all(bootstrap, topic):
        d = json.loads(m.value())
        out.append(DeadLetterSeen(d.get("topic", ""), d.get("partition", -1), d.get("offset", -1),
                                  str(d.get("reason")), str(d.get("detail", ""))[:200]))
    return out


def held_sources(bootstrap: str, held_topic: str) -> dict[tuple[int, int], tuple[str, int, int]]:
    """(partition, offset) of each held copy -> the (topic, partition, offset) it was diverted from."""
    out = {}
    for m in read_all(bootstrap, held_topic):
        h = {k: v for k, v in (m.headers() or [])}
        if H_SOURCE_OFFSET in h:
            out[(m.partition(), m.offset())] = (h[H_SOURCE_TOPIC].decode(), int(h[H_SOURCE_PARTITION]),
                                                int(h[H_SOURCE_OFFSET]))
    return out


@dataclass
class Tables:
    inbox: set[str]
    effects: list[tuple[int, int, str]]             # (entity, seq, wid) in commit order
    rows: dict[int, tuple[int, str | None, str]]    # entity -> (seq, note, wid)


def tables(lr: Any, region: str) -> Tables:
    inbox = {r["w"] for r in lr.fetch(region, "SELECT write_id::text AS w FROM regionguard_applied")}
    effects = [(r["id"], r["seq"], r["wid"]) for r in lr.fetch(region, "SELECT id, seq, wid FROM fz_effects ORDER BY n")]
    rows = {r["id"]: (r["seq"], r["note"], r["wid"]) for r in lr.fetch(region, f"""
        SELECT id, seq, wid, CASE WHEN length(note) > {LONG_NOTE}
                                  THEN 'sha256:' || encode(sha256(convert_to(note, 'UTF8')), 'hex')
                                  ELSE note END AS note FROM fz""")}
    return Tables(inbox, effects, rows)


@dataclass
class PauseWatch:
    """Polls a consumer group's committed offsets against the topic's ends in a thread.

    A partition is paused while its committed offset is behind the end and has not moved; the
    longest such spell, while armed, is :attr:`max_pause_s` (disarmed while a region is taken down
    or brought back, where waiting is the contract).
    """

    bootstrap: str
    group: str
    topic: str
    interval: float = 0.2
    max_pause_s: float = 0.0
    worst: str = ""
    armed: bool = True
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "PauseWatch":
        self._thread = threading.Thread(target=self._run, name="pause-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def arm(self, on: bool) -> None:
        self.armed = on

    def _run(self) -> None:
        c = _consumer(self.bootstrap, self.group)
        try:
            parts = sorted(c.list_topics(self.topic, timeout=10).topics[self.topic].partitions)
            tps = [TopicPartition(self.topic, p) for p in parts]
            last: dict[int, tuple[int, float]] = {}
            while not self._stop.wait(self.interval):
                now = time.monotonic()
                try:
                    done = {tp.partition: max(tp.offset, 0) for tp in c.committed(tps, timeout=5)}
                    end = {p: c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5, cached=False)[1]
                           for p in parts}
                except Exception:  # noqa: BLE001 - a slow broker answer is no pause; the next poll decides
                    continue
                for p in parts:
                    seen = last.get(p)
                    if seen is None or done[p] != seen[0] or done[p] >= end[p] or not self.armed:
                        last[p] = (done[p], now)
                    elif now - seen[1] > self.max_pause_s:
                        self.max_pause_s = now - seen[1]
                        since = time.strftime("%H:%M:%S", time.localtime(time.time() - (now - seen[1])))
                        self.worst = f"partition {p} stuck at {done[p]} (end {end[p]}) from {since}"
        finally:
            c.close()
