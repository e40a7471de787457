"""The router's direct mode on the real broker and PostgreSQL, as a real (killable) process."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import free_port
from tests.integration.helpers import (
    ev_bytes, metric_value, produce_raw, read_json, read_json_to_end, wait_assigned, wait_metric, wait_until,
    write_event,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.smoke
def test_sigkill_between_db_commit_and_offset_commit_is_skipped_as_duplicates(regions, rg_config, services, tmp_path):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    stall = tmp_path / "stalled.json"
    router = services("router", ["--stall-file", str(stall), *cfg.cli_args("router", "--no-health")],
                      module="regionguard_testkit.embedded.stall")
    first = wait_assigned(cfg, "router", "eu")  # member id -> partitions
    evs = [write_event("eu", "users", "upsert", {"id": i}, {"name": "x", "version": 1}) for i in range(50)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    wait_until(stall.exists, timeout=30, what="router inside the commit window")
    first_batch = json.loads(stall.read_text())["writes"]
    applied_before = lr.count("eu", "regionguard_applied")
    assert applied_before == first_batch > 0  # committed in the DB, offsets not yet committed
    router.kill()  # SIGKILL inside the window

    port = free_port()
    router2 = services("router2", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu", exclude=first)  # the killed members time out first
    wait_until(lambda: lr.count("eu", "regionguard_applied") == 50, what="all writes applied after restart")
    dup = wait_until(lambda: metric_value(port, "regionguard_writes_duplicate_total", region="eu", service="router"),
                     what="duplicates counted")
    assert dup == first_batch  # the redelivered batch was skipped by the inbox, not applied twice
    assert metric_value(port, "regionguard_writes_applied_total", region="eu", service="router") == 50 - first_batch
    assert lr.count("eu", "users") == 50
    router2.terminate()


@pytest.mark.smoke
def test_every_bad_input_is_dead_lettered_and_never_blocks(regions, rg_config, services):
    lr = regions(["eu"])
    lr.execute("eu", """
        CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.status = 'poison' THEN RAISE EXCEPTION 'rejected by trigger'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER reject_poison BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION reject_poison();
    """)
    cfg = rg_config(lr, partitions=1)
    router = services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    good = [write_event("eu", "orders", "insert", {"id": i}, {"amount": 10, "status": "ok"}) for i in range(5)]
    bad = {
        "invalid_json": (b"k1", b"{this is not json"),
        "invalid_json_binary": (b"k2", b"\x00\xff\xfe binary"),
        "schema": ev_bytes(write_event("eu", "orders", "explode", {"id": 90}, {"amount": 1})),
        "unknown_table": ev_bytes(write_event("eu", "secrets", "insert", {"id": 91}, {"x": 1})),
        "unknown_column": ev_bytes(write_event("eu", "orders", "insert", {"id": 92}, {"amount": 1, "is_admin": True})),
        "constraint": ev_bytes(write_event("eu", "orders", "insert", {"id": 93}, {"amount": -5})),
        "constraint_dup": ev_bytes(write_event("eu", "orders", "insert", {"id": 0}, {"amount": 1})),
        "schema_type": ev_bytes(write_event("eu", "orders", "insert", {"id": 94}, {"amount": "lots"})),
        "poison": ev_bytes(write_event("eu", "orders", "insert", {"id": 95}, {"amount": 1, "status": "poison"})),
    }
    items = [ev_bytes(good[0])] + list(bad.values()) + [ev_bytes(e) for e in good[1:]]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), items)
    wait_until(lambda: lr.count("eu", "orders") == 5, what="good writes applied around the bad ones")
    dls = wait_until(lambda: (lambda d: d if len(d) >= len(bad) else None)(
        read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)), what="dead letters")
    reasons = sorted(d["reason"] for d in dls)
    assert reasons == sorted(["invalid_json", "invalid_json", "schema", "unknown_table", "unknown_column",
                              "constraint", "constraint", "schema", "poison"])
    by_offset = {d["offset"]: d for d in dls}
    for offset, (_key, value) in enumerate(items):
        if offset in by_offset:
            d = by_offset[offset]
            raw = base64.b64decode(d["original"]) if d["original_encoding"] == "base64" else d["original"].encode()
            assert raw == value  # exact original bytes, so it can be fixed and re-published
            assert d["detail"] and d["topic"] == cfg.topic("writes", "eu") and d["partition"] == 0
    # a dead-lettered write leaves no inbox row, so a fixed re-publish with the same id applies
    ids = {r["write_id"] for r in lr.fetch("eu", "SELECT write_id::text FROM regionguard_applied")}
    assert ids == {e["id"] for e in good}
    assert router.alive


def test_an_update_of_key_columns_only_is_dead_lettered_next_to_an_upsert_of_the_same_columns(
        regions, rg_config, services):
    """In one batch, an upsert whose data is only its key (fine: it inserts the row) and an update
    with the same data (it would change nothing: a schema dead letter). The planner checks columns
    once per (table, op, data columns); keyed without the op, the update skipped its check, the
    batch could not be planned and the router's reader stopped."""
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    router = services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    evs = [write_event("eu", "orders", "upsert", {"id": 1}, {"id": 1}),
           write_event("eu", "orders", "update", {"id": 1}, {"id": 1}),
           write_event("eu", "orders", "insert", {"id": 2}, {"amount": 3, "status": "ok"})]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    wait_until(lambda: lr.count("eu", "orders") == 2, what="the upsert and the insert applied")
    dls = wait_until(lambda: read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5), what="a dead letter")
    assert [(d["reason"], d["offset"]) for d in dls] == [("schema", 1)]
    assert "non-key column" in dls[0]["detail"]
    assert router.alive


