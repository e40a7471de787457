"""Follow a compacted "latest record per key" topic in a background thread: the one follower.

Every reader of ``<prefix>region-state`` and ``<prefix>features`` uses it: the
router, replayer, health and feature services (through
:class:`~regionguard_client.core.stateview.RegionStateView`), the operator commands,
and the client library's views (:mod:`regionguard_client.views`). It is a
confluent-kafka consumer that joins **no group** (it assigns every partition
from the beginning and never commits), so any number of them run without
rebalancing anybody, and each rebuilds the full picture from the compacted
topic on start.

* **Which record wins** per key: :mod:`regionguard_client.core.latest` (highest
  ``(epoch, seq)``; a heartbeat refreshes but is no change; a lower order wins
  only after the held record went stale, i.e. the publisher restarted without
  its history). Stale is judged by this follower's own monotonic clock
  (``clock``): the time since the held record or its heartbeat was received,
  never by comparing two publishers' ``at`` stamps (hosts' clocks differ).
  ``on_change(old, new)`` runs for every change.
* **Liveness**: every valid record proves the publisher alive;
  :meth:`last_heartbeat_age` is the age of the newest record's ``at`` (wall
  clock, capped at now, so a heartbeat read back from history is as old as it
  is, and a clock ahead of ours never makes the publisher look fresher).
  :meth:`staleness` and ``subscribe_stale`` turn it into stale/fresh.
* **Readiness** (:meth:`wait_ready`): every partition was read to its end,
  i.e. librdkafka reported partition EOF (``enable.partition.eof``) at or
  beyond the high watermark read at assignment. A service acts only on a ready
  view, never on a partial one. EOF comes from the fetch responses, so it is
  right on tansu too, whose ListOffsets watermark is wrong after multi-record
  batches (there the start watermark is merely too low; EOF still marks the
  true end). Not "a quiet while with no records": a publisher heartbeating
  faster than that would never let it be ready. ``quiet_s`` (default 0.2 s)
  then reads on a little before saying ready, so a view started next to a live
  publisher has a heartbeat published while it caught up, not only history,
  and its first answer about liveness is right; the region-state view sets it
  to 0 (a router must not wait longer than it has to). A missing topic is
  empty, so ready at once; it is looked up again until it exists.
* **Broker restarts**: librdkafka reconnects by itself. When every broker was
  down (``_ALL_BROKERS_DOWN``), or the topic disappeared, the topic is read
  again from the beginning once it answers: a memory-only broker (tansu in
  tests) comes back with empty topics whose offsets restart at 0, and our old
  position would silently skip the new records. Re-reading is harmless
  (older and equal records change nothing).
* **Errors never stop it**: an exception in a callback, or an invalid record,
  is reported (one WARNING line, ``regionguard_background_errors_total``) and
  skipped; an error of the thread itself restarts it with backoff
  (:mod:`regionguard_client.core.supervise`), with a new consumer that reads the
  topic again from the beginning.

Callbacks run on the follower's thread; keep them short and thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from pydantic import BaseModel, ValidationError

from .config import Config
from .flags import is_stale
from .latest import Verdict, at_seconds, verdict
from .log import rdkafka_log
from .supervise import supervised, swallowed

log = logging.getLogger("regionguard.core.follower")  # its name before the move (loggers stay in the regionguard tree)

__all__ = ["CompactedFollower", "StaleViewError"]

M = TypeVar("M", bound=BaseModel)
ChangeCallback = Callable[[M | None, M], None]
StaleCallback = Callable[[bool], None]

_MISSING_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}


class StaleViewError(RuntimeError):
    """The view's publisher stopped heartbeating; its answers may be out of date."""

    def __init__(self, what: str, age: float | None, stale_after_s: float):
        age_s = "never seen" if age is None else f"last seen {age:.1f}s ago"
        super().__init__(f"{what} is stale: heartbeats {age_s} (stale after {stale_after_s:g}s)")
        self.age, self.stale_after_s = age, stale_after_s


