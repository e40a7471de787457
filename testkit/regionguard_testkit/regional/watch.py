"""A timeline of what Kafka and the routers do during a regional event, seen from a surviving region.

``python -m regionguard_testkit.regional.watch --bootstrap B --prefix P --out f.jsonl [--metrics name=url ...]``
polls, every ``--interval`` seconds until SIGTERM, and appends one JSON line per observation that
changed since the last one (``t`` is the unix time):

- ``{"kind": "partition", "topic", "partition", "leader", "isr"}``: a partition's leader or ISR as the
  cluster's metadata says (run it inside a survivor's cgroup, so a cut node's stale view never answers);
- ``{"kind": "metric", "service", "name", "labels", "value"}``: a sample of a service's /metrics
  (the routers' direct/held partitions, applied and held counters);
- ``{"kind": "poll", "what", "seconds", "error"}``: a metadata call that failed or took over 1 s
  (a hang is itself part of the story).

Group coordinators are not asked for: librdkafka 2.x aborted (an assertion in
``rd_kafka_enq_once_del_source_return``) when ``describe_consumer_groups`` timed out against a cut
node. They are ``__consumer_offsets`` partition leaders, which the metadata shows.

Written here because it is ours: which facts of a regional event matter to the latency goals
(issue 26), and in which shape the run's report reads them (:func:`load`).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["load", "main"]

METRICS = ("regionguard_direct_partitions", "regionguard_held_partitions", "regionguard_writes_applied_total",
           "regionguard_writes_held_total", "regionguard_consumer_lag")


def _metadata(admin: AdminClient, prefix: str) -> dict[tuple[str, int], tuple[int, tuple[int, ...]]]:
    md = admin.list_topics(timeout=2)
    return {(t, p.id): (p.leader, tuple(sorted(p.isrs)))
            for t, tm in md.topics.items() if t.startswith(prefix) or t == "__consumer_offsets"
            for p in tm.partitions.values()}


def _metrics(url: str) -> dict[tuple[str, str], float]:
    text = urllib.request.urlopen(url, timeout=1).read().decode()
    return {(s.name, json.dumps(s.labels, sort_keys=True)): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples if s.name in METRICS}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regionguard_testkit.regional.watch")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", required=True, help="topic name prefix (the run's)")
    p.add_argument("--out", required=True)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--metrics", action="append", default=[], help="service=url")
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    admin = AdminClient({"bootstrap.servers": args.bootstrap, "socket.timeout.ms": 2000,
                         "socket.connection.setup.timeout.ms": 2000, "topic.metadata.refresh.interval.ms": 1000})
    seen: dict[Any, Any] = {}
    out = open(args.out, "a")

    def emit(key: Any, value: Any, rec: dict[str, Any]) -> None:
        if seen.get(key, object()) != value:
            seen[key] = value
            out.write(json.dumps({"t": time.time(), **rec}) + "\n")

    def metrics_loop() -> None:   # a thread: a hung /metrics never delays the metadata polls
        while not stop.is_set():
            for spec in args.metrics:
                service, _, url = spec.partition("=")
                try:
                    samples = _metrics(url)
                except OSError:
                    continue
                for (name, labels), v in samples.items():
                    emit(("m", service, name, labels), v, {"kind": "metric", "service": service, "name": name,
                                                           "labels": json.loads(labels), "value": v})
            stop.wait(args.interval)

    threading.Thread(target=metrics_loop, daemon=True).start()
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            for (topic, part), (leader, isr) in _metadata(admin, args.prefix).items():
                emit(("p", topic, part), (leader, isr), {"kind": "partition", "topic": topic, "partition": part,
                                                         "leader": leader, "isr": list(isr)})
            err = None
        except Exception as exc:  # noqa: BLE001 - a failed poll is an observation
            err = type(exc).__name__ + ": " + str(exc)[:200]
        took = time.monotonic() - t0
        if err or took > 1.0:
            out.write(json.dumps({"t": time.time(), "kind": "poll", "what": "metadata", "seconds": took,
                                  "error": err}) + "\n")
        out.flush()
        stop.wait(max(0.0, args.interval - (time.monotonic() - t0)))
    out.close()
    return 0


def load(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    sys.exit(main())
