"""Topic settings (docs/contract.md, "Topic settings"): applied at creation, checked at start.

* every topic is created with its settings (retention of held, writes and
  dead-letter topics, compaction settings, min.insync.replicas);
* an existing topic that contradicts the config stops every service with a
  one-line error naming the topic and exit code 2 (no traceback);
* on Apache Kafka, the compacted topics really compact: after many state
  records a fresh view reads far fewer of them than were published;
* a view is ready only once it has read its topic to the end, so what it
  holds at that moment is the newest state (no partial views).

None of these needs a database: the services stop before they connect.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from regionguard.core.config import parse_config
from regionguard.core.kafka import Confirmer, ensure_topics, make_producer
from regionguard.core.models import FeatureFlags, RegionState, State
from regionguard.core.stateview import RegionStateView
from tests.harness import make_config

pytestmark = pytest.mark.timeout(240)

DSNS = {"eu": "postgresql://postgres@127.0.0.1:1/none", "us": "postgresql://postgres@127.0.0.1:1/none"}


def _kind(broker) -> str:
    return getattr(broker, "kind", "external" if broker.external else "tansu")


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def _describe(bootstrap: str, topic: str) -> dict[str, str]:
    admin = _admin(bootstrap)  # keep it alive until the answer is in
    (res,) = admin.describe_configs([ConfigResource("topic", topic)]).values()
    return {k: v.value for k, v in res.result(10).items()}


def _create(bootstrap: str, topic: str, partitions: int, config: dict[str, str] | None = None) -> None:
    admin = _admin(bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})])[topic].result(15)


def test_topics_are_created_with_their_settings(broker, tmp_path):
    cf = make_config(DSNS, broker.bootstrap, tmp_path / "c.yaml", partitions=2, create_topics=False,
                     overrides={"kafka": {"topics": {"held_retention_days": 21}}})
    cfg = parse_config(cf.data)
    created = ensure_topics(cfg)
    assert cf.topic("held", "eu") in created
    day = 86_400_000
    held = _describe(cf.bootstrap, cf.topic("held", "eu"))
    assert int(held["retention.ms"]) == 21 * day and held["retention.bytes"] == "-1"
    assert held["cleanup.policy"] == "delete" and held["min.insync.replicas"] == "1"
    assert int(_describe(cf.bootstrap, cf.topic("writes", "us"))["retention.ms"]) == 7 * day
    assert int(_describe(cf.bootstrap, cf.topic("dead-letter"))["retention.ms"]) == 30 * day
    for kind in ("region-state", "features"):
        c = _describe(cf.bootstrap, cf.topic(kind))
        assert c["cleanup.policy"] == "compact", kind
        assert int(c["segment.ms"]) == 600_000 and float(c["min.cleanable.dirty.ratio"]) == 0.1
        assert int(c["delete.retention.ms"]) == 3_600_000
    # the same config again: every topic exists and matches
    assert ensure_topics(cfg) == []


SERVICES = {  # service -> extra CLI arguments
    "router": ["--metrics-port", "0"],
    "replayer": ["--metrics-port", "0"],
    "health": ["--metrics-port", "0"],
    "features": ["--metrics-port", "0"],
}


def _run_cli(service: str, cf, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "REGIONGUARD_LOG_LEVEL": "WARNING"}
    env.pop("KAFKA_BOOTSTRAP", None)  # the config names the broker
    return subprocess.run([sys.executable, "-m", "regionguard.cli", service, "--config", str(cf.path),
                           *SERVICES[service]], capture_output=True, text=True, timeout=timeout, env=env)


def _one_line_exit_2(out: subprocess.CompletedProcess, service: str, topic: str, what: str) -> None:
    lines = [ln for ln in out.stderr.splitlines() if ln.strip() and not ln.startswith("%")]  # % = librdkafka
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"regionguard {service}: topic {topic}: "), lines[0]
    assert what in lines[0], lines[0]


@pytest.mark.parametrize("service", list(SERVICES))
def test_held_with_another_partition_count_stops_the_service(broker, tmp_path, service):
    cf = make_config(DSNS, broker.bootstrap, tmp_path / "c.yaml", partitions=3, create_topics=False)
    held = cf.topic("held", "us")
    _create(cf.bootstrap, held, 2)  # writes.us gets 3 (created by the service), held.us has 2
    out = _run_cli(service, cf)
    _one_line_exit_2(out, service, held, "2 partitions, but kafka.partitions is 3")


@pytest.mark.parametrize("service", ["router", "features"])
def test_a_compacted_topic_that_is_not_compacted_stops_the_service(broker, tmp_path, service):
    cf = make_config(DSNS, broker.bootstrap, tmp_path / "c.yaml", partitions=2, create_topics=False)
    state = cf.topic("region-state")
    _create(cf.bootstrap, state, 1, {"cleanup.policy": "delete"})
    _one_line_exit_2(_run_cli(service, cf), service, state, "cleanup.policy is delete, must be compact")


def test_held_retention_shorter_than_configured_stops_the_service(broker, tmp_path):
    cf = make_config(DSNS, broker.bootstrap, tmp_path / "c.yaml", partitions=2, create_topics=False)
    held = cf.topic("held", "eu")
    _create(cf.bootstrap, held, 2, {"retention.ms": str(7 * 86_400_000)})  # the broker's usual default
    _one_line_exit_2(_run_cli("router", cf), "router", held, "shorter than kafka.topics.held_retention_days (14)")


def test_replication_factor_other_than_configured_stops_the_service(broker, tmp_path):
    # a single broker can't hold replication 2, so the config asks for 2 and finds the topics at 1
    cf = make_config(DSNS, broker.bootstrap, tmp_path / "c.yaml", partitions=2, create_topics=False)
    ensure_topics(parse_config(cf.data))
    cf2 = make_config(DSNS, broker.bootstrap, tmp_path / "c2.yaml", partitions=2, create_topics=False,
                      topic_prefix=cf.prefix, overrides={"kafka": {"replication_factor": 2}})
    out = _run_cli("health", cf2)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "replication factor 1, but kafka.replication_factor is 2" in out.stderr, out.stderr


# ---- views read their topic to the end before they say ready -------------------------------
def _state(region: str, seq: int, state: State = State.closed) -> bytes:
    now = datetime.now(timezone.utc)
    return RegionState(region=region, state=state, seq=seq, since=now, at=now, observer="test",
                       reason="test").model_dump_json().encode()


def _publish(cfg, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    prod = make_producer(cfg, **{"linger.ms": 20, "batch.num.messages": 10000})
    c = Confirmer()
    for key, value in values:
        c.produce(prod, topic, value, key=key)
        if c.pending >= 20000:
            c.wait(prod, 60)
            c = Confirmer()
    c.wait(prod, 60)


def test_a_ready_view_holds_the_newest_state(broker, tmp_path):
    """Many multi-record batches (tansu's watermark is wrong after them): ready means the end was read."""
    cf = make_config(DSNS, broker.bootstrap, tmp_path / "c.yaml", partitions=1, create_topics=False)
    cfg = parse_config(cf.data)
    ensure_topics(cfg)
    n = 20_000
    values = [(b"eu", _state("eu", i, State.open if i % 2 else State.closed)) for i in range(1, n + 1)]
    values += [(b"us", _state("us", i)) for i in range(1, 101)]
    _publish(cfg, cfg.topic("region-state"), values)
    for _ in range(3):
        with RegionStateView(cfg) as view:
            assert view.wait_ready(30)
            assert view.state("eu").seq == n and view.state("eu").state is State.closed
            assert view.state("us").seq == 100
            assert view.ready_after_s is not None


def test_compacted_state_topic_keeps_a_fresh_view_fast(broker, tmp_path):
    """Apache Kafka compacts rg.region-state: a fresh view reads about one record per region."""
    if _kind(broker) == "tansu":
        pytest.skip("tansu keeps every record (no log cleaner)")
    cf = make_config(DSNS, broker.bootstrap, tmp_path / "c.yaml", partitions=1, create_topics=False,
                     overrides={"kafka": {"topics": {"compact_segment_s": 0.5, "compact_dirty_ratio": 0.01}}})
    cfg = parse_config(cf.data)
    ensure_topics(cfg)
    topic = cfg.topic("region-state")
    rounds, per_round = 6, 10_000
    published = 0
    for r in range(rounds):  # spread over several segments (segment.ms 500 ms)
        _publish(cfg, topic, [(reg.encode(), _state(reg, r * per_round + i))
                              for i in range(1, per_round // 2 + 1) for reg in ("eu", "us")])
        published += per_round
        time.sleep(0.6)
    _publish(cfg, topic, [(b"eu", _state("eu", 10**9, State.open)), (b"us", _state("us", 10**9))])
    published += 2

    # Kafka's log cleaner looks every log.cleaner.backoff.ms (15 s by default)
    deadline = time.monotonic() + 120
    while True:
        with RegionStateView(cfg) as view:
            assert view.wait_ready(60)
            read, took = view.records, view.ready_after_s
            assert view.state("eu").seq == 10**9 and view.state("eu").state is State.open
            assert view.state("us").seq == 10**9
        if read < published // 10 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert read < published // 10, f"no compaction: a fresh view read {read} of {published} records"
    assert took < 5.0, took
    print(f"\ncompaction: published {published}, a fresh view read {read} in {took:.2f}s")


def test_feature_follower_is_ready_at_the_end_too(broker, tmp_path):
    from regionguard.core.follower import CompactedFollower

    cf = make_config(DSNS, broker.bootstrap, tmp_path / "c.yaml", partitions=1, create_topics=False)
    cfg = parse_config(cf.data)
    ensure_topics(cfg)
    now = datetime.now(timezone.utc)
    values = [(b"eu", FeatureFlags(region="eu", disabled=["x"] if i % 2 else [], seq=i, since=now, at=now,
                                   reason="t").model_dump_json().encode()) for i in range(1, 10_001)]
    _publish(cfg, cfg.topic("features"), values)
    with CompactedFollower(cfg, cfg.topic("features"), FeatureFlags) as f:
        assert f.wait_ready(30)
        assert f.get("eu").seq == 10_000 and f.get("eu").disabled == []


# ---- the age of the oldest held write, for the retention alert -----------------------------
def test_status_exporter_sees_the_oldest_held_write(broker, tmp_path):
    from regionguard.ops.statusdata import FENCE_HEADER, StatusCollector

    cf = make_config(DSNS, broker.bootstrap, tmp_path / "c.yaml", partitions=2, create_topics=False)
    cfg = parse_config(cf.data)
    ensure_topics(cfg)
    held = cfg.topic("held", "eu")
    now_ms = int(time.time() * 1000)
    prod = make_producer(cfg)
    c = Confirmer()
    # partition 0: a router fence (3 h old, not a write), then writes held 2 h and 1 h ago
    for age_h, headers in ((3, [(FENCE_HEADER, b"1")]), (2, None), (1, None)):
        prod.produce(held, key=b"users/1", value=b"{}", partition=0, timestamp=now_ms - age_h * 3_600_000,
                     headers=headers, on_delivery=c.callback)
        c.pending += 1
    # partition 1: one write held 30 min ago
    prod.produce(held, key=b"users/2", value=b"{}", partition=1, timestamp=now_ms - 1_800_000,
                 on_delivery=c.callback)
    c.pending += 1
    c.wait(prod)
    with StatusCollector(cfg) as col:
        col.snapshot()
        age = col.held_oldest_age("eu")
        assert age is not None and 2 * 3600 - 60 < age < 2 * 3600 + 60, age
        assert col.held_oldest_age("us") is None  # nothing held there
