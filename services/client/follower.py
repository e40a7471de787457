"""Follow a compacted "latest record per key" topic in a background thread.

Used for ``<prefix>features`` (and usable for ``<prefix>region-state``): a
confluent-kafka consumer with no consumer group (it never commits; every
process reads the whole compacted topic from the beginning), so a new or
restarted process starts from the latest record of every key within one
fetch round instead of waiting ~3-30 s for a group to form.

Rules, shared by every view:

* records carry ``seq`` (increasing per key), region states also the health leader's
  ``epoch``, compared first; a record with a lower ``(epoch, seq)`` is
  ignored, unless the one we hold is older than ``stale_after_s`` than it
  (by the records' ``at``): then the publisher restarted without its history
  (e.g. a broker that lost its data) and the new sequence wins;
* a record with the same seq (a heartbeat) refreshes liveness but is not a change;
* every record proves the publisher alive: :meth:`last_heartbeat_age` is the
  age of the newest record's ``at`` (wall clock, so a heartbeat read back
  from history is as old as it really is);
* broker restarts are survived: librdkafka reconnects on its own; when the
  topic disappears (an in-memory broker lost it) the follower re-assigns
  once it exists again and reads it from the beginning.

Callbacks run on the follower's thread; keep them short and thread-safe. An
exception in a callback, or an invalid record, is reported (one WARNING line,
``regionguard_background_errors_total``) and the follower goes on; an error of
the thread itself restarts it with backoff (:mod:`regionguard.core.supervise`)
with a new consumer that reads the topic again from the beginning.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import BaseModel, ValidationError

from ..core.config import Config
from ..core.flags import is_stale
from ..core.stateview import rdkafka_log
from ..core.supervise import supervised, swallowed

log = logging.getLogger(__name__)


M = TypeVar("M", bound=BaseModel)
ChangeCallback = Callable[[M | None, M], None]
StaleCallback = Callable[[bool], None]

_MISSING_TOPIC = {
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._UNKNOWN_TOPIC,
    KafkaError._UNKNOWN_PARTITION,
}



def _order(rec: Any) -> tuple[int, int]:
    """``(epoch, seq)``: a deposed health leader's records (lower epoch) never win."""
    return (getattr(rec, "epoch", 0), rec.seq)

class StaleViewError(RuntimeError):
    """The view's publisher stopped heartbeating; its answers may be out of date."""

    def __init__(self, what: str, age: float | None, stale_after_s: float):
        age_s = "never seen" if age is None else f"last seen {age:.1f}s ago"
        super().__init__(f"{what} is stale: heartbeats {age_s} (stale after {stale_after_s:g}s)")
        self.age, self.stale_after_s = age, stale_after_s


def _at(record: BaseModel) -> float:
    at = getattr(record, "at", None)
    return at.timestamp() if isinstance(at, datetime) else 0.0


