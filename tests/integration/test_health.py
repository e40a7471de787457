"""The health service as real processes, on a real broker, against real PostgreSQL behind fault proxies."""

from __future__ import annotations

import json

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING

from regionguard.core.config import Config
from regionguard.core.models import FailoverEvent, RegionState
from regionguard.health.service import TopicTail
from tests.harness import FaultProxy, free_port, write_config
from tests.integration.helpers import metric_value, read_json_to_end, wait_group, wait_metric

pytestmark = pytest.mark.timeout(90)
REPO = Path(__file__).resolve().parents[2]


class Collect:
    """Every record of one topic, from the beginning, parsed, with local receive times."""

    def __init__(self, cfg: Config, kind: str, model):
        self.items: list[tuple[float, object]] = []
        self._lock = threading.Lock()
        self.model = model
        self.tail = TopicTail(cfg, cfg.topic(kind), OFFSET_BEGINNING, self._deliver, f"test-{kind}").start()

    def _deliver(self, _p, _o, value):
        if value:
            with self._lock:
                self.items.append((time.monotonic(), self.model.model_validate_json(value)))

    def since(self, t0: float = 0.0) -> list:
        with self._lock:
            return [x for t, x in self.items if t >= t0]

    def latest(self, region: str) -> RegionState | None:
        recs = [r for r in self.since() if r.region == region]
        return recs[-1] if recs else None

    def stop(self):
        self.tail.stop()


