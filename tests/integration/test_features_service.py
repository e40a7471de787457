"""``regionguard features`` as a real subprocess on a real broker.

Region states are published to ``<prefix>region-state`` the way the health
service does (the topic is the contract); the manager's output is read back
with the client library's FeatureFlags view and a plain consumer on
``<prefix>failover-events``.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from regionguard.client import FeatureFlags
from regionguard_testkit.testing import StatePublisher
from regionguard.core.models import FeatureFlags as FeatureFlagsRecord
from tests.harness import ServiceProcess, free_port, make_config
from tests.integration.helpers import metric_value, read_json_to_end, read_to_end

pytestmark = pytest.mark.timeout(90)

FEATURES = {
    "recommendations": {"off_when": ["open", "half_open"]},
    "search": {"off_when": ["open"]},
    "exports": {"off_when": ["stale"]},
    "checkout": {"critical": True},
}
DSNS = {"eu": "postgresql://app@127.0.0.1:1/eu", "us": "postgresql://app@127.0.0.1:1/us"}


def until(pred, timeout: float = 10.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


class Events:
    """Collects FailoverEvents of the feature manager in a background thread."""

    def __init__(self, cfg) -> None:
        self.items: list[dict] = []
        self._stop = threading.Event()
        self._c = Consumer(cfg.kafka_client_conf(**{"group.id": "t-events", "enable.auto.commit": False}))
        self._c.assign([TopicPartition(cfg.topic("failover-events"), 0, OFFSET_BEGINNING)])
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            m = self._c.poll(0.1)
            if m is not None and not m.error():
                ev = json.loads(m.value())
                if ev.get("service") == "features":
                    self.items.append(ev)

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        self._c.close()


def features_events(cf) -> list[dict]:
    """The feature manager's failover events, up to the end of the topic."""
    return [e for e in read_json_to_end(cf.bootstrap, cf.topic("failover-events")) if e.get("service") == "features"]


def records_since(cf, region: str, t: datetime) -> list[FeatureFlagsRecord]:
    """Records of ``region`` on the features topic (up to its end) written by a feature manager after ``t``."""
    recs = [FeatureFlagsRecord.model_validate_json(m.value())
            for m in read_to_end(cf.bootstrap, cf.topic("features")) if m.value()]
    return [r for r in recs if r.region == region and r.at > t]


def test_feature_manager_follows_region_states_and_staleness(broker, tmp_path):
    cf = make_config(DSNS, broker.bootstrap, tmp_path / "rg.yaml",
                     overrides={"features": FEATURES, "health": {"heartbeat_s": 0.2, "stale_after_s": 1.5}})
    cfg = cf.load()
    pub = StatePublisher(cfg, heartbeat_s=0.2).start()
    flags = FeatureFlags(cfg).start()
    events = Events(cfg)
    port = free_port()
    svc = ServiceProcess("features", cf.cli_args("features", "--metrics-port", str(port)), log_dir=tmp_path)
    try:
        # started: its first flags of every region are published
        assert until(lambda: flags.flags("eu") is not None and flags.flags("us") is not None, 40), svc.log_tail()
        first = flags.flags("eu")
        assert first.disabled == [] and not flags.stale

        def wait_disabled(region, expected, timeout=5.0):
            t0 = time.monotonic()
            ok = until(lambda: (f := flags.flags(region)) is not None and f.disabled == expected, timeout)
            assert ok, (region, expected, flags.flags(region), svc.log_tail())
            return time.monotonic() - t0

        lat = {}
        pub.set("eu", "open", reason="3 consecutive failures")
        lat["open"] = wait_disabled("eu", ["recommendations", "search"])
        rec = flags.flags("eu")
        assert rec.seq > first.seq and "region eu open (3 consecutive failures)" in rec.reason
        assert flags.flags("us").disabled == []
        assert not flags.is_enabled("search", "eu") and flags.is_enabled("checkout", "eu")

        pub.set("eu", "half_open")
        lat["half_open"] = wait_disabled("eu", ["recommendations"])
        pub.set("eu", "closed")
        lat["closed"] = wait_disabled("eu", [])

        # health heartbeats stop: every region turns stale -> "exports" off; the state stays
        pub.pause_heartbeats()
        t0 = time.monotonic()
        wait_disabled("eu", ["exports"], timeout=6)
        wait_disabled("us", ["exports"], timeout=2)
        lat["stale"] = time.monotonic() - t0
        assert "health heartbeats stopped" in flags.flags("us").reason
        assert lat["stale"] >= 1.0, lat  # not before stale_after_s (1.5 s minus the last beat's age)
        pub.resume_heartbeats()
        lat["fresh"] = wait_disabled("eu", [], timeout=5)

        # every change is a failover event
        assert until(lambda: sum(1 for e in events.items if e["region"] == "eu") >= 6, 5), events.items
        eu = [e for e in events.items if e["region"] == "eu"]
        assert all(e["kind"] == "features_changed" for e in eu)
        assert [e["detail"]["disabled"] for e in eu[:6]] == [
            [], ["recommendations", "search"], ["recommendations"], [], ["exports"], []]
        assert eu[1]["detail"]["turned_off"] == ["recommendations", "search"]
        assert eu[2]["detail"]["turned_on"] == ["search"]
        seqs = [e["detail"]["seq"] for e in eu]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        # heartbeats: the manager republishes its records, so the view stays fresh without changes
        age = flags.last_heartbeat_age()
        assert age is not None and age < 1.0

        # metrics
        pub.set("us", "open")
        wait_disabled("us", ["recommendations", "search"])
        assert metric_value(port, "regionguard_feature_disabled", feature="search", region="us") == 1.0
        assert metric_value(port, "regionguard_feature_disabled", feature="search", region="eu") == 0.0
        assert metric_value(port, "regionguard_feature_disabled", feature="checkout", region="us") == 0.0

        # restart: the seq continues and an unchanged set is not republished as a change
        before = flags.flags("us")
        assert until(lambda: any(e["detail"]["seq"] == before.seq for e in events.items), 5)
        n_events = len(features_events(cf))
        assert svc.terminate(timeout=10) == 0
        assert "features stopped" in svc.log_text(current=True)
        restarted = datetime.now(timezone.utc)
        svc.start()
        # the new incarnation runs: it steps (publishing any change first), then heartbeats its records
        after = until(lambda: records_since(cf, "us", restarted), 40)
        assert after, svc.log_tail()
        assert all(r.heartbeat and r.seq == before.seq and r.disabled == before.disabled for r in after), after
        assert flags.flags("us").seq == before.seq and flags.flags("us").disabled == before.disabled
        assert len(features_events(cf)) == n_events
        pub.set("us", "closed")
        wait_disabled("us", [])
        assert flags.flags("us").seq > before.seq
        print("feature manager latency (s):", {k: round(v, 3) for k, v in lat.items()})
        for k in ("open", "half_open", "closed"):
            assert lat[k] < 1.5, lat
    finally:
        svc.terminate(timeout=10)
        events.close()
        flags.stop()
        pub.stop()


def test_feature_manager_bad_config_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: {eu: {dsn: x}}\ntables: {t: {key: [id]}}\nfeatures: {f: {off_when: [sometimes]}}\n")
    svc = ServiceProcess("features-bad", ["features", "--config", str(bad)], log_dir=tmp_path)
    assert svc.wait(30) == 2
    out = svc.log_text().strip().splitlines()
    assert out[-1].startswith("regionguard features: ") and "features.f.off_when" in out[-1]
    assert "Traceback" not in svc.log_text()