class CompactedFollower(Generic[M]):
    """Latest ``model`` record per key of ``topic``, kept current in the background."""

    # Reading goes on this long after the end was reached before the view says ready, so
    # a view started next to a live publisher has its newest heartbeat, not only history.
    QUIET_S = 0.2

    def __init__(
        self,
        cfg: Config,
        topic: str,
        model: type[M],
        *,
        key: Callable[[M], str] = lambda r: r.region,  # type: ignore[attr-defined]
        on_change: ChangeCallback | None = None,
        stale_after_s: float | None = None,
        name: str | None = None,
        poll_s: float = 0.1,
    ) -> None:
        self.cfg = cfg
        self.topic = topic
        self.model = model
        self._key = key
        self.stale_after_s = stale_after_s if stale_after_s is not None else cfg.health.stale_after_s
        self.name = name or topic
        self._poll_s = poll_s
        self._latest: dict[str, M] = {}
        self._lock = threading.Lock()
        self._callbacks: list[ChangeCallback] = [on_change] if on_change else []
        self._stale_callbacks: list[StaleCallback] = []
        self._newest_at: float | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self._last_stale: bool | None = None
        self.records_seen = 0
        self.reassignments = 0
        self.ready_after_s: float | None = None  # start -> read to the end (for logs, tests, benchmarks)

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> "CompactedFollower[M]":
        if self._thread is not None:
            return self
        self._stop.clear()
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=supervised, args=(f"follower:{self.name}", self._run, self._stop),
                                        kwargs={"logger": log}, name=f"rg-follow-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self, timeout: float) -> bool:
        """Block until the topic was read to its end once (True) or ``timeout`` passed."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # -- reads -----------------------------------------------------------------------
    def get(self, key: str) -> M | None:
        with self._lock:
            return self._latest.get(key)

    def snapshot(self) -> dict[str, M]:
        with self._lock:
            return dict(self._latest)

    def last_heartbeat_age(self) -> float | None:
        """Seconds since the newest record's ``at``; None if no record was ever seen."""
        newest = self._newest_at
        if newest is None:
            return None
        return max(0.0, time.time() - newest)

    def uptime(self) -> float | None:
        return None if self._started_at is None else time.monotonic() - self._started_at

    def staleness(self) -> bool | None:
        """True stale, False fresh, None undecided (just started, nothing seen yet)."""
        return is_stale(self.last_heartbeat_age(), self.stale_after_s, uptime_s=self.uptime() or 0.0)

    def is_stale(self) -> bool:
        return bool(self.staleness())

    @property
    def stale(self) -> bool:
        return self.is_stale()

    def require_fresh(self) -> None:
        """Raise :class:`StaleViewError` when heartbeats stopped."""
        if self.is_stale():
            raise StaleViewError(self.name, self.last_heartbeat_age(), self.stale_after_s)

    # -- callbacks -------------------------------------------------------------------
    def subscribe(self, fn: ChangeCallback) -> Callable[[], None]:
        """Call ``fn(old, new)`` on every new seq of a key; returns an unsubscribe function."""
        self._callbacks.append(fn)
        return lambda: self._callbacks.remove(fn) if fn in self._callbacks else None

    def subscribe_stale(self, fn: StaleCallback) -> Callable[[], None]:
        """Call ``fn(stale)`` whenever the view turns stale or fresh again."""
        self._stale_callbacks.append(fn)
        return lambda: self._stale_callbacks.remove(fn) if fn in self._stale_callbacks else None

    # -- the thread ------------------------------------------------------------------
    def _consumer(self) -> Consumer:
        conf = self.cfg.kafka_client_conf(
            **{
                "group.id": f"{self.cfg.kafka.topic_prefix}view-{uuid.uuid4().hex[:12]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 50,
                "reconnect.backoff.ms": 100,
                "reconnect.backoff.max.ms": 1000,
                "topic.metadata.refresh.interval.ms": 2000,
                "logger": rdkafka_log,
            }
        )
        return Consumer(conf)

    def _assign(self, consumer: Consumer, positions: dict[int, int]) -> dict[int, int] | None:
        """Assign every partition; return {partition: high watermark at start} or None (no topic yet)."""
        try:
            md = consumer.list_topics(self.topic, timeout=2.0)
        except KafkaException as exc:  # broker down: try again later
            log.debug("%s: metadata failed: %s", self.name, exc)
            return None
        tmd = md.topics.get(self.topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            if tmd is None or (tmd.error is not None and tmd.error.code() in _MISSING_TOPIC):
                self._ready.set()  # no topic (yet): nothing to read, the (empty) view is caught up
            return None
        parts = sorted(tmd.partitions)
        highs: dict[int, int] = {}
        for p in parts:
            try:
                _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=2.0)
            except KafkaException as exc:  # unknown end: never "ready" on a guess, look again soon
                log.debug("%s: watermark of partition %d failed: %s", self.name, p, exc)
                return None
            highs[p] = max(0, high)
        consumer.assign([TopicPartition(self.topic, p, positions.get(p, OFFSET_BEGINNING)) for p in parts])
        self.reassignments += 1
        return highs

    def _run(self) -> None:
        # Ready = every partition read to its end: librdkafka's partition EOF at or beyond
        # the high watermark seen at assignment. Not the watermark alone: tansu's
        # ListOffsets under-reports it after multi-record batches, while EOF (from the
        # fetch responses) marks the true end there too. Not "a quiet while with no
        # records": a publisher heartbeating faster than that would never let it be ready.
        consumer = self._consumer()
        positions: dict[int, int] = {}
        targets: dict[int, int] | None = None
        reached: set[int] = set()
        quiet_since = time.monotonic()
        all_reached_at: float | None = None
        next_assign = 0.0
        try:
            while not self._stop.is_set():
                if targets is None:
                    if time.monotonic() >= next_assign:
                        targets = self._assign(consumer, positions)
                        next_assign = time.monotonic() + 0.5
                        if targets is not None:
                            reached = {p for p, h in targets.items() if h <= positions.get(p, 0)}
                            quiet_since = time.monotonic()
                            all_reached_at = None
                    if targets is None:
                        self._check_stale()
                        self._stop.wait(0.1)
                        continue
                msgs = consumer.consume(500, self._poll_s)
                self._check_stale()
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        code = err.code()
                        if code == KafkaError._PARTITION_EOF:
                            p = msg.partition()
                            positions[p] = max(positions.get(p, 0), msg.offset())
                            if p in targets and msg.offset() >= targets[p]:
                                reached.add(p)
                        elif code in _MISSING_TOPIC:
                            log.info("%s: topic %s gone; waiting for it to come back", self.name, self.topic)
                            consumer.unassign()
                            positions.clear()  # a re-created topic starts again at offset 0
                            targets, next_assign = None, time.monotonic() + 0.5
                            break
                        else:
                            log.debug("%s: consumer error %s", self.name, err)
                        continue
                    quiet_since = time.monotonic()
                    positions[msg.partition()] = msg.offset() + 1
                    try:
                        self._handle(msg.value())
                    except Exception as exc:  # noqa: BLE001 - a poison record: reported, skipped
                        swallowed(f"follower:{self.name}", exc,
                                  what=f"record {self.topic}[{msg.partition()}]@{msg.offset()}", logger=log)
                if targets is not None and not self._ready.is_set() and len(reached) == len(targets):
                    now = time.monotonic()
                    if all_reached_at is None:
                        all_reached_at = now
                    if now - all_reached_at >= self.QUIET_S or (not msgs and now - quiet_since >= self.QUIET_S):
                        self.ready_after_s = now - (self._started_at or now)
                        self._ready.set()
        finally:  # an error goes on to supervised(): reported, then the thread starts over
            try:
                consumer.close()
            except Exception as exc:  # noqa: BLE001 - reported; the consumer is dropped either way
                swallowed(f"follower:{self.name}", exc, what="closing the consumer", logger=log)

    def _handle(self, value: bytes | None) -> None:
        if not value:
            return
        try:
            rec = self.model.model_validate_json(value)
        except ValidationError as exc:  # a bad record must not stop the view: reported, skipped
            swallowed(f"follower:{self.name}", exc, what=f"ignoring an invalid record: {exc.errors()[0].get('msg')}; "
                      "reading it", logger=log)
            return
        self.records_seen += 1
        at = _at(rec)
        if self._newest_at is None or at > self._newest_at:
            self._newest_at = at
        k = self._key(rec)
        with self._lock:
            old = self._latest.get(k)
            if old is None or _order(rec) > _order(old):
                changed = True
            elif _order(rec) == _order(old):
                changed = False  # a heartbeat of the same state
            elif at - _at(old) > self.stale_after_s:
                log.info("%s: %s seq went back %s -> %s: publisher restarted", self.name, k, old.seq, rec.seq)  # type: ignore[attr-defined]
                changed = True
            else:
                return
            self._latest[k] = rec
        if changed:
            for fn in list(self._callbacks):
                try:
                    fn(old, rec)
                except Exception as exc:  # noqa: BLE001 - reported; the follower goes on
                    swallowed(f"follower:{self.name}", exc, what=f"change callback {getattr(fn, '__name__', fn)!s}",
                              logger=log)

    def _check_stale(self) -> None:
        s = self.staleness()
        if s is None or s == self._last_stale:
            return
        first = self._last_stale is None
        self._last_stale = s
        if first and not s:
            return  # starting fresh is not news
        for fn in list(self._stale_callbacks):
            try:
                fn(s)
            except Exception as exc:  # noqa: BLE001 - reported; the follower goes on
                swallowed(f"follower:{self.name}", exc, what="stale callback", logger=log)
