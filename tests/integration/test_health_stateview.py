"""RegionStateView on a real broker: catch-up, seq rules, callbacks, readiness, broker restart."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from regionguard.core.config import parse_config
from regionguard.core.kafka import Confirmer, ensure_topics, make_producer
from regionguard.core.models import RegionState
from regionguard.core.log import rdkafka_log
from regionguard.core.stateview import RegionStateView
from tests.harness import Broker, regions_config

pytestmark = pytest.mark.timeout(60)
DSNS = {"eu": "postgresql://app@127.0.0.1:1/eu", "us": "postgresql://app@127.0.0.1:1/us"}


def until(pred, timeout=10.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def make_cfg(bootstrap: str):
    cfg = parse_config(regions_config(DSNS, bootstrap))
    ensure_topics(cfg)
    return cfg


def rec(region, state, seq, *, heartbeat=False, at=None):
    return RegionState(region=region, state=state, since=datetime.now(timezone.utc), seq=seq, heartbeat=heartbeat,
                       at=at or datetime.now(timezone.utc))


def publish(cfg, producer, *records, raw: list[bytes] = ()):
    c = Confirmer()
    for r in records:
        c.produce(producer, cfg.topic("region-state"), r.model_dump_json().encode(), key=r.region.encode())
    for value in raw:
        c.produce(producer, cfg.topic("region-state"), value, key=b"eu")
    c.wait(producer)


@pytest.mark.smoke
def test_catch_up_seq_rules_callbacks(broker):
    cfg = make_cfg(broker.bootstrap)
    producer = make_producer(cfg, logger=rdkafka_log)
    # one multi-record batch: tansu's high watermark is wrong for it, the view must still read it all
    publish(cfg, producer, *[rec("eu", "open" if i % 2 else "closed", i) for i in range(1, 201)],
            rec("us", "half_open", 5), raw=[b"not json", b"{}"])
    changes = []

    def on_change(old, new):
        changes.append((old.seq if old else None, new.seq))
        if new.seq == 300:
            raise RuntimeError("a broken callback must not break the view")

    with RegionStateView(cfg, on_change=on_change) as view:
        assert view.wait_ready(15)
        assert view.state("eu").seq == 200 and view.state("eu").state.value == "closed"
        assert view.state("us").state.value == "half_open" and not view.is_closed("us")
        assert view.is_closed("eu") and view.is_closed("ap") and view.state("ap") is None  # unknown counts as closed
        assert view.last_heartbeat_age() is not None and view.last_heartbeat_age() < 5
        n = len(changes)
        publish(cfg, producer, rec("eu", "open", 150))  # older seq: ignored
        publish(cfg, producer, rec("eu", "open", 300))  # callback raises: logged, swallowed
        publish(cfg, producer, rec("eu", "open", 300, heartbeat=True))  # same seq heartbeat: no change
        publish(cfg, producer, rec("eu", "half_open", 301))
        assert until(lambda: view.state("eu").seq == 301)
        assert changes[n:] == [(200, 300), (300, 301)]
        assert view.state("eu").state.value == "half_open"


def test_empty_and_missing_topic_is_ready_and_heartbeat_age(broker):
    cfg = make_cfg(broker.bootstrap)
    with RegionStateView(cfg) as view:
        assert view.wait_ready(10)
        assert view.last_heartbeat_age() is None
        producer = make_producer(cfg, logger=rdkafka_log)
        old = datetime.now(timezone.utc) - timedelta(seconds=30)
        publish(cfg, producer, rec("eu", "closed", 1, at=old))
        assert until(lambda: view.state("eu") is not None)
        assert 29 < view.last_heartbeat_age() < 40  # measured from the record's time, not from reading it
        # a stamp ahead of this clock, within health.max_clock_skew_s (60 s), counts as now; an hour
        # ahead is refused (issue 28: a forged or badly clocked record), so it refreshes nothing
        far = datetime.now(timezone.utc) + timedelta(hours=1)
        publish(cfg, producer, rec("eu", "open", 2, at=far))
        assert until(lambda: view.gate.refused.get("future_at") == 1)
        assert view.state("eu").seq == 1 and 29 < view.last_heartbeat_age() < 40
        future = datetime.now(timezone.utc) + timedelta(seconds=30)
        publish(cfg, producer, rec("eu", "closed", 1, heartbeat=True, at=future))
        assert until(lambda: view.last_heartbeat_age() < 5)
    other = parse_config(regions_config(DSNS, broker.bootstrap))  # topics never created
    with RegionStateView(other) as view:
        assert view.wait_ready(10) and view.state("eu") is None and view.is_closed("eu")


@pytest.mark.smoke
def test_survives_a_broker_restart(broker, tmp_path):
    if broker.external:
        pytest.skip("needs a private embedded broker to restart")
    with Broker(log_path=tmp_path / "tansu.log") as own:
        cfg = make_cfg(own.bootstrap)
        producer = make_producer(cfg, logger=rdkafka_log)
        publish(cfg, producer, rec("eu", "open", 10))
        with RegionStateView(cfg) as view:
            assert view.wait_ready(10) and view.state("eu").seq == 10
            own.restart()  # memory broker: every topic and record is gone
            ensure_topics(cfg)
            producer = make_producer(cfg, logger=rdkafka_log)
            publish(cfg, producer, rec("eu", "closed", 11))
            assert until(lambda: view.state("eu").seq == 11, 30)
            assert view.is_closed("eu")


@pytest.mark.smoke
def test_two_leaders_race_and_the_deposed_one_never_wins(broker):
    """Issue 12: a new health leader (epoch 2) and the old one still publishing (epoch 1, later seq),
    interleaved on the real topic: both followers of rg.region-state keep the new leader's state."""
    from regionguard.client.views import RegionStates

    cfg = make_cfg(broker.bootstrap)
    producer = make_producer(cfg, logger=rdkafka_log)
    now = datetime.now(timezone.utc)

    def led(state, seq, epoch, observer, heartbeat=False):
        return RegionState(region="eu", state=state, since=now, seq=seq, epoch=epoch, observer=observer,
                           heartbeat=heartbeat, at=datetime.now(timezone.utc))

    with RegionStateView(cfg) as view, RegionStates(cfg).start() as client_view:
        assert view.wait_ready(15) and client_view.wait_ready(15)
        publish(cfg, producer, led("closed", 1000, 1, "old"))
        publish(cfg, producer, led("open", 1001, 2, "new"))            # the new leader takes over: eu is open
        publish(cfg, producer, led("closed", 5000, 1, "old"),          # the deposed one goes on, later seqs
                led("closed", 5000, 1, "old", heartbeat=True), led("half_open", 6000, 1, "old"))
        publish(cfg, producer, led("open", 1002, 2, "new", heartbeat=True))  # a marker: everything before is read
        def seq(v):
            st = v.state("eu")
            return st.seq if st else None

        assert until(lambda: seq(view) == 1002 and seq(client_view) == 1002, 15)
        for v in (view, client_view):
            st = v.state("eu")
            assert (st.epoch, st.observer, st.state.value) == (2, "new", "open"), st
        assert not view.is_closed("eu") and not client_view.is_closed("eu")
