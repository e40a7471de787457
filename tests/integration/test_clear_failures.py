"""Clear failures (issue 12, item 9): one line naming what is wrong, never librdkafka's log or a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from regionguard_testkit.embedded import free_port, write_config

pytestmark = pytest.mark.timeout(120)


def test_write_with_the_broker_unreachable_is_one_line_naming_broker_and_cause(tmp_path):
    port = free_port()  # nothing listens there
    cfg = tmp_path / "rg.yaml"
    write_config({"kafka": {"bootstrap": f"127.0.0.1:{port}"},
                  "regions": {"eu": {"dsn": "postgresql://postgres@127.0.0.1:5432/nowhere"}},
                  "tables": {"users": {"key": ["id"]}}}, cfg)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "regionguard.cli", "write", "--config", str(cfg), "--region", "eu",
                           "--table", "users", "--op", "upsert", "--key", "id=1", "--data", "name=x"],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"})
    took = time.monotonic() - t0
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # not one librdkafka line per reconnect
    assert f"127.0.0.1:{port}" in lines[0] and "refused" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert took < 25, took  # the message timeout (15 s) and a little


def test_a_taken_metrics_port_is_one_line_naming_the_port(tmp_path):
    cfg = tmp_path / "rg.yaml"
    write_config({"kafka": {"bootstrap": "127.0.0.1:1"},
                  "regions": {"eu": {"dsn": "postgresql://postgres@127.0.0.1:5432/nowhere"}},
                  "tables": {"users": {"key": ["id"]}}}, cfg)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for service in ("router", "replayer", "health"):
            proc = subprocess.run([sys.executable, "-m", "regionguard.cli", service, "--config", str(cfg),
                                   "--metrics-port", str(port)], capture_output=True, text=True, timeout=60)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2 and len(lines) == 1, (service, proc.stderr)
            assert f"127.0.0.1:{port}" in lines[0] and "Traceback" not in proc.stderr, lines[0]


async def test_lanes_creating_the_inbox_together_never_see_a_catalog_conflict(regions):
    """Lanes and services start together on a fresh database: the inbox DDL must not fail for any of them."""
    import asyncio

    import asyncpg

    from regionguard.core.db import ensure_inbox

    lr = regions(["eu"], schema=None)
    conns = [await asyncpg.connect(lr.direct_dsn("eu")) for _ in range(8)]
    try:
        for _round in range(3):
            await asyncio.gather(*(c.execute("DROP TABLE IF EXISTS regionguard_applied, regionguard_tombstones")
                                   for c in conns[:1]))
            await asyncio.gather(*(ensure_inbox(c) for c in conns))  # raised UniqueViolation without the lock
        assert await conns[0].fetchval("SELECT count(*) FROM regionguard_applied") == 0
    finally:
        await asyncio.gather(*(c.close() for c in conns))
