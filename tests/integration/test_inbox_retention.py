"""Inbox retention on real PostgreSQL: old inbox rows and tombstones go, recent ones stay.

The default retention is 15 days (held topic 14 d + 1 d margin): rows are
seeded 20 days old (pruned) and 1 or 14 days old (kept).
"""

from __future__ import annotations

import json

import asyncio
import subprocess
import sys
import urllib.request

from regionguard.core import metrics as m
from regionguard.core.config import parse_config
from regionguard.core.inbox import InboxPruner
from regionguard.core.sql import INBOX_DDL
from regionguard_testkit.embedded.config import regions_config, write_config
from tests.harness import free_port
from tests.integration.helpers import ev_bytes, produce_raw, wait_until, write_event

SEED = """
INSERT INTO regionguard_applied (write_id, tbl, source, applied_at)
SELECT gen_random_uuid(), 'users', 'seed', now() - make_interval(days => $1) - g * interval '1 second'
FROM generate_series(1, $2) AS g
"""
TOMB = """
INSERT INTO regionguard_tombstones (table_name, key, version, deleted_at)
SELECT 'users', jsonb_build_array(g + $3), '5', now() - make_interval(days => $1) FROM generate_series(1, $2) AS g
"""


def _metric(port: int, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples with ``labels`` on a service's /metrics (0 while it does not serve)."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()))


def seed(lr, region: str = "eu") -> None:
    """30 inbox rows and 3 tombstones 20 days old; 10 + 1 inbox rows and 2 tombstones within 15 days."""
    lr.execute(region, INBOX_DDL)
    lr.execute(region, SEED, 20, 30)
    lr.execute(region, SEED, 1, 10)
    lr.execute(region, SEED, 14, 1)
    lr.execute(region, TOMB, 20, 3, 1000)  # keys no test writes (a tombstone would make them stale)
    lr.execute(region, TOMB, 1, 2, 2000)


def counts(lr, region: str = "eu") -> tuple[int, int]:
    return lr.count(region, "regionguard_applied"), lr.count(region, "regionguard_tombstones")


def test_old_rows_are_pruned_in_batches_and_recent_ones_kept(regions):
    lr = regions(["eu"])
    seed(lr)
    cfg = parse_config({"regions": {"eu": {"dsn": lr.direct_dsn("eu")}}, "tables": {"users": {"key": ["id"]}},
                        "inbox": {"prune_batch": 7, "prune_pause_s": 0}})
    before = m.INBOX_PRUNED.labels("eu", "inbox")._value.get()
    pruner = InboxPruner(cfg, "eu", lr.direct_dsn("eu"))
    done = asyncio.run(pruner.round())
    assert (done.inbox, done.tombstones) == (30, 3)
    assert counts(lr) == (11, 2)
    assert m.INBOX_PRUNED.labels("eu", "inbox")._value.get() - before == 30
    assert lr.fetchval("eu", "SELECT min(applied_at) > now() - interval '15 days' FROM regionguard_applied")
    again = asyncio.run(pruner.round())
    assert (again.inbox, again.tombstones) == (0, 0) and counts(lr) == (11, 2)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regionguard", "inbox", "prune", *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_dry_run_counts_then_prune_deletes_and_bad_input_is_one_line(regions, tmp_path):
    lr = regions(["eu"])
    seed(lr)
    cfg = write_config({"regions": {"eu": {"dsn": lr.direct_dsn("eu")},
                                    "down": {"dsn": "postgresql://app:s3cret@127.0.0.1:1/app"}},
                        "tables": {"users": {"key": ["id"], "version": "version"}}}, tmp_path / "rg.yaml")

    dry = _cli("--config", str(cfg), "--region", "eu", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == "eu: 30 inbox rows and 3 tombstones older than 15d would be deleted (dry run)\n"
    assert counts(lr) == (41, 5)  # nothing deleted
    as_json = _cli("--config", str(cfg), "--region", "eu", "--dry-run", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"region": "eu", "inbox": 30, "tombstones": 3,
                                          "older_than_s": 15 * 86400, "dry_run": True}

    for args, want in (
        (("--region", "nowhere"), "regionguard inbox: --region: unknown region 'nowhere' (configured: eu, down)"),
        (("--region", "down", "--dry-run"), "regionguard inbox: region down: cannot connect to 127.0.0.1:1: "),
    ):
        bad = _cli("--config", str(cfg), *args)
        assert bad.returncode == 2 and bad.stdout == ""
        assert bad.stderr.startswith(want) and bad.stderr.count("\n") == 1, bad.stderr
        assert "Traceback" not in bad.stderr and "s3cret" not in bad.stderr

    everywhere = _cli("--config", str(cfg))  # every region: eu is pruned, down is reported, exit 2
    assert everywhere.returncode == 2
    assert everywhere.stdout == "eu: 30 inbox rows and 3 tombstones older than 15d deleted\n"
    assert everywhere.stderr.startswith("regionguard inbox: region down: cannot connect")
    assert counts(lr) == (11, 2)


def test_the_router_prunes_in_the_background_while_it_applies(regions, rg_config, services):
    lr = regions(["eu"])
    seed(lr)
    cfg = rg_config(lr, partitions=1, overrides={"inbox": {"prune_every_s": 1, "prune_batch": 4}})
    port = free_port()
    services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    evs = [write_event("eu", "users", "upsert", {"id": i}, {"name": "x", "version": 1}) for i in range(20)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    wait_until(lambda: lr.count("eu", "users") == 20, timeout=60, what="writes applied")
    wait_until(lambda: counts(lr) == (11 + 20, 2), timeout=60, what="old inbox rows and tombstones pruned")
    assert wait_until(lambda: _metric(port, "regionguard_inbox_pruned_total", region="eu", table="inbox") == 30,
                      timeout=30, what="pruned rows counted")
    assert _metric(port, "regionguard_inbox_pruned_total", region="eu", table="tombstones") == 3
