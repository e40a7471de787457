"""The topic-monitoring examples (issue 13, item 4) against a real broker.

examples/monitor/regions_closed.py and examples/node/regions-closed.js read rg.region-state as
the health service publishes it and must exit 3 with no state, 1 while a region is open, 0 once
every region is closed again (the newest (epoch, seq) wins). examples/monitor/notify_open.py
must POST to its webhook when a region opens.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


from regionguard.core.config import parse_config
from regionguard.core.kafka import Confirmer, make_producer
from regionguard.core.models import FailoverEvent, RegionState, State
from tests.harness import make_config
from tests.integration.polyglot import NODE_EXAMPLES_DIR, Missing, loud_skip_reason, node_script

ROOT = Path(__file__).resolve().parents[2]
DSNS = {"eu": "postgresql://u@127.0.0.1:1/x", "us": "postgresql://u@127.0.0.1:1/y"}


def _publish(cfg, kind: str, records: list[tuple[str, bytes]]) -> None:
    prod = make_producer(cfg)
    c = Confirmer()
    for key, value in records:
        c.produce(prod, cfg.topic(kind), value, key=key.encode())
    c.wait(prod, 30)


def _state(region: str, state: State, seq: int, reason: str = "test") -> tuple[str, bytes]:
    now = datetime.now(timezone.utc)
    return region, RegionState(region=region, state=state, seq=seq, since=now, at=now, observer="test",
                               reason=reason).model_dump_json().encode()


def _checks() -> dict[str, list[str]]:
    cmds = {"python": [sys.executable, str(ROOT / "examples" / "monitor" / "regions_closed.py")]}
    try:
        cmds["node"] = node_script("regions-closed.js", NODE_EXAMPLES_DIR)
    except Missing as exc:
        loud_skip_reason("Node.js monitoring example", str(exc))
    return cmds


def _run(lang: str, cmd: list[str], cf) -> subprocess.CompletedProcess:
    args = ["--bootstrap", cf.bootstrap, "--prefix", cf.prefix] if lang == "python" else [cf.bootstrap, cf.prefix]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=90)


def test_the_exit_code_scripts_follow_region_state(broker, tmp_path):
    cf = make_config(DSNS, broker.bootstrap, tmp_path / "c.yaml", partitions=1)
    cfg = parse_config(cf.data)
    checks = _checks()
    for lang, cmd in checks.items():
        out = _run(lang, cmd, cf)
        assert out.returncode == 3 and "no region state" in out.stderr, (lang, out.stdout, out.stderr)

    _publish(cfg, "region-state", [_state("eu", State.closed, 1), _state("us", State.closed, 1),
                                   _state("us", State.open, 2, "consecutive_failures")])
    for lang, cmd in checks.items():
        out = _run(lang, cmd, cf)
        assert out.returncode == 1, (lang, out.stdout, out.stderr)
        assert "NOT CLOSED: us open" in out.stderr and "eu: closed" in out.stdout, (lang, out.stdout, out.stderr)

    _publish(cfg, "region-state", [_state("us", State.half_open, 3), _state("us", State.closed, 4, "recovered"),
                                   _state("us", State.open, 3, "older seq: ignored")])
    for lang, cmd in checks.items():
        out = _run(lang, cmd, cf)
        assert out.returncode == 0, (lang, out.stdout, out.stderr)
        assert "us: closed" in out.stdout and "seq 4" in out.stdout, (lang, out.stdout)


def test_the_notifier_posts_when_a_region_opens(broker, tmp_path):
    cf = make_config(DSNS, broker.bootstrap, tmp_path / "c.yaml", partitions=1)
    cfg = parse_config(cf.data)
    posts: queue.Queue = queue.Queue()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            posts.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / "monitor" / "notify_open.py"),
                             "--bootstrap", cf.bootstrap, "--prefix", cf.prefix,
                             "--webhook", f"http://127.0.0.1:{server.server_port}/hook"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        line = lines.get(timeout=60)
        assert line.startswith("watching"), line
        _publish(cfg, "region-state", [_state("eu", State.closed, 1), _state("eu", State.open, 2, "failure_rate")])
        ev = FailoverEvent(kind="transition", region="eu", service="health",
                           detail={"from": "closed", "to": "open", "seq": 2})
        _publish(cfg, "failover-events", [("eu", ev.model_dump_json().encode())])
        body = posts.get(timeout=30)
        assert body["region"] == "eu" and body["state"] == "open" and body["reason"] == "failure_rate"
        assert "eu is OPEN" in body["text"]
        seen = []
        while not any(s.startswith("event transition region=eu") for s in seen):
            seen.append(lines.get(timeout=30))
        assert any(s.startswith("state eu open") for s in seen), seen
    finally:
        proc.terminate()
        proc.wait(10)
        server.shutdown()
