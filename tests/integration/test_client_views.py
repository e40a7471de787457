"""RegionStates / FeatureFlags views on a real broker: latest state, callbacks, staleness, broker restart."""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone

import pytest

from regionguard.client import FeatureFlags, RegionStates, StaleViewError
from regionguard_testkit.testing import StatePublisher
from regionguard.core.kafka import Confirmer, ensure_topics, make_producer
from regionguard.core.models import FeatureFlags as FeatureFlagsRecord
from tests.harness import Broker, make_config

pytestmark = pytest.mark.timeout(60)

FEATURES = {
    "recommendations": {"off_when": ["open", "half_open"]},
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


@pytest.fixture
def cfg(broker, tmp_path):
    cf = make_config(DSNS, broker.bootstrap, tmp_path / "rg.yaml",
                     overrides={"features": FEATURES, "health": {"heartbeat_s": 0.2, "stale_after_s": 1.0}})
    return cf.load()


def test_starts_from_latest_state_and_ignores_older_seq(cfg):
    with StatePublisher(cfg, initial=None) as pub:
        pub.set("eu", "closed", seq=1)
        pub.set("eu", "open", seq=2, reason="probe timeout")
        pub.set("eu", "half_open", seq=3)
        pub.set("eu", "open", seq=1)  # older seq, published late: ignored
        pub.set("us", "closed", seq=1)
        pub.pause_heartbeats()
        seen: list[tuple[int | None, int]] = []
        states = RegionStates(cfg, on_change=lambda old, new: seen.append((old and old.seq, new.seq)))
        t0 = time.monotonic()
        with states:
            assert states.wait_ready(10)
            ready_s = time.monotonic() - t0
            assert until(lambda: states.state("us") is not None)
            assert states.state("eu").seq == 3 and states.state_name("eu") == "half_open"
            assert not states.is_closed("eu") and states.is_closed("us")
            assert states.is_closed("nowhere") and states.state_name("nowhere") == "unknown"
            assert (None, 1) in seen and (2, 3) in seen
            assert ready_s < 5, ready_s
            # live changes reach callbacks
            pub.set("eu", "closed", seq=4)
            assert until(lambda: (3, 4) in seen, 5)
            assert states.is_closed("eu")


def test_staleness_flag_exception_and_callbacks(cfg):
    with StatePublisher(cfg, heartbeat_s=0.2) as pub:
        states = RegionStates(cfg).start()
        flags = FeatureFlags(cfg, states=states).start()
        try:
            assert states.wait_ready(10)
            events: list[bool] = []
            states.subscribe_stale(events.append)
            assert until(lambda: states.last_heartbeat_age() is not None and states.last_heartbeat_age() < 0.5)
            assert not states.stale
            states.require_fresh()
            # no feature manager running: flags come from the shared rules on region states
            assert flags.status("recommendations", "eu").source == "rules"
            assert flags.is_enabled("recommendations", "eu")
            pub.set("eu", "open", reason="drill")
            assert until(lambda: not flags.is_enabled("recommendations", "eu"), 5)
            assert flags.is_enabled("recommendations", "us") and flags.is_enabled("checkout", "eu")

            pub.pause_heartbeats()
            t0 = time.monotonic()
            assert until(lambda: states.stale, 5)
            stale_after = time.monotonic() - t0
            assert 0.7 < stale_after < 2.5, stale_after  # stale_after_s = 1.0 (+ last beat's age)
            assert until(lambda: events == [True], 2), events
            with pytest.raises(StaleViewError, match="stale"):
                states.require_fresh()
            # stale: the "stale" rule applies on top of the last known states
            assert not flags.is_enabled("exports", "us")
            assert not flags.is_enabled("recommendations", "eu")
            assert flags.is_enabled("checkout", "eu")  # critical
            with pytest.raises(StaleViewError):
                flags.is_enabled("recommendations", "us", strict=True)

            pub.resume_heartbeats()
            assert until(lambda: not states.stale, 3)
            assert until(lambda: events == [True, False], 2), events
            assert flags.is_enabled("exports", "us")
        finally:
            flags.stop()
            states.stop()


def test_feature_flags_view_prefers_live_manager_records(cfg):
    prod = make_producer(cfg)
    now = datetime.now(timezone.utc)
    stop = threading.Event()

    def publish(disabled, seq, hb=False):
        c = Confirmer()
        rec = FeatureFlagsRecord(region="eu", disabled=disabled, seq=seq, since=now, reason="test",
                                 heartbeat=hb, at=datetime.now(timezone.utc))
        c.produce(prod, cfg.topic("features"), rec.model_dump_json().encode(), key=b"eu")
        c.wait(prod)

    publish(["recommendations"], 5)
    changes = []
    view = FeatureFlags(cfg, on_change=lambda old, new: changes.append(new.seq)).start()

    def beat():
        while not stop.wait(0.2):
            publish(["recommendations"], 5, hb=True)

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    try:
        assert view.wait_ready(10)
        assert until(lambda: view.flags("eu") is not None)
        st = view.status("recommendations", "eu")
        assert st.source == "flags" and not st.enabled and not st.stale
        assert view.is_enabled("recommendations", "eu", strict=True) is False
        assert view.disabled("eu") == {"recommendations"}
        assert view.is_enabled("anything-unconfigured", "eu")
        publish([], 6)
        assert until(lambda: view.is_enabled("recommendations", "eu"), 5)
        assert changes == [5, 6]  # heartbeats (same seq) are not changes
        stop.set()
        t.join()
        assert until(lambda: view.stale, 4)
        st = view.status("recommendations", "eu")
        assert st.stale and st.source == "last_known"
    finally:
        stop.set()
        view.stop()


def test_views_survive_a_broker_restart(tmp_path):
    """A private tansu (restart wipes its memory): views keep the last state, then follow the new log.

    The feature manager runs in-process, so its flags must come back through the restart too.
    """
    if os.environ.get("KAFKA_BOOTSTRAP"):
        pytest.skip("needs the embedded broker to restart it")
    from regionguard.features.service import FeatureManager

    with Broker(log_path=tmp_path / "tansu.log") as b:
        cf = make_config(DSNS, b.bootstrap, tmp_path / "rg.yaml",
                         overrides={"features": FEATURES, "health": {"heartbeat_s": 0.2, "stale_after_s": 3.0}})
        cfg = cf.load()
        pub = StatePublisher(cfg, heartbeat_s=0.2).start()
        mgr = FeatureManager(cfg)
        mt = threading.Thread(target=mgr.run, daemon=True)
        mt.start()
        states = RegionStates(cfg).start()
        flags = FeatureFlags(cfg).start()  # no region-state fallback: only the manager's records count
        try:
            assert states.wait_ready(10) and flags.wait_ready(10)
            pub.set("eu", "open", reason="before restart")
            assert until(lambda: states.state_name("eu") == "open", 5)
            assert until(lambda: flags.flags("eu") is not None and flags.flags("eu").disabled == ["recommendations"], 5)
            seq_before = flags.flags("eu").seq
            t0 = time.monotonic()
            b.restart()
            restart_s = time.monotonic() - t0
            # as after any broker outage: no start-up check, the publisher may have auto-created a topic already
            ensure_topics(cfg, timeout=10, check=False)
            # the old log is gone; the last known state stays readable meanwhile
            assert states.state_name("eu") == "open"
            assert not flags.is_enabled("recommendations", "eu")
            pub.set("eu", "closed", reason="after restart")
            t1 = time.monotonic()
            assert until(lambda: states.state_name("eu") == "closed", 20), states.state("eu")
            follow_s = time.monotonic() - t1
            assert until(lambda: flags.is_enabled("recommendations", "eu"), 20), flags.flags("eu")
            flags_s = time.monotonic() - t1
            assert flags.flags("eu").seq > seq_before
            assert not states.stale and not flags.stale
            print(f"broker restart {restart_s:.1f}s; after the first publish on the new broker the state view "
                  f"followed in {follow_s:.2f}s and the flags view in {flags_s:.2f}s")
        finally:
            mgr.stop()
            mt.join(10)
            flags.stop()
            states.stop()
            pub.stop()
