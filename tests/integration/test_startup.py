"""Start-up with Kafka unreachable (issue 27): one line saying what a service waits for, then
exit code 2 with one line -- never a traceback, never librdkafka's own lines -- and SIGTERM or
SIGINT ends the wait within 2 s. Real processes; no broker is needed, that is the point.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import free_port

SERVICES = ["router", "replayer", "health", "features"]


def _config(tmp_path: Path, timeout_s: float, extra: str = "") -> Path:
    dead = free_port()  # nothing listens there
    path = tmp_path / "unreachable.yaml"
    path.write_text(f"""
kafka: {{bootstrap: "127.0.0.1:{dead}", startup_timeout_s: {timeout_s}}}
regions:
  eu: {{dsn: "postgresql://postgres@127.0.0.1:5432/postgres"}}
tables:
  users: {{key: [id]}}
metrics: {{port: 0}}
{extra}""")
    return path


def _start(service: str, cfg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "regionguard.cli", service, "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("service", SERVICES)
def test_unreachable_kafka_is_one_line_and_exit_code_2(service, tmp_path):
    proc = _start(service, _config(tmp_path, 3))
    out, err = proc.communicate(timeout=30)
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert proc.returncode == 2, lines
    assert "Traceback" not in err and not any(line.startswith("%") for line in lines), lines  # no raw librdkafka
    assert len(lines) <= 5, lines  # was 616 lines and a KafkaException traceback (router, 30 s)
    assert "waiting for Kafka at 127.0.0.1:" in err
    assert lines[-1].startswith(f"regionguard {service}: Kafka at 127.0.0.1:") and "did not answer within 3 s" in lines[-1]


@pytest.mark.parametrize("service, sig", [(s, signal.SIGTERM) for s in SERVICES] + [("router", signal.SIGINT)])
def test_a_signal_ends_the_wait_within_2_s(service, sig, tmp_path):
    proc = _start(service, _config(tmp_path, 60))
    deadline = time.monotonic() + 20
    # wait until it says it waits (its stderr is a pipe: read line by line)
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "waiting for Kafka" in line or not line:
            break
    assert proc.poll() is None, "exited before it was asked to"
    sent = time.monotonic()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    took = time.monotonic() - sent
    rest = proc.stderr.read()
    assert took < 2.0, f"{service} took {took:.2f} s to stop on {sig.name}"
    assert proc.returncode == 0 and "Traceback" not in rest, rest


def test_log_format_json_makes_every_log_line_a_json_object(tmp_path):
    import json

    proc = _start("router", _config(tmp_path, 2, "log: {format: json}"))
    _out, err = proc.communicate(timeout=30)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2
    logged = [json.loads(line) for line in lines[:-1]]  # the last line is the command's own one-line error
    assert logged and all(r["service"] == "router" and "level" in r and "time" in r for r in logged)
    assert any("waiting for Kafka" in r["message"] for r in logged)