def until(pred, timeout: float, step: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def session_s(broker) -> float:
    # the config floor, Apache Kafka's default group.min.session.timeout.ms
    return 6.0


def start_health(services, cf_path, name: str):
    """A health instance serving /metrics on a free port of its own (``proc.metrics_port``)."""
    port = free_port()
    proc = services(f"health-{name}", ["health", "--config", str(cf_path), "--observer", name,
                                       "--metrics-port", str(port)])
    proc.metrics_port = port
    return proc


def leader(proc) -> float | None:
    """``regionguard_health_leader`` of a health instance (None while it does not serve yet)."""
    return metric_value(proc.metrics_port, "regionguard_health_leader")


def wait_leader(proc, timeout: float = 30.0) -> None:
    wait_metric(proc.metrics_port, "regionguard_health_leader", lambda v: v == 1, timeout=timeout,
                what=f"{proc.name} the leader")


def wait_election(cfg: Config, members: int, timeout: float = 30.0) -> None:
    """``members`` health instances joined the leader election: faust's consumer group (id
    ``<prefix>health``) is stable with that many members, one of them holding the leader partition."""
    wait_group(cfg.kafka.bootstrap, f"{cfg.kafka.topic_prefix}health", members=members, timeout=timeout,
               what=f"{members} health instance(s) in the leader election")


def metric(proc, name: str, **labels: str) -> float | None:
    return metric_value(proc.metrics_port, name, **labels)


def state_of(col: Collect, region: str) -> str | None:
    st = col.latest(region)
    return st.state.value if st else None


def test_detects_blackhole_and_refuse_recovers_and_obeys_operators(broker, regions, rg_config, services):
    lr = regions(["eu", "us"], schema=None)
    cf = rg_config(lr, overrides={"health": {"leader_session_timeout_s": session_s(broker)}})
    cfg = cf.load()
    states, events = Collect(cfg, "region-state", RegionState), Collect(cfg, "failover-events", FailoverEvent)
    try:
        h1 = start_health(services, cf.path, "h1")
        wait_leader(h1)
        assert until(lambda: state_of(states, "eu") == "closed" and state_of(states, "us") == "closed", 10)

        timings = {}
        for mode in ("blackhole", "refuse"):
            t0 = time.monotonic()
            lr.proxy("eu").set_mode(mode)
            assert until(lambda: state_of(states, "eu") == "open", 5), f"{mode}: eu never opened"
            timings[mode] = time.monotonic() - t0
            assert states.latest("eu").reason == "consecutive_failures"
            lr.proxy("eu").set_mode("pass")
            assert until(lambda: state_of(states, "eu") == "closed", 10), f"{mode}: eu never closed again"
        assert timings["blackhole"] < 2.0 and timings["refuse"] < 2.0, timings
        assert all(r.state.value == "closed" for r in states.since() if r.region == "us")

        # operators: force-open, release (the command line waits for the published result)
        for action, want, reason in (("force-open", "open", "forced"), ("release", "closed", "released"),
                                     ("disable", "closed", "disabled")):
            as_json = ["--json"] if action == "release" else []
            out = subprocess.run([sys.executable, "-m", "regionguard.cli", "breaker", action, "eu", *as_json,
                                  "--config", str(cf.path), "--wait", "15"],
                                 capture_output=True, text=True, timeout=30, cwd=REPO)
            assert out.returncode == 0, out.stderr
            if as_json:
                doc = json.loads(out.stdout)
                assert (doc["action"], doc["region"], doc["applied"], doc["state"]) == (action, "eu", True, want), doc
            st = states.latest("eu") if until(lambda: states.latest("eu").reason == reason, 5) else None
            assert st is not None and st.state.value == want, (action, states.latest("eu"))
        refused = metric(h1, "regionguard_probe_failures_total", kind="refused", region="eu")
        lr.proxy("eu").set_mode("refuse")  # disabled: failures never open it
        # far more failures than open a closed breaker (consecutive_failures: 8), then a state published after them
        wait_metric(h1.metrics_port, "regionguard_probe_failures_total", lambda n: n >= refused + 24,
                    kind="refused", region="eu", what="eu probes refused while disabled")
        t_failed = time.monotonic()
        assert until(lambda: any(r.region == "eu" for r in states.since(t_failed)), 10)
        assert state_of(states, "eu") == "closed" and states.latest("eu").reason == "disabled"
        lr.proxy("eu").set_mode("pass")
        bad = subprocess.run([sys.executable, "-m", "regionguard.cli", "breaker", "force-open", "mars",
                              "--config", str(cf.path)], capture_output=True, text=True, timeout=30, cwd=REPO)
        assert bad.returncode == 2 and "unknown region" in bad.stderr

        # every transition is an audit event, in order; seq increases per region
        assert until(lambda: len([e for e in events.since() if e.region == "eu"]) >= 9, 5)
        trans = [(e.detail["from"], e.detail["to"]) for e in events.since() if e.region == "eu"]
        assert trans[:3] == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
        assert trans[-3:] == [("closed", "forced_open"), ("forced_open", "closed"), ("closed", "disabled")]
        assert all(e.kind == "transition" and e.service == "health" for e in events.since())
        seqs = [r.seq for r in states.since() if r.region == "eu" and not r.heartbeat]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

        assert leader(h1) == 1.0
        assert metric(h1, "regionguard_region_state", region="eu") == 0.0
        assert metric(h1, "regionguard_probe_failures_total", kind="timeout", region="eu") > 0
        assert metric(h1, "regionguard_probe_failures_total", kind="refused", region="eu") > 0
        assert metric(h1, "regionguard_probe_latency_seconds_count", region="us") > 10
        assert metric(h1, "regionguard_breaker_transitions_total", from_state="closed", region="eu",
                      to_state="open") == 2
        assert h1.terminate(10) == 0
    finally:
        states.stop()
        events.stop()


def test_two_instances_one_decides_and_a_killed_leader_hands_over_cleanly(broker, regions, rg_config, services):
    lr = regions(["eu"], schema=None)
    cf = rg_config(lr, overrides={"health": {"leader_session_timeout_s": session_s(broker), "heartbeat_s": 0.5}})
    cfg = cf.load()
    states, events = Collect(cfg, "region-state", RegionState), Collect(cfg, "failover-events", FailoverEvent)
    try:
        h1 = start_health(services, cf.path, "h1")
        wait_leader(h1)
        lr.proxy("eu").set_mode("blackhole")  # make the state non-trivial: the new leader must keep it
        assert until(lambda: state_of(states, "eu") == "open", 5)
        lr.proxy("eu").set_mode("pass")
        assert until(lambda: state_of(states, "eu") == "closed", 10)
        t_h2 = time.monotonic()
        h2 = start_health(services, cf.path, "h2")
        wait_election(cfg, 2)
        # h2 is in, probing (a live observer in the leader's stats), and not leading
        assert until(lambda: "h2" in ((states.latest("eu").stats or {}).get("observers") or {}), 15)
        wait_metric(h2.metrics_port, "regionguard_health_leader", lambda v: v == 0, what="h2 serving, not leading")
        # a few of h1's heartbeats (heartbeat_s 0.5) since both are in: only one decides
        t_both = time.monotonic()
        assert until(lambda: len([r for r in states.since(t_both) if r.region == "eu"]) >= 6, 15)
        assert {r.observer for r in states.since(t_h2)} == {"h1"}  # h2 never published: never led
        assert leader(h1) == 1.0
        assert leader(h2) == 0.0
        before = states.latest("eu")
        n_events = len(read_json_to_end(cf.bootstrap, cf.topic("failover-events")))

        t_kill = time.monotonic()
        h1.kill()
        took = until(lambda: any(r.observer == "h2" for r in states.since(t_kill)), 20)
        handover = time.monotonic() - t_kill
        assert took, "h2 never took over"
        assert handover < session_s(broker) + 6, handover
        # h2 leads and has heartbeated a few times since (heartbeat_s 0.5)
        wait_metric(h2.metrics_port, "regionguard_health_leader", lambda v: v == 1, what="h2 the leader")
        assert until(lambda: len([r for r in states.since(t_kill) if r.region == "eu" and r.observer == "h2"]) >= 3, 10)
        after = [r for r in states.since(t_kill) if r.region == "eu"]
        # no false transition: the new leader resumes the same state and seq, as heartbeats
        assert all(r.heartbeat and r.seq == before.seq and r.state == before.state for r in after), after
        assert len(read_json_to_end(cf.bootstrap, cf.topic("failover-events"))) == n_events
        # and the new leader decides: a real outage still opens the region, with a higher seq
        lr.proxy("eu").set_mode("refuse")
        assert until(lambda: state_of(states, "eu") == "open", 5)
        assert states.latest("eu").seq > before.seq and states.latest("eu").observer == "h2"
        print(f"handover after SIGKILL: {handover:.2f}s")
    finally:
        states.stop()
        events.stop()


def test_quorum_two_ignores_one_cut_off_observer(broker, regions, rg_config, services, tmp_path):
    lr = regions(["eu"], schema=None)
    cf = rg_config(lr, overrides={"health": {"leader_session_timeout_s": session_s(broker), "quorum": 2}})
    cfg = cf.load()
    # h2 reaches the same database through its own path (proxy), h1 through the region's proxy
    with FaultProxy(lr.host, lr.port, name="pg-eu-h2") as path2:
        data = dict(cf.data)
        data["regions"] = {"eu": {**cf.data["regions"]["eu"],
                                  "dsn": f"postgresql://{lr.user}@{path2.host}:{path2.port}/{lr.databases['eu']}"}}
        h2_cfg = write_config(data, tmp_path / "h2.yaml")
        states = Collect(cfg, "region-state", RegionState)
        try:
            h1 = start_health(services, cf.path, "h1")
            h2 = start_health(services, h2_cfg, "h2")
            wait_election(cfg, 2)
            assert until(lambda: state_of(states, "eu") == "closed", 15)
            lr.proxy("eu").set_mode("blackhole")  # only h1 is cut off
            t0 = time.monotonic()
            # the leader has seen h1 fail many times over (consecutive_failures: 8 would open a breaker
            # without the quorum) and published it: ignored, below the quorum
            assert until(lambda: (st := states.latest("eu")) is not None and st.stats["ignored_failures"] >= 40
                         and st.stats["observers"].get("h1", {}).get("ok") is False, 30), states.latest("eu")
            assert [r for r in states.since(t0) if r.state.value != "closed"] == []
            st = states.latest("eu")
            assert st.stats["ignored_failures"] > 0 and st.stats["quorum"] == 2
            assert st.stats["observers"]["h1"]["ok"] is False and st.stats["observers"]["h2"]["ok"] is True
            path2.set_mode("blackhole")  # now both observers see it: a regional outage
            t1 = time.monotonic()
            assert until(lambda: state_of(states, "eu") == "open", 5)
            print(f"quorum 2: opened {time.monotonic() - t1:.2f}s after the second observer was cut off")
        finally:
            states.stop()


def test_by_default_one_of_two_observers_cut_off_leaves_the_region_closed(broker, regions, rg_config, services,
                                                                          tmp_path):
    """Issue 25, finding 9c: no quorum configured. h1 is cut off from eu (its path blackholed), h2 still
    reaches it: a majority of the two live observers is two, so eu stays closed; cutting h2 off too opens it."""
    lr = regions(["eu"], schema=None)
    cf = rg_config(lr, overrides={"health": {"leader_session_timeout_s": session_s(broker)}})
    cfg = cf.load()
    assert cfg.health.quorum is None
    with FaultProxy(lr.host, lr.port, name="pg-eu-h2-default") as path2:
        data = dict(cf.data)
        data["regions"] = {"eu": {**cf.data["regions"]["eu"],
                                  "dsn": f"postgresql://{lr.user}@{path2.host}:{path2.port}/{lr.databases['eu']}"}}
        h2_cfg = write_config(data, tmp_path / "h2.yaml")
        states = Collect(cfg, "region-state", RegionState)
        try:
            start_health(services, cf.path, "h1")
            start_health(services, h2_cfg, "h2")
            wait_election(cfg, 2)
            # both observers live in the leader's eyes before the fault
            assert until(lambda: (st := states.latest("eu")) is not None and st.state.value == "closed"
                         and set((st.stats or {}).get("observers") or {}) >= {"h1", "h2"}, 20), states.latest("eu")
            lr.proxy("eu").set_mode("blackhole")  # only h1 is cut off
            t0 = time.monotonic()
            # far more of h1's failures than consecutive_failures (8) have been seen, and ignored
            assert until(lambda: (st := states.latest("eu")) is not None and st.stats["ignored_failures"] >= 40
                         and st.stats["observers"].get("h1", {}).get("ok") is False, 30), states.latest("eu")
            assert [r for r in states.since(t0) if r.state.value != "closed"] == []
            st = states.latest("eu")
            assert st.stats["quorum"] == 2 and st.stats["observers"]["h2"]["ok"] is True
            path2.set_mode("blackhole")  # both cut off: a regional outage
            t1 = time.monotonic()
            assert until(lambda: state_of(states, "eu") == "open", 5)
            print(f"default quorum: opened {time.monotonic() - t1:.2f}s after the second observer was cut off")
        finally:
            states.stop()


def test_heal_after_an_outage_longer_than_the_open_waits_closes_within_a_second_or_two(
        broker, regions, rg_config, services):
    """Issue 12: the open wait has doubled to 8 s when the region heals; successful probes end it early."""
    lr = regions(["eu"], schema=None)
    cf = rg_config(lr, overrides={"health": {"leader_session_timeout_s": session_s(broker)}})
    cfg = cf.load()
    states = Collect(cfg, "region-state", RegionState)
    try:
        h1 = start_health(services, cf.path, "h1")
        wait_leader(h1)
        assert until(lambda: state_of(states, "eu") == "closed", 10)
        t0 = time.monotonic()
        lr.proxy("eu").set_mode("blackhole")
        # open, then two failed trials: 2 s and 4 s open waits; the third one is 8 s

        def moves(since: float) -> list[tuple[str, str]]:
            return [(r.state.value, r.reason) for r in states.since(since) if not r.heartbeat]

        assert until(lambda: moves(t0).count(("open", "trial_failed")) >= 2, 15), moves(t0)
        assert ("closed", "trial_succeeded") not in moves(t0)  # no false close while the fault lasts
        healed = time.monotonic()
        lr.proxy("eu").set_mode("pass")
        assert until(lambda: state_of(states, "eu") == "closed", 5), states.latest("eu")
        took = time.monotonic() - healed
        assert moves(healed) == [("half_open", "probes_succeeded"), ("closed", "trial_succeeded")], moves(healed)
        assert took < 3.0, took
        print(f"heal -> closed {took:.2f}s (open wait was 8 s)")
    finally:
        states.stop()


def test_bad_config_is_one_line_exit_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("regions: {eu: {dsn: x}}\ntables: {t: {key: [id]}}\nhealth: {quorum: 0}\n")
    out = subprocess.run([sys.executable, "-m", "regionguard.cli", "health", "--config", str(p)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2 and re.search(r"health\.quorum", out.stderr), out.stderr
    assert "Traceback" not in out.stderr
