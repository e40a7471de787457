"""``regionguard drill`` as a subprocess against a running local setup.

The test process plays the local setup: a real broker, real PostgreSQL
regions behind fault proxies, the health, router and replayer services as
real processes, and a drill control server for the proxies. The drill takes
a region out through the control server while the test writes to it; the
writes must be held, replayed after the heal, and the summary must say so.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from regionguard_testkit.embedded.drillctl import ControlServer, DrillClient, DrillControlError, state_file_path
from tests.harness import free_port
from tests.integration.helpers import ev_bytes, produce_raw, wait_assigned, wait_metric, wait_until, write_event

pytestmark = pytest.mark.timeout(150)
REPO = Path(__file__).resolve().parents[2]


def _session_s(broker) -> float:
    return 6.0  # the config floor, Apache Kafka's default group.min.session.timeout.ms


class Reader:
    """Collects a subprocess's stdout lines on a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.proc = proc
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)


def test_drill_blackhole_holds_and_replays(broker, regions, rg_config, services, tmp_path, monkeypatch):
    lr = regions(["eu", "us"])
    cf = rg_config(lr, partitions=2, overrides={"health": {"leader_session_timeout_s": _session_s(broker)}})
    cfg = cf.load()
    state_file = tmp_path / "drill.json"
    monkeypatch.setenv("REGIONGUARD_DRILL_FILE", str(state_file))
    assert state_file_path(cfg) == state_file
    ctl = ControlServer({r: lr.proxy(r) for r in lr.names}, cfg=cfg).start()
    try:
        health_port = free_port()
        services("health", cf.cli_args("health", "--metrics-port", str(health_port)))
        services("router", cf.cli_args("router", "--metrics-port", "0"))
        services("replayer", cf.cli_args("replayer", "--metrics-port", "0"))
        wait_metric(health_port, "regionguard_health_leader", lambda v: v == 1, timeout=45, what="health the leader")
        wait_assigned(cf, "router", "eu", timeout=45)
        base = [write_event("eu", "users", "upsert", {"id": i}, {"name": "v1", "version": 1}) for i in range(10)]
        produce_raw(cf.bootstrap, cf.topic("writes", "eu"), [ev_bytes(e) for e in base])
        wait_until(lambda: lr.count("eu", "users") == 10, timeout=30, what="direct applies before the drill")

        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "regionguard.cli", "drill", "--config", str(cf.path),
                                 "--region", "eu", "--fault", "blackhole", "--for", "4s",
                                 "--recover-timeout", "60s", "--progress-every", "2s"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        out = Reader(proc)
        try:
            wait_until(lambda: "eu: closed -> open" in out.text() or proc.poll() is not None, timeout=30,
                       what="the drill to report eu open")
            assert "eu: closed -> open" in out.text(), out.text()
            assert lr.proxy("eu").mode == "blackhole"
            held = [write_event("eu", "users", "upsert", {"id": i}, {"name": "v2", "version": 2}) for i in range(30)]
            produce_raw(cf.bootstrap, cf.topic("writes", "eu"), [ev_bytes(e) for e in held])
            rc = proc.wait(timeout=100)
        finally:
            if proc.poll() is None:
                proc.kill()
        out.thread.join(5)
        text = out.text()
        elapsed = time.monotonic() - t0
        print(text)
        assert rc == 0, text
        assert "drill: region eu, fault blackhole" in text and "fault injected: eu blackhole" in text
        assert "healed: eu proxy back to pass" in text
        m = re.search(r"^DRILL region=eu fault=blackhole opened=yes time_to_open_s=([\d.]+) "
                      r"time_to_closed_s=([\d.]+) held=(\d+) replayed=(\d+) backlog_left=0 result=pass$",
                      text, re.M)
        assert m, text
        t_open, t_closed, n_held, n_replayed = float(m[1]), float(m[2]), int(m[3]), int(m[4])
        assert t_open < 4.0 and n_held >= 30 and n_replayed >= 30, (t_open, n_held, n_replayed)
        assert lr.proxy("eu").mode == "pass"
        wait_until(lambda: {r["version"] for r in lr.fetch("eu", "SELECT version FROM users")} == {2},
                   timeout=30, what="every held write replayed")
        print(f"drill: open after {t_open:.2f}s, closed {t_closed:.2f}s after heal, "
              f"held {n_held}, replayed {n_replayed}, whole drill {elapsed:.1f}s")
    finally:
        ctl.stop()
    assert not state_file.exists()


def test_drill_control_protocol_and_errors(regions, tmp_path, monkeypatch):
    lr = regions(["eu"], schema=None)
    monkeypatch.setenv("REGIONGUARD_DRILL_FILE", str(tmp_path / "ctl.json"))
    cfg_path = tmp_path / "rg.yaml"
    cfg_path.write_text("kafka: {bootstrap: 127.0.0.1:1}\nregions: {eu: {dsn: 'postgresql://x@127.0.0.1:1/x'}, "
                        "us: {dsn: 'postgresql://x@127.0.0.1:1/y'}}\ntables: {users: {key: [id]}}\n")

    def drill(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "regionguard.cli", "drill", "--config", str(cfg_path), *args],
                              capture_output=True, text=True, timeout=60, cwd=REPO)

    # no local setup running: one line, exit 2
    r = drill("--region", "eu", "--fault", "refuse")
    assert r.returncode == 2 and "no running local setup" in r.stderr and "Traceback" not in r.stderr
    with ControlServer({"eu": lr.proxy("eu")}, state_file=tmp_path / "ctl.json") as ctl:
        client = DrillClient.discover(control=str(tmp_path / "ctl.json"))
        assert client.proxies()["eu"]["mode"] == "pass"
        info = client.set("eu", "latency", delay_s=0.05)
        assert info["mode"] == "latency" and info["delay_s"] == 0.05 and lr.proxy("eu").mode == "latency"
        # the dead man's switch heals by itself
        info = client.set("eu", "refuse", heal_after_s=0.3)
        assert info["heal_at"] is not None and lr.proxy("eu").mode == "refuse"
        wait_until(lambda: lr.proxy("eu").mode == "pass", timeout=5, what="auto-heal")
        with pytest.raises(DrillControlError, match="no proxy for region"):
            client.set("mars", "refuse")
        with pytest.raises(DrillControlError, match="mode must be one of"):
            client.set("eu", "explode")
        with pytest.raises(DrillControlError, match="token"):
            DrillClient(ctl.url, "wrong").proxies()
        r = drill("--region", "us", "--fault", "refuse")
        assert r.returncode == 2 and "no fault proxy for region 'us'" in r.stderr, r.stderr
        r = drill("--region", "mars", "--fault", "refuse")
        assert r.returncode == 2 and "unknown region" in r.stderr
        r = drill("--region", "eu", "--fault", "refuse", "--for", "soon")
        assert r.returncode == 2 and "not a duration" in r.stderr
    assert not (tmp_path / "ctl.json").exists()
