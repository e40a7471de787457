"""A live, read-only view of ``<prefix>region-state`` for any process that needs it.

Used by the router, replayer, features service, client library and the health
service itself. A daemon thread runs a confluent-kafka consumer that joins
**no group** (it assigns every partition from the beginning and never
commits), so any number of views can run without rebalancing anybody, and
each one rebuilds the full picture from the compacted topic on start.

Rules (DESIGN.md, RegionState):

- per region, the record with the highest ``seq`` wins; older ``seq`` is
  ignored (a heartbeat repeats the current ``seq``; it refreshes the record
  but is not a change);
- a region with no known state counts as closed (:meth:`is_closed`);
- :meth:`last_heartbeat_age` tells a live health service from a dead one.

``on_change(old, new)`` runs on the view's thread for every new ``seq`` of a
region (``old`` is None the first time); an exception in it is reported
(one WARNING line, ``regionguard_background_errors_total``) and the view goes on.
An error of the thread itself restarts it with backoff (:mod:`.supervise`): it
builds a new consumer and reads the topic again from the beginning.

Broker restarts: librdkafka reconnects by itself. When every broker was
down (librdkafka's ``_ALL_BROKERS_DOWN``), the view re-reads the topic from
the beginning once a broker answers again: a memory-only broker (tansu in
tests) comes back with empty topics whose offsets restart at 0, and our old
position would silently skip the new records. Re-reading a compacted topic
is cheap and harmless (older and equal ``seq`` change nothing). A missing
topic is treated as empty and looked up again.

Readiness (:meth:`wait_ready`): the view is ready once every partition was
read to its end, i.e. librdkafka reported partition EOF (``enable.partition.eof``)
at or beyond the high watermark read at start. A service acts only on a ready
view (the router routes nothing before), never on a partial one. EOF comes from
the fetch responses, so it is right on tansu too, whose ListOffsets watermark is
wrong after multi-record batches (last batch base offset + 1): there the start
watermark is merely too low, and EOF still marks the true end (measured).
``quiet_s`` (default 0) adds a pause with no records after that, for callers
that want one. The topic is compacted (``kafka.topics``), so the end is about
one record per region plus the uncompacted active segment, whatever the uptime.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import timezone
from typing import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from .config import Config
from .models import RegionState, State
from .supervise import supervised, swallowed

log = logging.getLogger(__name__)

OnChange = Callable[[RegionState | None, RegionState], None]


class _RateLimit(logging.Filter):
    """librdkafka repeats connection errors every reconnect; keep one per ``every`` seconds."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__()
        self.every = every
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)[:40]
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.every:
            return False
        self._last[key] = now
        return True


rdkafka_log = logging.getLogger("regionguard.rdkafka")
rdkafka_log.addFilter(_RateLimit())


