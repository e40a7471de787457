"""``regionguard config check --connect`` against real Kafka and real PostgreSQL: one line per problem.

A good config (its topics not created yet: they could be) exits 0; a missing env reference, a
missing table, a region that never answers (blackholed: the per-target timeout bounds it) and a
Kafka nobody listens on each give their own line and exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from regionguard_testkit.embedded import free_port

TIMEOUT_S = 3


def check(cfg, *, env: dict[str, str] | None = None) -> tuple[int, list[str], float]:
    base = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "RG_CHECK_PW")}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "regionguard", "config", "check", "--connect",
                           "--timeout", str(TIMEOUT_S), "--config", str(cfg.path)],
                          capture_output=True, text=True, timeout=120, env={**base, **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln.removeprefix(f"{cfg.path}: ") for ln in proc.stdout.splitlines() if "warning:" not in ln]
    return proc.returncode, lines, time.monotonic() - t0


def test_good_config_then_each_problem_gives_its_line(rg_config, regions):
    lr = regions(("eu", "us"))
    cfg = rg_config(lr, create_topics=False)

    rc, lines, _ = check(cfg)
    assert (rc, lines) == (0, ["OK (2 regions, 2 tables; Kafka and every region answered)"])

    # a secret by reference: missing, then set (PostgreSQL here trusts 127.0.0.1, so any password does)
    eu_dsn = cfg.data["regions"]["eu"]["dsn"]
    cfg.update({"regions": {"eu": {"dsn": eu_dsn.replace("postgres@", "postgres:${env:RG_CHECK_PW}@", 1)}}})
    assert "${env:RG_CHECK_PW}" in cfg.data["regions"]["eu"]["dsn"]
    rc, lines, _ = check(cfg)
    assert (rc, lines) == (2, ["regions.eu.dsn: environment variable 'RG_CHECK_PW' is not set"])
    as_json = subprocess.run([sys.executable, "-m", "regionguard", "config", "check", "--json", "--config",
                              str(cfg.path)], capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k != "RG_CHECK_PW"})
    doc = json.loads(as_json.stdout)
    assert (as_json.returncode, doc["ok"], doc["problems"]) == (
        2, False, ["regions.eu.dsn: environment variable 'RG_CHECK_PW' is not set"]), doc
    rc, lines, _ = check(cfg, env={"RG_CHECK_PW": "pw-from-env"})
    assert rc == 0, lines

    # a table the allow-list names but the databases lack, and a region that never answers
    cfg.update({"tables": {"ghosts": {"key": ["id"]}}})
    lr.proxy("us").set_mode("blackhole")
    rc, lines, took = check(cfg, env={"RG_CHECK_PW": "pw-from-env"})
    host = cfg.data["regions"]["us"]["dsn"].split("@", 1)[1].split("/", 1)[0]
    assert rc == 2
    assert sorted(lines) == sorted(["region eu: table ghosts does not exist",
                                    f"region us: no answer from {host} within {TIMEOUT_S} s"]), lines
    assert "pw-from-env" not in "\n".join(lines)
    lr.proxy("us").set_mode("pass")


def test_kafka_nobody_listens_on_is_one_line(rg_config, regions):
    cfg = rg_config(regions(("eu",)), create_topics=False)
    port = free_port()
    cfg.update({"kafka": {"bootstrap": f"127.0.0.1:{port}"}})
    rc, lines, _ = check(cfg)
    assert rc == 2
    assert len(lines) == 1 and lines[0].startswith(f"kafka: no metadata from 127.0.0.1:{port} within {TIMEOUT_S} s"), lines