def test_injection_through_names_and_values_changes_nothing_else(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    hostile_value = "x'); DROP TABLE users; --"
    attempts = [
        write_event("eu", "users; DROP TABLE orders; --", "insert", {"id": 1}, {"version": 1}),
        write_event("eu", "users", "upsert", {"id": 1}, {'name" = \'pwned\'; --': 1, "version": 1}),
        write_event("eu", "users", "upsert", {'id") DO NOTHING; DROP TABLE users; --': 1}, {"version": 1}),
        write_event("eu", "users", "upsert", {"id": 2}, {"name": hostile_value, "version": 1}),
        write_event("eu", "orders", "insert", {"id": "1; DELETE FROM users"}, {"amount": 1}),
    ]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in attempts])
    wait_until(lambda: lr.count("eu", "users") == 1, what="the one legitimate write")
    dls = wait_until(lambda: (lambda d: d if len(d) >= 4 else None)(
        read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)), what="dead letters")
    assert sorted(d["reason"] for d in dls) == ["schema", "schema", "unknown_column", "unknown_table"]
    assert lr.fetch("eu", "SELECT id, name FROM users") == [{"id": 2, "name": hostile_value}]
    assert lr.count("eu", "orders") == 0  # table still there, untouched


def test_a_blackholed_region_does_not_slow_the_others(regions, rg_config, services):
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=2)
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "us")
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("blackhole")
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "users", "upsert", {"id": i}, {"name": "e", "version": 1})) for i in range(50)])
    time.sleep(0.5)  # eu's batch is now stuck on the blackhole
    t0 = time.monotonic()
    produce_raw(cfg.bootstrap, cfg.topic("writes", "us"),
                [ev_bytes(write_event("us", "users", "upsert", {"id": i}, {"name": "u", "version": 1})) for i in range(50)])
    wait_until(lambda: lr.count("us", "users") == 50, timeout=20, interval=0.05, what="us applies during eu outage")
    assert time.monotonic() - t0 < 3.0
    lr.proxy("eu").set_mode("pass")


def test_cli_write_and_a_non_python_producer(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=2)
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    out = subprocess.run([sys.executable, "-m", "regionguard.cli", "write", "--config", str(cfg.path),
                          "--region", "eu", "--table", "users", "--op", "upsert", "--key", "id=42",
                          "--data", "name=Ada", "--data", "version=7"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["key"] == "users/42"
    bad = subprocess.run([sys.executable, "-m", "regionguard.cli", "write", "--config", str(cfg.path),
                          "--region", "eu", "--table", "nope", "--op", "upsert", "--key", "id=1"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    wait_until(lambda: lr.fetch("eu", "SELECT name, version FROM users WHERE id = 42") == [{"name": "Ada", "version": 7}],
               what="CLI write applied")

    from tests.integration.polyglot import node_binary

    node = node_binary()
    example = ROOT / "examples" / "node"  # produce.js, on the client package (clients/node)
    if node is None or not (example / "node_modules" / "@regionguard" / "client").exists():
        pytest.skip("node or the Node client missing: run `npm install` in examples/node (scripts/setup.sh does)")
    res = subprocess.run([node, str(example / "produce.js"), cfg.bootstrap, cfg.prefix, "eu", "users",
                          '{"id": 43}', '{"name": "from node", "version": 1}'],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    wait_until(lambda: lr.fetch("eu", "SELECT name FROM users WHERE id = 43") == [{"name": "from node"}],
               what="node-produced write applied")


def test_transient_db_errors_retry_and_never_dead_letter(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    port = free_port()
    services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "users", "upsert", {"id": 1}, {"name": "a", "version": 1}))])
    wait_until(lambda: lr.count("eu", "users") == 1, what="first write")
    lr.execute("eu", "ALTER TABLE users RENAME TO users_away")  # an operator mistake: undefined_table
    evs = [write_event("eu", "users", "upsert", {"id": i}, {"name": "b", "version": 2}) for i in range(2, 12)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    # several failed attempts, with backoff (0.05 s, doubling): the batch is retried, not dead-lettered
    wait_metric(port, "regionguard_apply_errors_total", lambda n: n >= 4, region="eu", what="the router retrying")
    assert lr.count("eu", "users_away") == 1
    lr.execute("eu", "ALTER TABLE users_away RENAME TO users")
    wait_until(lambda: lr.count("eu", "users") == 11, timeout=30, what="writes applied after the fix")
    assert read_json_to_end(cfg.bootstrap, cfg.topic("dead-letter")) == []