class CompactedFollower(Generic[M]):
    """Latest ``model`` record per key of ``topic``, kept current in the background."""

    def __init__(self, cfg: Config, topic: str, model: type[M], *,
                 key: Callable[[M], str] = lambda r: r.region,  # type: ignore[attr-defined]
                 on_change: ChangeCallback | None = None, stale_after_s: float | None = None,
                 name: str | None = None, component: str | None = None,
                 quiet_s: float = 0.2, poll_s: float = 0.05, clock: Callable[[], float] = time.monotonic,
                 admit: Callable[[M], bool] | None = None) -> None:
        self.cfg, self.topic, self.model, self._key = cfg, topic, model, key
        self._admit = admit  # refuses a record before the ordering rule sees it (core/stategate.py)
        self._clock = clock  # when a held record was received (its staleness against a lower one)
        self.stale_after_s = stale_after_s if stale_after_s is not None else cfg.health.stale_after_s
        self.name = name or topic
        self.component = component or f"follower:{self.name}"  # a metric label: keep the set small
        self._quiet_s, self._poll_s = quiet_s, poll_s
        self._latest: dict[str, M] = {}
        self._received: dict[str, float] = {}  # key -> self._clock() when its held record was last kept
        self._lock = threading.Lock()
        self._callbacks: list[ChangeCallback] = [on_change] if on_change else []
        self._stale_callbacks: list[StaleCallback] = []
        self._last_stale: bool | None = None
        self._newest_at: float | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._rewind = threading.Event()  # every broker was down: read again from the beginning
        self._thread: threading.Thread | None = None
        self._started_at: float | None = None
        self.records = 0  # valid records read (for logs, tests and benchmarks)
        self.ready_after_s: float | None = None  # start -> read to the end

    # -- lifecycle -------------------------------------------------------------------
    def start(self):
        if self._thread is None:
            self._stop.clear()
            self._started_at = time.monotonic()
            self._thread = threading.Thread(target=supervised, args=(self.component, self._run, self._stop),
                                            kwargs={"logger": log}, name=f"rg-follow-{self.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
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
        return None if newest is None else max(0.0, time.time() - newest)

    def uptime(self) -> float | None:
        return None if self._started_at is None else time.monotonic() - self._started_at

    def staleness(self) -> bool | None:
        """True stale, False fresh, None undecided (just started, nothing seen yet)."""
        return is_stale(self.last_heartbeat_age(), self.stale_after_s, uptime_s=self.uptime() or 0.0)

    def is_stale(self) -> bool:
        """True when the publisher's heartbeats stopped for ``stale_after_s``."""
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
        """Call ``fn(old, new)`` on every change of a key; returns an unsubscribe function."""
        self._callbacks.append(fn)
        return lambda: self._callbacks.remove(fn) if fn in self._callbacks else None

    def subscribe_stale(self, fn: StaleCallback) -> Callable[[], None]:
        """Call ``fn(True)`` when heartbeats stop, ``fn(False)`` when they resume."""
        self._stale_callbacks.append(fn)
        return lambda: self._stale_callbacks.remove(fn) if fn in self._stale_callbacks else None

    # -- the thread ------------------------------------------------------------------
    def _consumer(self) -> Consumer:
        # group.id is mandatory in librdkafka even for assign(); this group never joins
        # (no subscribe) and never commits.
        return Consumer(self.cfg.kafka_client_conf(**{
            "group.id": f"{self.cfg.kafka.topic_prefix}view-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,  # readiness: see the module docstring
            "fetch.wait.max.ms": 10,  # a state change reaches the router within a fetch round
            "socket.keepalive.enable": True,
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 2000,  # a topic that disappeared is noticed soon
            "logger": rdkafka_log,
            "error_cb": self._on_error,
        }))

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._rewind.set()

    def _assign(self, consumer: Consumer) -> dict[int, int] | None:
        """Assign every partition from the beginning; return {partition: high watermark now}.

        None when the topic can't be assigned yet; a topic the broker says does not
        exist is empty, so the follower is ready (it keeps looking for it).
        """
        try:
            md = consumer.list_topics(self.topic, timeout=2.0)
        except KafkaException as exc:  # broker down: try again later
            log.debug("%s: metadata for %s failed: %s", self.name, self.topic, exc)
            return None
        tmd = md.topics.get(self.topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            if tmd is None or (tmd.error is not None and tmd.error.code() in _MISSING_TOPIC):
                self._set_ready()
            return None
        highs: dict[int, int] = {}
        for p in sorted(tmd.partitions):
            try:
                _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=2.0)
            except KafkaException as exc:  # unknown end: never "ready" on a guess, look again soon
                log.debug("%s: watermark of %s[%d] failed: %s", self.name, self.topic, p, exc)
                return None
            highs[p] = max(0, high)
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in highs])
        return highs

    def _broker_back(self, consumer: Consumer) -> bool:
        try:
            consumer.list_topics(self.topic, timeout=1.0)
            return True
        except KafkaException:  # still down: ask again next round
            return False

    def _set_ready(self) -> None:
        if not self._ready.is_set():
            self.ready_after_s = time.monotonic() - (self._started_at or time.monotonic())
            log.info("%s: read %s to its end (%d records) in %.2fs", self.name, self.topic, self.records,
                     self.ready_after_s)
            self._ready.set()

    def _run(self) -> None:
        consumer = self._consumer()
        targets: dict[int, int] | None = None  # partition -> high watermark at assignment
        reached: set[int] = set()
        reached_at: float | None = None
        quiet_since = time.monotonic()
        next_assign = 0.0
        try:
            while not self._stop.is_set():
                if self._rewind.is_set() and targets is not None and self._broker_back(consumer):
                    self._rewind.clear()
                    log.info("%s: brokers were down; reading %s again from the beginning", self.name, self.topic)
                    targets, next_assign = None, 0.0
                if targets is None:
                    if time.monotonic() >= next_assign:
                        targets = self._assign(consumer)
                        next_assign = time.monotonic() + 0.5
                        if targets is not None:
                            reached = {p for p, high in targets.items() if high <= 0}
                            reached_at, quiet_since = None, time.monotonic()
                    if targets is None:
                        self._check_stale()
                        self._stop.wait(0.1)
                        continue
                msgs = consumer.consume(500, self._poll_s)
                self._check_stale()
                for msg in msgs:
                    err = msg.error()
                    if err is None:
                        quiet_since = time.monotonic()
                        try:
                            # below the end seen at assignment: history read (again), never a restart
                            self._handle(msg.value(), history=msg.offset() < targets.get(msg.partition(), 0))
                        except Exception as exc:  # noqa: BLE001 - a poison record: reported, skipped
                            swallowed(self.component, exc, logger=log,
                                      what=f"record {self.topic}[{msg.partition()}]@{msg.offset()}")
                    elif err.code() == KafkaError._PARTITION_EOF:
                        if msg.partition() in targets and msg.offset() >= targets[msg.partition()]:
                            reached.add(msg.partition())
                    elif err.code() in _MISSING_TOPIC:
                        log.info("%s: topic %s gone; reading it again once it is back", self.name, self.topic)
                        consumer.unassign()
                        targets, next_assign = None, time.monotonic() + 0.5
                        break
                    else:
                        log.debug("%s: consumer error %s", self.name, err)
                if targets is not None and not self._ready.is_set() and len(reached) == len(targets):
                    now = time.monotonic()
                    reached_at = reached_at if reached_at is not None else now
                    if now - reached_at >= self._quiet_s or (not msgs and now - quiet_since >= self._quiet_s):
                        self._set_ready()
        finally:  # an error goes on to supervised(): reported, then the thread starts over
            try:
                consumer.close()
            except Exception as exc:  # noqa: BLE001 - reported; the consumer is dropped either way
                swallowed(self.component, exc, what="closing the consumer", logger=log)

    def _handle(self, value: bytes | None, *, history: bool = False) -> None:
        if not value:
            return  # a tombstone
        try:
            new = self.model.model_validate_json(value)
        except ValidationError as exc:  # a bad record must not stop the follower: reported, skipped
            swallowed(self.component, exc, logger=log,
                      what=f"ignoring an invalid record on {self.topic}: {exc.errors()[0].get('msg')}; reading it")
            return
        self.records += 1
        if self._admit is not None and not self._admit(new):
            return  # refused (logged and counted by the check): as if never published
        at = at_seconds(new)
        if at is not None:
            seen = min(at, time.time())
            if self._newest_at is None or seen > self._newest_at:
                self._newest_at = seen
        key = self._key(new)
        now = self._clock()
        with self._lock:
            old = self._latest.get(key)
            received = self._received.get(key)
            # a record read back from history is no news of a restart, however long ago the held one came
            # (a view re-reading the topic after a broker outage holds the newest record of a silent leader)
            age = None if received is None or history else now - received
            v = verdict(old, new, self.stale_after_s, age)
            if not v.keep:
                return
            self._latest[key] = new
            if received is None or not history:  # a replayed copy proves nobody alive
                self._received[key] = now
        if v is Verdict.RESTART:
            log.info("%s: %s went back from %s to %s after the held record went stale: the publisher restarted",
                     self.name, key, _order_text(old), _order_text(new))
        if v.changed:
            for fn in list(self._callbacks):
                try:
                    fn(old, new)
                except Exception as exc:  # noqa: BLE001 - reported; the follower goes on
                    swallowed(self.component, exc, what=f"change callback for {key}", logger=log)

    def _check_stale(self) -> None:
        s = self.staleness()
        if s is None or s == self._last_stale:
            return
        first, self._last_stale = self._last_stale is None, s
        if first and not s:
            return  # starting fresh is not news
        for fn in list(self._stale_callbacks):
            try:
                fn(s)
            except Exception as exc:  # noqa: BLE001 - reported; the follower goes on
                swallowed(self.component, exc, what="stale callback", logger=log)


def _order_text(record: BaseModel | None) -> str:
    return "nothing" if record is None else f"epoch {getattr(record, 'epoch', 0)} seq {record.seq}"  # type: ignore[attr-defined]
