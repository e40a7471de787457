"""What ``regionguard status`` shows, gathered from Kafka alone (no service is asked).

:class:`StatusCollector` reads, for one config:

* ``<prefix>region-state`` through a :class:`~regionguard.core.stateview.RegionStateView`:
  state, ``seq``, ``since``, reason per region, and the age of the newest
  record (the health heartbeat; older than ``health.stale_after_s`` is STALE);
* ``<prefix>held.<region>`` from the replayer group's committed offsets to the
  end: the **held backlog** (write records still to replay; the router's fence
  markers are not writes and are left out) and the **replayer lag** (all records);
* ``<prefix>writes.<region>`` from the router group's committed offsets to the
  end: the **router lag**;
* ``<prefix>dead-letter``: how many, by reason;
* ``<prefix>failover-events``: the most recent events;
* ``<prefix>features``: which features are off per region.

Counting. On Apache Kafka and MSK the high watermark is exact, so the
**router lag** and the **replayer lag** are watermark differences: nothing is
consumed for them. tansu (the embedded demo broker, recognised by its cluster
id ``tansu_cluster``) reports a wrong high watermark after multi-record
batches (the last batch's base offset + 1), so there the collector *counts
records by consuming* from the committed offset to the end of each partition
(``enable.partition.eof`` tells where the end is). The **held backlog** leaves
the router's fence markers out, so it is counted by consuming on every broker;
beyond ``exact_limit`` records in total per snapshot it stops counting and
reports ``max(counted, watermark difference)`` with ``"exact": false`` (on an
exact broker that estimate only adds the fence markers, never misses a write).

The consumers here join **no group** and never commit: looking does not
disturb the services. Committed offsets are read with ``Consumer.committed``
under the services' group ids (:func:`~regionguard.core.kafka.router_group`,
:func:`~regionguard.core.kafka.replayer_group`) without subscribing, which
does not join those groups either.

:meth:`StatusCollector.snapshot` returns a plain dict; its keys are the
stable ``--json`` format (``"version": 1``), documented in ``docs/drill.md``.
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from ..core.config import Config
from ..core.held import H_FENCE
from ..core.kafka import replayer_group, router_group, watermarks_exact
from ..core.models import FailoverEvent, FeatureFlags, RegionState
from ..core.log import rdkafka_log
from ..core.stateview import RegionStateView
from ..core.supervise import swallowed

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
FENCE_HEADER = H_FENCE


class StatusError(Exception):
    """Kafka could not be reached or answered with an error (one line)."""


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _age(dt: datetime | None, now: float) -> float | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return round(max(0.0, now - dt.timestamp()), 3)


def event_summary(ev: FailoverEvent) -> str:
    """One human line for a failover event."""
    d = ev.detail or {}
    if ev.kind == "transition":
        s = f"{d.get('from', '?')} -> {d.get('to', d.get('state', '?'))}"
        return f"{s} ({d['reason']})" if d.get("reason") else s
    if ev.kind in ("replay_finished", "replay_progress"):
        parts = [f"{k}={d[k]}" for k in ("applied", "duplicates", "stale", "expired", "dead_lettered") if d.get(k)]
        if "seconds" in d:
            parts.append(f"in {d['seconds']}s")
        return " ".join(parts) or "nothing to replay"
    if ev.kind == "features_changed":
        off, on = d.get("turned_off") or [], d.get("turned_on") or []
        bits = ([f"off: {', '.join(off)}"] if off else []) + ([f"on: {', '.join(on)}"] if on else [])
        return "; ".join(bits) or f"disabled={d.get('disabled', [])}"
    if d.get("reason"):
        return str(d["reason"])
    return ""


@dataclass
class _Range:
    """Records to read from one partition, and what was found there."""

    topic: str
    partition: int
    start: int                 # first offset to read (resolved, >= 0)
    estimate: int = 0          # watermark-based record count (exact on Apache Kafka)
    count: int = 0             # records counted by consuming (fences excluded when asked)
    records: int = 0           # every record counted by consuming
    end: int | None = None     # offset after the last record, once the partition's end was reached
    skip: bool = False         # too large: not consumed, estimate used

    @property
    def done(self) -> bool:
        return self.skip or self.end is not None


@dataclass
class _Tail:
    """Incremental reading of one topic across snapshots (positions remembered)."""

    topic: str
    handler: Callable[[Any], None]
    positions: dict[int, int] = field(default_factory=dict)
    exact: bool = True


class StatusCollector:
    """Gathers one status snapshot at a time; keep it open for a live view."""

    def __init__(self, cfg: Config, *, events: int = 10, exact_limit: int = 100_000,
                 read_timeout: float = 5.0,
                 on_change: Callable[[RegionState | None, RegionState], None] | None = None) -> None:
        self.cfg = cfg
        self.max_events = events
        self.exact_limit = exact_limit
        self.read_timeout = read_timeout
        self.view = RegionStateView(cfg, on_change=on_change)
        self._consumer: Consumer | None = None
        self._offset_readers: dict[str, Consumer] = {}
        self._partitions: dict[str, int] = {}
        self._topics_checked = 0.0
        self.exact_watermarks = False  # learnt from the cluster id at the first metadata answer
        self.dead_by_reason: collections.Counter[str] = collections.Counter()
        self.dead_total_estimate = 0
        self.events: collections.deque[FailoverEvent] = collections.deque(maxlen=max(1, events))
        self.features: dict[str, FeatureFlags] = {}
        self._tails = [
            _Tail(cfg.topic("dead-letter"), self._on_dead_letter),
            _Tail(cfg.topic("failover-events"), self._on_event),
            _Tail(cfg.topic("features"), self._on_features),
        ]

    # ---- lifecycle -------------------------------------------------------------------
    def _conf(self, **extra: Any) -> dict[str, Any]:
        return self.cfg.kafka_client_conf(**{
            "group.id": f"{self.cfg.kafka.topic_prefix}status-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            "socket.timeout.ms": 10000,
            "logger": rdkafka_log,
            **extra,
        })

    def start(self, timeout: float = 10.0) -> "StatusCollector":
        self._consumer = Consumer(self._conf(**{"enable.partition.eof": True}))
        self._refresh_topics(timeout)  # raises StatusError when the broker does not answer
        self.view.start()
        self.view.wait_ready(timeout)
        return self

    def close(self) -> None:
        self.view.stop()
        for c in [self._consumer, *self._offset_readers.values()]:
            if c is None:
                continue
            try:
                c.close()
            except Exception as exc:  # noqa: BLE001 - closing the others goes on (reported)
                swallowed("status", exc, what="closing a consumer", logger=log)
        self._consumer = None
        self._offset_readers.clear()

    def __enter__(self) -> "StatusCollector":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- Kafka helpers -----------------------------------------------------------------
    def _refresh_topics(self, timeout: float = 5.0) -> None:
        assert self._consumer is not None
        try:
            md = self._consumer.list_topics(timeout=timeout)
        except KafkaException as exc:
            err = exc.args[0]
            why = err.str() if hasattr(err, "str") else str(err)
            raise StatusError(f"cannot reach Kafka at {self.cfg.kafka.bootstrap} ({why})") from None
        self._partitions = {name: len(t.partitions) for name, t in md.topics.items()
                            if t.error is None and t.partitions}
        self.exact_watermarks = watermarks_exact(md.cluster_id)
        self._topics_checked = time.monotonic()

    def _committed(self, group: str, topic: str) -> dict[int, int | None]:
        n = self._partitions.get(topic, 0)
        if not n:
            return {}
        c = self._offset_readers.get(group)
        if c is None:
            # group.id is the service's; no subscribe() and no commit, so this never joins the group
            c = Consumer(self.cfg.kafka_client_conf(**{"group.id": group, "enable.auto.commit": False,
                                                        "logger": rdkafka_log}))
            self._offset_readers[group] = c
        try:
            res = c.committed([TopicPartition(topic, p) for p in range(n)], timeout=self.read_timeout)
        except KafkaException as exc:
            log.debug("committed offsets of %s on %s: %s", group, topic, exc)
            return {p: None for p in range(n)}
        return {tp.partition: (tp.offset if tp.offset is not None and tp.offset >= 0 else None) for tp in res}

    def _watermarks(self, topic: str, p: int) -> tuple[int, int]:
        assert self._consumer is not None
        try:
            low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.read_timeout)
            return max(0, low), max(0, high)
        except KafkaException:
            return 0, 0

    def _read(self, ranges: list[_Range], on_record: Callable[[_Range, Any], bool] | None = None) -> bool:
        """Consume every range to the end of its partition; True when all were read completely.

        ``on_record(range, msg)`` returns whether the record counts (e.g. not a fence).
        """
        assert self._consumer is not None
        todo = {(r.topic, r.partition): r for r in ranges if not r.skip}
        if not todo:
            return all(not r.skip for r in ranges)
        self._consumer.assign([TopicPartition(t, p, r.start) for (t, p), r in todo.items()])
        pending = set(todo)
        budget = self.exact_limit
        deadline = time.monotonic() + self.read_timeout
        complete = True
        try:
            while pending and time.monotonic() < deadline:
                for msg in self._consumer.consume(1000, 0.1):
                    key = (msg.topic(), msg.partition())
                    r = todo.get(key)
                    if r is None:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            r.end = max(msg.offset(), r.start)
                            pending.discard(key)
                        elif err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION):
                            r.end = r.start
                            pending.discard(key)
                        continue
                    if key not in pending:
                        pending.add(key)  # more arrived after its end: keep reading
                        r.end = None
                    r.records += 1
                    if on_record is None or on_record(r, msg):
                        r.count += 1
                    budget -= 1
                if budget <= 0:
                    complete = False
                    break
        finally:
            try:
                self._consumer.unassign()
            except KafkaException:
                pass
        if pending:
            complete = False
        return complete and all(not r.skip for r in ranges)

    def _ranges(self, topic: str, starts: dict[int, int | None]) -> list[_Range]:
        out = []
        for p in range(self._partitions.get(topic, 0)):
            low, high = self._watermarks(topic, p)
            start = starts.get(p)
            start = low if start is None else max(start, low)
            r = _Range(topic, p, start, estimate=max(0, high - start))
            r.skip = r.estimate > self.exact_limit
            out.append(r)
        return out

    # ---- tails (dead letters, events, features) ----------------------------------------
    def _on_dead_letter(self, msg: Any) -> None:
        import orjson

        try:
            reason = str(orjson.loads(msg.value() or b"{}").get("reason", "unknown"))
        except Exception as exc:  # noqa: BLE001 - a broken record still counts, as "unreadable"
            swallowed("status", exc, what="reading a dead letter", logger=log, level=logging.DEBUG)
            reason = "unreadable"
        self.dead_by_reason[reason] += 1

    def _on_event(self, msg: Any) -> None:
        try:
            self.events.append(FailoverEvent.model_validate_json(msg.value()))
        except Exception as exc:  # noqa: BLE001 - skipped (reported)
            swallowed("status", exc, what=f"ignoring an invalid failover event at offset {msg.offset()}: reading it",
                      logger=log)

    def _on_features(self, msg: Any) -> None:
        try:
            ff = FeatureFlags.model_validate_json(msg.value())
        except Exception as exc:  # noqa: BLE001 - skipped (reported)
            swallowed("status", exc, what=f"ignoring an invalid feature flags record at offset {msg.offset()}: "
                      "reading it", logger=log)
            return
        old = self.features.get(ff.region)
        if old is None or ff.seq >= old.seq:
            self.features[ff.region] = ff

    def _advance_tails(self) -> None:
        ranges: list[_Range] = []
        owner: dict[str, _Tail] = {}
        for tail in self._tails:
            owner[tail.topic] = tail
            for p in range(self._partitions.get(tail.topic, 0)):
                if p not in tail.positions:
                    low, high = self._watermarks(tail.topic, p)
                    if tail.topic == self.cfg.topic("failover-events"):
                        # only the recent ones; tansu's low-biased watermark just means a few more
                        tail.positions[p] = max(low, high - 200)
                    elif high - low > self.exact_limit:
                        tail.positions[p] = high - self.exact_limit
                        tail.exact = False
                    else:
                        tail.positions[p] = low
                ranges.append(_Range(tail.topic, p, tail.positions[p]))

        def record(r: _Range, msg: Any) -> bool:
            if msg.value():
                owner[r.topic].handler(msg)
            return True

        self._read(ranges, record)
        for r in ranges:
            t = owner[r.topic]
            t.positions[r.partition] = r.end if r.end is not None else r.start + r.records
            if r.topic == self.cfg.topic("dead-letter"):
                low, _high = self._watermarks(r.topic, r.partition)
                self.dead_total_estimate = max(0, t.positions[r.partition] - low)

    # ---- the snapshot ---------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        if self._consumer is None:
            self.start()
        if time.monotonic() - self._topics_checked > 10.0 or not self._partitions:
            self._refresh_topics()
        cfg = self.cfg
        now = time.time()
        states = self.view.states()

        held_ranges: dict[str, list[_Range]] = {}
        write_ranges: dict[str, list[_Range]] = {}
        for region in cfg.regions:
            held = cfg.topic("held", region)
            writes = cfg.topic("writes", region)
            held_ranges[region] = self._ranges(held, self._committed(replayer_group(cfg, region), held))
            write_ranges[region] = self._ranges(writes, self._committed(router_group(cfg, region), writes))

        def not_fence(_r: _Range, msg: Any) -> bool:
            return not any(k == FENCE_HEADER for k, _v in (msg.headers() or []))

        all_held = [r for rs in held_ranges.values() for r in rs]
        all_writes = [r for rs in write_ranges.values() for r in rs]
        held_exact = self._read(all_held, not_fence)
        # lags are plain offset differences where the broker's watermarks are exact: nothing to consume
        writes_exact = True if self.exact_watermarks else self._read(all_writes)
        self._advance_tails()

        regions: dict[str, Any] = {}
        for region in cfg.regions:
            st: RegionState | None = states.get(region)
            hr, wr = held_ranges[region], write_ranges[region]
            backlog = sum(r.estimate if r.skip else r.count for r in hr)
            if self.exact_watermarks:
                rlag = sum(r.estimate for r in hr)
                wlag = sum(r.estimate for r in wr)
            else:
                rlag = sum(r.estimate if r.skip else r.records for r in hr)
                wlag = sum(r.estimate if r.skip else r.records for r in wr)
            if not held_exact:
                backlog = max(backlog, sum(r.estimate for r in hr))
                rlag = max(rlag, sum(r.estimate for r in hr))
            if not writes_exact:
                wlag = max(wlag, sum(r.estimate for r in wr))
            ff = self.features.get(region)
            regions[region] = {
                "state": st.state.value if st else "unknown",
                "seq": st.seq if st else None,
                "since": _iso(st.since) if st else None,
                "since_s": _age(st.since, now) if st else None,
                "reason": st.reason if st else "",
                "observer": st.observer if st else "",
                "record_age_s": _age(st.at, now) if st else None,
                "held_backlog": backlog,
                "replayer_lag": rlag,
                "router_lag": wlag,
                "exact": bool(held_exact and writes_exact),
                "disabled_features": sorted(ff.disabled) if ff else [],
            }
        age = self.view.last_heartbeat_age()
        stale_after = cfg.health.stale_after_s
        dead_counted = sum(self.dead_by_reason.values())
        dead_tail = self._tails[0]
        return {
            "version": FORMAT_VERSION,
            "at": _iso(datetime.fromtimestamp(now, timezone.utc)),
            "kafka": {"bootstrap": cfg.kafka.bootstrap, "topic_prefix": cfg.kafka.topic_prefix},
            "health": {
                "heartbeat_age_s": None if age is None else round(age, 3),
                "stale": age is None or age > stale_after,
                "stale_after_s": stale_after,
            },
            "regions": regions,
            "totals": {
                "held_backlog": sum(r["held_backlog"] for r in regions.values()),
                "router_lag": sum(r["router_lag"] for r in regions.values()),
                "replayer_lag": sum(r["replayer_lag"] for r in regions.values()),
            },
            "dead_letters": {
                "total": max(dead_counted, self.dead_total_estimate) if not dead_tail.exact else dead_counted,
                "by_reason": dict(sorted(self.dead_by_reason.items())),
                "exact": dead_tail.exact,
            },
            "events": [
                {"at": _iso(ev.at), "region": ev.region, "kind": ev.kind, "service": ev.service,
                 "summary": event_summary(ev), "detail": ev.detail}
                for ev in list(self.events)[-self.max_events:]
            ],
            "missing_topics": sorted(t for t in self._expected_topics() if t not in self._partitions),
        }

    # ---- building blocks for ``regionguard drill`` ----------------------------------------
    def partitions(self, topic: str) -> int:
        if topic not in self._partitions:
            self._refresh_topics()
        return self._partitions.get(topic, 0)

    def read_from(self, topic: str, starts: dict[int, int] | None = None,
                  handler: Callable[[Any], None] | None = None) -> tuple[dict[int, int], int]:
        """Read ``topic`` from ``starts`` (default: each partition's end) to its end.

        Calls ``handler(msg)`` for every record with a value; returns the new
        positions (pass them as ``starts`` next time) and how many write
        records (not router fences) were read.
        """
        starts = dict(starts or {})
        ranges = []
        for p in range(self.partitions(topic)):
            if p not in starts:
                low, high = self._watermarks(topic, p)
                starts[p] = max(low, high - 1)  # tansu's watermark may be low: read on to the true end
                counted = False
            else:
                counted = True
            ranges.append((_Range(topic, p, starts[p]), counted))
        count = 0

        def record(r: _Range, msg: Any) -> bool:
            if handler is not None and msg.value():
                handler(msg)
            return not any(k == FENCE_HEADER for k, _v in (msg.headers() or []))

        self._read([r for r, _ in ranges], record)
        out = {}
        for r, counted in ranges:
            out[r.partition] = r.end if r.end is not None else r.start + r.records
            if counted:
                count += r.count
        return out, count

    def held_backlog(self, region: str) -> tuple[int, bool]:
        """Held writes of ``region`` after the replayer group's committed offsets: (count, exact)."""
        held = self.cfg.topic("held", region)
        ranges = self._ranges(held, self._committed(replayer_group(self.cfg, region), held))

        def not_fence(_r: _Range, msg: Any) -> bool:
            return not any(k == FENCE_HEADER for k, _v in (msg.headers() or []))

        exact = self._read(ranges, not_fence)
        n = sum(r.estimate if r.skip else r.count for r in ranges)
        return (n if exact else max(n, sum(r.estimate for r in ranges))), exact

    def held_oldest_age(self, region: str, *, now: float | None = None, max_skip: int = 100) -> float | None:
        """Seconds since the oldest held write of ``region`` not yet replayed was held; None if none.

        Reads the first write record (router fences skipped, at most ``max_skip``)
        at the replayer group's committed offset of each held partition and takes
        its Kafka timestamp, the one retention goes by: when this age reaches
        ``retention.ms`` of the held topic, Kafka deletes writes nobody replayed
        (alert ``RegionGuardHeldNearRetention``).
        """
        assert self._consumer is not None
        held = self.cfg.topic("held", region)
        starts = self._committed(replayer_group(self.cfg, region), held)
        tps = []
        for p in range(self._partitions.get(held, 0)):
            low, high = self._watermarks(held, p)
            start = starts.get(p)
            start = low if start is None else max(start, low)
            if getattr(self, "exact_watermarks", False) and start >= high:
                continue  # nothing held there (on tansu the watermark may be low: look anyway)
            tps.append(TopicPartition(held, p, start))
        if not tps:
            return None
        oldest: float | None = None
        pending = {tp.partition: 0 for tp in tps}
        self._consumer.assign(tps)
        deadline = time.monotonic() + self.read_timeout
        try:
            while pending and time.monotonic() < deadline:
                for msg in self._consumer.consume(100, 0.1):
                    p = msg.partition()
                    if msg.topic() != held or p not in pending:
                        continue
                    err = msg.error()
                    if err is not None:
                        if err.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART,
                                          KafkaError._UNKNOWN_PARTITION):
                            pending.pop(p, None)
                        continue
                    if any(k == FENCE_HEADER for k, _v in (msg.headers() or [])):
                        pending[p] += 1
                        if pending[p] >= max_skip:
                            pending.pop(p, None)
                        continue
                    pending.pop(p, None)
                    _kind, ts = msg.timestamp()
                    if ts is not None and ts > 0 and (oldest is None or ts / 1000.0 < oldest):
                        oldest = ts / 1000.0
        finally:
            try:
                self._consumer.unassign()
            except KafkaException:
                pass
        if oldest is None:
            return None
        return max(0.0, (time.time() if now is None else now) - oldest)

    def _expected_topics(self) -> list[str]:
        from ..core.kafka import topic_plan

        return list(topic_plan(self.cfg))


def collect_once(cfg: Config, *, events: int = 10, timeout: float = 10.0) -> dict[str, Any]:
    """One snapshot (opens and closes its own consumers)."""
    collector = StatusCollector(cfg, events=events, read_timeout=timeout)
    try:
        collector.start(timeout)
        return collector.snapshot()
    finally:
        collector.close()
