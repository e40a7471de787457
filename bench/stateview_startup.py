"""Start-up time of a fresh region-state view with many state records on the topic.

Every service (router, replayer, features, clients) starts by reading
``<prefix>region-state`` to its end (:class:`regionguard.core.stateview.RegionStateView`)
and acts only after that. This bench puts ``--records`` state records (default
1,000,000, spread over ``--regions`` regions, seq increasing) on a fresh topic
and times, in the same run and on the same topic:

- **raw**: a bare confluent-kafka consumer (no group) reading the topic from the
  beginning to partition EOF, ``consume(10000, 0.05)`` batches, no parsing: the floor;
- **view**: a fresh ``RegionStateView`` from ``start()`` to ``wait_ready()``
  (parses and applies every record).

Both are measured twice over: first **before compaction** (the records are all
in the active segment, as on a topic created with Kafka's defaults after weeks
of heartbeats), then **after compaction**: the topic's ``segment.ms`` is
lowered to 1 s, a few records roll the segment, and the run waits until Kafka's
log cleaner has compacted it (``log.cleaner.backoff.ms``, 15 s by default).
With regionguard's topic settings (``kafka.topics.compact_segment_s``, 600 s) a
real deployment stays near the second case whatever its uptime.

Needs Apache Kafka (tansu has no log cleaner)::

    KAFKA_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python bench/stateview_startup.py
    KAFKA_BOOTSTRAP=... .venv/bin/python bench/stateview_startup.py --records 100000 --repeat 5

Prints one line per measurement and a JSON summary (``--json FILE`` writes it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from regionguard.core.config import parse_config
from regionguard.core.kafka import ensure_topics
from regionguard.core.models import RegionState, State
from regionguard.core.stateview import RegionStateView


def _config(bootstrap: str, regions: int):
    prefix = f"rgbench{uuid.uuid4().hex[:8]}."
    return parse_config({
        "kafka": {"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": 1,
                  # keep everything in the active segment until the bench asks for compaction
                  "topics": {"compact_segment_s": 3600}},
        "regions": {f"r{i:02d}": {"dsn": "postgresql://postgres@127.0.0.1:1/none"} for i in range(regions)},
        "tables": {"t": {"key": ["id"]}},
    })


def produce(cfg, topic: str, records: int, regions: list[str], seq0: int = 0) -> float:
    """``records`` RegionState records, round-robin over ``regions``; returns seconds taken."""
    now = datetime.now(timezone.utc)
    templates = {}
    for r in regions:
        rec = RegionState(region=r, state=State.closed, seq=987654321, since=now, at=now, observer="bench",
                          reason="heartbeat", heartbeat=True).model_dump_json()
        head, tail = rec.split("987654321")
        templates[r] = (head.encode(), tail.encode())
    p = Producer(cfg.kafka_client_conf(**{"linger.ms": 50, "batch.num.messages": 10000,
                                          "queue.buffering.max.messages": 500000,
                                          "compression.type": "none"}))
    t0 = time.monotonic()
    n = len(regions)
    keys = [r.encode() for r in regions]
    for i in range(records):
        j = i % n
        head, tail = templates[regions[j]]
        value = head + str(seq0 + i + 1).encode() + tail
        while True:
            try:
                p.produce(topic, value=value, key=keys[j])
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    left = p.flush(120)
    if left:
        raise SystemExit(f"{left} records not delivered")
    return time.monotonic() - t0


def raw_read(cfg, topic: str) -> tuple[float, int]:
    """A bare consumer from the beginning to EOF: (seconds, records)."""
    c = Consumer(cfg.kafka_client_conf(**{
        "group.id": f"rgbench-raw-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "enable.partition.eof": True, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10}))
    t0 = time.monotonic()
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    n = 0
    try:
        while True:
            done = False
            for m in c.consume(10000, 0.05):  # short wait, as the view's: no idle time at the end
                err = m.error()
                if err is None:
                    n += 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    done = True
            if done:
                return time.monotonic() - t0, n
    finally:
        c.close()


def view_read(cfg) -> tuple[float, int]:
    """A fresh RegionStateView from start() to ready: (seconds, records)."""
    t0 = time.monotonic()
    view = RegionStateView(cfg)
    view.start()
    try:
        if not view.wait_ready(600):
            raise SystemExit("view not ready after 600 s")
        return time.monotonic() - t0, view.records
    finally:
        view.stop()


def measure(cfg, topic: str, repeat: int, label: str) -> dict:
    raws, views, n_raw, n_view = [], [], 0, 0
    for i in range(repeat):  # alternate, so both see the same page cache and load
        t, n_raw = raw_read(cfg, topic)
        raws.append(t)
        t, n_view = view_read(cfg)
        views.append(t)
        print(f"  {label} #{i + 1}: raw {raws[-1]:.3f}s ({n_raw} records), view {views[-1]:.3f}s "
              f"({n_view} records)", flush=True)
    raw, view = statistics.median(raws), statistics.median(views)
    out = {"records_read_raw": n_raw, "records_read_view": n_view, "raw_s": round(raw, 3),
           "view_s": round(view, 3), "ratio": round(view / raw, 2) if raw > 0 else None}
    print(f"{label}: {n_raw} records on the topic; raw {raw:.3f}s, view {view:.3f}s, "
          f"ratio view/raw {out['ratio']}", flush=True)
    return out


def compact(cfg, topic: str, regions: list[str], published: int, timeout: float) -> float:
    """Make Kafka's log cleaner compact ``topic``; returns seconds until a reader sees it compacted."""
    admin = AdminClient(cfg.kafka_client_conf())
    res = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("segment.ms", "1000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("min.cleanable.dirty.ratio", "0.01", incremental_operation=AlterConfigOpType.SET)])
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(30)
    t0 = time.monotonic()
    seq = published
    while time.monotonic() - t0 < timeout:
        time.sleep(1.5)
        produce(cfg, topic, len(regions), regions, seq0=seq)  # rolls the segment once segment.ms passed
        seq += len(regions)
        _t, n = raw_read(cfg, topic)
        if n < published // 100:
            return time.monotonic() - t0
    raise SystemExit(f"not compacted after {timeout:.0f}s ({n} records still there)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--regions", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compact-timeout", type=float, default=180.0)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        raise SystemExit("set KAFKA_BOOTSTRAP to an Apache Kafka broker (tansu has no log cleaner)")
    logging.basicConfig(level=logging.WARNING)
    cfg = _config(bootstrap, args.regions)
    ensure_topics(cfg)
    topic = cfg.topic("region-state")
    regions = list(cfg.regions)
    took = produce(cfg, topic, args.records, regions)
    print(f"produced {args.records} state records for {len(regions)} regions to {topic} in {took:.1f}s "
          f"({args.records / took:,.0f}/s)", flush=True)
    before = measure(cfg, topic, args.repeat, "before compaction")
    waited = compact(cfg, topic, regions, args.records, args.compact_timeout)
    print(f"compacted by Kafka's log cleaner {waited:.0f}s after segment.ms was lowered", flush=True)
    after = measure(cfg, topic, args.repeat, "after compaction")
    summary = {"bench": "stateview_startup", "bootstrap": bootstrap, "records": args.records,
               "regions": len(regions), "repeat": args.repeat, "before_compaction": before,
               "after_compaction": after, "at": datetime.now(timezone.utc).isoformat()}
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    from regionguard.core.kafka import topic_plan

    admin = AdminClient(cfg.kafka_client_conf())
    for fut in admin.delete_topics(list(topic_plan(cfg))).values():
        try:
            fut.result(30)
        except Exception:  # noqa: BLE001 - clean-up only
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