class RegionStateView:
    def __init__(self, cfg: Config, *, on_change: OnChange | None = None, quiet_s: float = 0.0) -> None:
        self.cfg = cfg
        self.topic = cfg.topic("region-state")
        self._on_change = on_change
        self._quiet_s = quiet_s
        self._states: dict[str, RegionState] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_seen_wall: float | None = None
        self.records = 0  # records consumed (for tests and stats)
        self.ready_after_s: float | None = None  # start -> ready (for logs, tests and bench/stateview_startup.py)
        self._started_at = 0.0
        self._missing = False
        self._rewind = threading.Event()  # set when all brokers were down

    # ---- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=supervised, args=("stateview", self._run, self._stop),
                                        kwargs={"logger": log}, name=f"stateview:{self.topic}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None and t is not threading.current_thread():
            t.join(timeout=10)

    def __enter__(self) -> "RegionStateView":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- queries ----------------------------------------------------------------------
    def state(self, region: str) -> RegionState | None:
        with self._lock:
            return self._states.get(region)

    def states(self) -> dict[str, RegionState]:
        with self._lock:
            return dict(self._states)

    def is_closed(self, region: str) -> bool:
        """True when closed, or when no state is known (unknown counts as closed)."""
        st = self.state(region)
        return st is None or st.state is State.closed

    def last_heartbeat_age(self) -> float | None:
        """Seconds since the newest record of any region, None if never."""
        last = self._last_seen_wall
        return None if last is None else max(0.0, time.time() - last)

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # ---- the thread -------------------------------------------------------------------
    def _consumer(self) -> Consumer:
        # group.id is mandatory in librdkafka even for assign(); this group never
        # joins (no subscribe) and never commits.
        return Consumer(self.cfg.kafka_client_conf(**{
            "group.id": f"{self.cfg.kafka.topic_prefix}stateview-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            "enable.partition.eof": True,  # readiness: see the module docstring
            "socket.keepalive.enable": True,
            "reconnect.backoff.max.ms": 1000,
            "topic.metadata.refresh.interval.ms": 5000,
            "logger": rdkafka_log,
            "error_cb": self._on_error,
        }))

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._rewind.set()

    def _assign(self, consumer: Consumer) -> dict[int, int] | None:
        """Assign every partition from the beginning; return {partition: start high watermark}.

        None when the topic can't be assigned yet; ``self._missing`` says
        whether the broker answered that it does not exist.
        """
        self._missing = False
        try:
            md = consumer.list_topics(self.topic, timeout=2.0)
        except KafkaException as exc:  # broker down: try again later
            log.debug("stateview: metadata for %s failed: %s", self.topic, exc)
            return None
        tmd = md.topics.get(self.topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            self._missing = tmd is None or (tmd.error is not None
                                            and tmd.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART)
            return None
        parts = sorted(tmd.partitions)
        highs: dict[int, int] = {}
        for p in parts:
            try:
                _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=2.0)
            except KafkaException as exc:  # unknown end: never "ready" on a guess, look again soon
                log.debug("stateview: watermark of %s[%d] failed: %s", self.topic, p, exc)
                return None
            highs[p] = max(0, high)
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        return highs

    def _set_ready(self) -> None:
        if not self._ready.is_set():
            self.ready_after_s = time.monotonic() - self._started_at
            log.info("stateview: read %s to its end (%d records) in %.2fs", self.topic, self.records,
                     self.ready_after_s)
            self._ready.set()

    def _run(self) -> None:
        consumer = None
        try:
            consumer = self._consumer()
            targets: dict[int, int] | None = None
            next_lookup = 0.0
            reached: set[int] = set()
            reached_at: float | None = None
            quiet_since = time.monotonic()
            while not self._stop.is_set():
                if self._rewind.is_set() and targets is not None:
                    try:
                        consumer.list_topics(self.topic, timeout=1.0)
                        back = True
                    except KafkaException:  # still down: ask again next round
                        back = False
                    if back:  # a broker answers again: read everything again from the beginning
                        self._rewind.clear()
                        log.info("stateview: brokers were down; re-reading %s from the beginning", self.topic)
                        targets, next_lookup = None, 0.0
                if targets is None:
                    now = time.monotonic()
                    if now >= next_lookup:
                        targets = self._assign(consumer)
                        next_lookup = now + 0.5
                        if targets is None and self._missing and not self._ready.is_set():
                            # no topic (yet): an empty topic is a ready one
                            self._set_ready()
                        if targets is not None:
                            reached = {p for p, h in targets.items() if h <= 0}
                            reached_at = None
                            quiet_since = time.monotonic()
                    if targets is None:
                        self._stop.wait(0.2)
                        continue
                msgs = consumer.consume(500, 0.05)
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        code = err.code()
                        if code == KafkaError._PARTITION_EOF:
                            p = msg.partition()
                            if p in targets and msg.offset() >= targets[p]:
                                reached.add(p)
                        elif code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION):
                            targets = None  # topic gone: look it up again
                            break
                        else:
                            log.debug("stateview: %s", err)
                        continue
                    quiet_since = time.monotonic()
                    try:
                        self._handle(msg.value())
                    except Exception as exc:  # a poison record: reported, skipped, the view goes on
                        swallowed("stateview", exc, what=f"record {self.topic}[{msg.partition()}]@{msg.offset()}",
                                  logger=log)
                if targets is not None and not self._ready.is_set() and len(reached) == len(targets):
                    now = time.monotonic()
                    if reached_at is None:
                        reached_at = now
                    if now - reached_at >= self._quiet_s or (not msgs and now - quiet_since >= self._quiet_s):
                        self._set_ready()
        finally:  # an error goes on to supervised(): reported, then the thread starts over
            if consumer is not None:
                try:
                    consumer.close()
                except Exception as exc:  # reported; the consumer is dropped either way
                    swallowed("stateview", exc, what="closing the consumer", logger=log)

    def _handle(self, value: bytes | None) -> None:
        if not value:
            return  # tombstone
        try:
            new = RegionState.model_validate_json(value)
        except Exception as exc:  # a bad record must not stop the view: reported, skipped
            swallowed("stateview", exc, what=f"ignoring an invalid record on {self.topic}: reading it", logger=log)
            return
        self.records += 1
        now = time.time()
        at = new.at.timestamp() if new.at.tzinfo else new.at.replace(tzinfo=timezone.utc).timestamp()
        seen = min(at, now)  # a clock ahead of ours never makes the service look fresher than now
        if self._last_seen_wall is None or seen > self._last_seen_wall:
            self._last_seen_wall = seen
        with self._lock:
            old = self._states.get(new.region)
            if old is not None and new.order() < old.order():
                return  # older, or a deposed health leader's (lower epoch)
            self._states[new.region] = new
        changed = old is None or new.order() > old.order() or new.state != old.state
        if changed and self._on_change is not None:
            try:
                self._on_change(old, new)
            except Exception as exc:  # reported; the view goes on
                swallowed("stateview", exc, what=f"on_change callback for {new.region}", logger=log)
