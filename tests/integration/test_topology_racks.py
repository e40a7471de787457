"""A Kafka cluster stretched over three regions (docs/topology.md), for real: three Apache Kafka
nodes with ``broker.rack`` r0, r1, r2 and the rack-aware replica selector, started here for this
module only (never the session broker).

``regionguard config check --connect`` warns, one line each, when a router or replayer serving
``--regions`` would fetch across regions (``kafka.client_rack`` unset, naming no broker rack, or
a map that puts its regions in several racks) and when a writes or held topic's replicas sit in
one rack; and a consumer made by ``make_consumer`` for region r1 really fetches from r1's broker
while the partition's leader is elsewhere (librdkafka's statistics: the partition's fetch broker).
Real router and replayer processes publish the same decision as
``regionguard_cross_region_fetch{region, service}`` on /metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from regionguard_testkit.embedded.config import make_config
from regionguard_testkit.embedded.kafka import ApacheKafka
from tests.harness import free_port
from tests.integration.helpers import wait_until

RACKS = ["r0", "r1", "r2"]


@pytest.fixture(scope="module")
def stretched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    cluster = ApacheKafka(3, workdir=tmp_path_factory.mktemp("kafka-racks"), racks=RACKS)
    try:
        cluster.start(timeout=300)
        yield cluster
    finally:
        cluster.close()


def rack_warnings(cfg, *regions: str) -> list[str]:
    """The rack lines of ``config check --connect --json`` (the sslmode warnings left out)."""
    argv = [sys.executable, "-m", "regionguard", "config", "check", "--connect", "--json", "--timeout", "10",
            "--config", str(cfg.path)] + (["--regions", ",".join(regions)] if regions else [])
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)
    assert (proc.returncode, doc["problems"]) == (0, []), doc
    return [w for w in doc["warnings"] if "rack" in w]


def test_config_check_warns_on_cross_region_fetches_and_one_rack_topics(stretched, regions, tmp_path):
    lr = regions(tuple(RACKS))
    kafka = {"replication_factor": 3, "min_insync_replicas": 2}
    cfg = make_config(lr, stretched.bootstrap, tmp_path / "rf3.yaml", overrides={"kafka": kafka})

    unset = rack_warnings(cfg, "r0")
    assert unset == ["router/replayer: kafka.client_rack is unset while the brokers have racks (r0, r1, r2): "
                     "its consumers fetch from partition leaders in any region (docs/topology.md)"]

    cfg.update({"kafka": {"client_rack": {r: r for r in RACKS}}})
    assert rack_warnings(cfg, "r0") == []  # a region's router fetches in its region; RF 3 spans the racks
    both = rack_warnings(cfg, "r0", "r1")
    assert len(both) == 1 and "serves regions in racks r0, r1" in both[0], both

    cfg.update({"kafka": {"client_rack": "eu-west-1a"}})
    wrong = rack_warnings(cfg, "r2")
    assert len(wrong) == 1 and "kafka.client_rack eu-west-1a names no broker rack (r0, r1, r2)" in wrong[0], wrong

    # replication 1: every partition of every writes and held topic lives in one rack
    one = make_config(lr, stretched.bootstrap, tmp_path / "rf1.yaml",
                      overrides={"kafka": {"client_rack": "r1"}})
    lines = rack_warnings(one, "r1")
    topics = sorted(line.split(":")[0].removeprefix("topic ") for line in lines)
    assert topics == sorted(one.topic(kind, r) for r in RACKS for kind in ("writes", "held")), lines
    assert all("replicas are all in rack" in line for line in lines), lines


def test_a_consumer_with_client_rack_fetches_from_its_regions_replica(stretched, regions, tmp_path):
    from confluent_kafka import Producer, TopicPartition

    from regionguard.core.kafka import make_consumer

    lr = regions(tuple(RACKS))
    cfg = make_config(lr, stretched.bootstrap, tmp_path / "fetch.yaml", partitions=3,
                      overrides={"kafka": {"replication_factor": 3, "min_insync_replicas": 2,
                                           "client_rack": {r: r for r in RACKS}}}).load()
    topic = cfg.topic("writes", "r1")
    md = Producer({"bootstrap.servers": stretched.bootstrap}).list_topics(topic, timeout=10).topics[topic]
    # a partition r1's broker (node 2) does not lead: a rack-unaware consumer would fetch from node 1 or 3
    part = next(p for p, pm in md.partitions.items() if pm.leader != 2)
    producer = Producer({"bootstrap.servers": stretched.bootstrap, "acks": "all"})
    for i in range(20):
        producer.produce(topic, b"x", partition=part)
    assert producer.flush(30) == 0

    stats: list[dict] = []
    consumer = make_consumer(cfg, f"racks-{uuid.uuid4().hex[:6]}", region="r1",
                             **{"statistics.interval.ms": 200, "stats_cb": lambda s: stats.append(json.loads(s))})
    consumer.assign([TopicPartition(topic, part, 0)])
    fetched_from = None
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and fetched_from != 2:
            consumer.poll(0.2)
            for s in stats[-3:]:
                p = s.get("topics", {}).get(topic, {}).get("partitions", {}).get(str(part), {})
                if p.get("broker", -1) >= 0:
                    fetched_from = p["broker"]
        leader = next((s["topics"][topic]["partitions"][str(part)]["leader"] for s in reversed(stats)
                       if topic in s.get("topics", {})), None)
    finally:
        consumer.close()
    assert fetched_from == 2 and leader not in (None, 2), (fetched_from, leader)


def cross_region_fetch(port: int, service: str) -> dict[str, float] | None:
    """``regionguard_cross_region_fetch`` of ``service`` by region; None until the service sets it."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    got = {s.labels["region"]: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
           if s.name == "regionguard_cross_region_fetch" and s.labels.get("service") == service}
    return got or None


def test_services_publish_cross_region_fetch_on_metrics(stretched, regions, services, tmp_path):
    lr = regions(tuple(RACKS))
    rf3 = {"replication_factor": 3, "min_insync_replicas": 2}
    unset = make_config(lr, stretched.bootstrap, tmp_path / "unset.yaml", overrides={"kafka": rf3})
    mapped = make_config(lr, stretched.bootstrap, tmp_path / "mapped.yaml",
                         overrides={"kafka": {**rf3, "client_rack": {r: r for r in RACKS}}})
    ports = [free_port() for _ in range(3)]
    services("router-unset", unset.cli_args("router", "--no-health", "--regions", "r0",
                                            "--metrics-port", str(ports[0])))
    services("router-r0", mapped.cli_args("router", "--no-health", "--regions", "r0",
                                          "--metrics-port", str(ports[1])))
    services("replayer-r0r1", mapped.cli_args("replayer", "--no-health", "--regions", "r0,r1",
                                              "--metrics-port", str(ports[2])))
    assert wait_until(lambda: cross_region_fetch(ports[0], "router"), timeout=90,
                      what="router (client_rack unset) sets the gauge") == {"r0": 1.0}
    assert wait_until(lambda: cross_region_fetch(ports[1], "router"), timeout=90,
                      what="router r0 (client_rack r0) sets the gauge") == {"r0": 0.0}
    assert wait_until(lambda: cross_region_fetch(ports[2], "replayer"), timeout=90,
                      what="replayer r0,r1 sets the gauge") == {"r0": 1.0, "r1": 1.0}
