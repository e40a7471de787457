"""Exit non-zero while any region is not closed: a check for cron, CI gates, Nagios-style probes.

Reads the compacted ``<prefix>region-state`` topic (key: region; value: RegionState JSON) from
the beginning to its end, keeps per region the record with the highest ``(epoch, seq)``
(readers ignore older ones, DESIGN.md), and prints one line per region.

    python examples/monitor/regions_closed.py --bootstrap 127.0.0.1:9092 [--prefix rg.] [--max-age 30]

Exit codes: 0 every region closed; 1 some region open or half_open (named on stderr);
3 unknown (broker unreachable, no region state, or with --max-age no record, heartbeats
included, newer than that many seconds: the health service may be down).
Needs only confluent-kafka (``pip install confluent-kafka``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition


def read_states(bootstrap: str, topic: str, timeout: float = 15.0) -> dict[str, dict]:
    """The newest RegionState per region, read to the topic's end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "rg-regions-closed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "enable.partition.eof": True})
    try:
        meta = c.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaException(f"topic {topic} not found")
        parts = [TopicPartition(topic, p, 0) for p in meta.partitions]  # offset 0 = from the beginning
        # the end is partition EOF (from fetch responses), not the ListOffsets watermark, which some
        # Kafka-compatible brokers (tansu) report too low; the watermark only says which are empty
        ends = {p.partition: c.get_watermark_offsets(p, timeout=timeout)[1] for p in parts}
        pending = {p for p, end in ends.items() if end > 0}
        c.assign(parts)
        latest: dict[str, dict] = {}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise KafkaException(msg.error())
            if msg.value() is None:
                continue
            st = json.loads(msg.value())
            old = latest.get(st["region"])
            if old is None or (st.get("epoch", 0), st["seq"]) >= (old.get("epoch", 0), old["seq"]):
                latest[st["region"]] = st
        if pending:
            raise KafkaException(f"{topic}: could not read to the end within {timeout} s")
        return latest
    finally:
        c.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--prefix", default="rg.", help="kafka.topic_prefix")
    ap.add_argument("--max-age", type=float, default=None, metavar="S",
                    help="unknown (3) when a region's newest record (heartbeats too) is older than S seconds")
    args = ap.parse_args(argv)
    try:
        states = read_states(args.bootstrap, f"{args.prefix}region-state")
    except KafkaException as exc:
        print(f"UNKNOWN: {exc}", file=sys.stderr)
        return 3
    if not states:
        print("UNKNOWN: no region state published yet", file=sys.stderr)
        return 3
    stale, not_closed = [], []
    for region, st in sorted(states.items()):
        print(f"{region}: {st['state']} since {st['since']} (seq {st['seq']}, reason {st.get('reason') or '-'})")
        at = datetime.fromisoformat(st.get("at") or st["since"])
        if args.max_age is not None and time.time() - at.timestamp() > args.max_age:
            stale.append(region)
        if st["state"] != "closed":
            not_closed.append(f"{region} {st['state']}")
    if not_closed:
        print(f"NOT CLOSED: {', '.join(not_closed)}", file=sys.stderr)
        return 1
    if stale:
        print(f"UNKNOWN: no fresh state for {', '.join(stale)} (health service down?)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
