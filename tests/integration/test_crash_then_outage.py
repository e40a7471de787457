"""A write applied just before a crash is never dead-lettered when it comes back during an outage.

The router applied a batch and died before committing its offsets; the region
went down; the next owner of the partition read the batch again. For a write
with policy ``shed`` (or one past ``expires_at``) it used to produce a dead
letter at once -- naming a write the region had in fact applied. Now a record
that an earlier owner may have applied is held with an ``rg-verify`` header,
and the replayer looks in the region's inbox before it dead-letters.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from tests.integration.helpers import (ev_bytes, produce_raw, read_json, read_topic, wait_assigned, wait_until,
                                      write_event)


def _dead_ids(cfg) -> set[str]:
    return {d.get("write_id") for d in read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)}


def test_applied_then_crash_then_outage_is_not_dead_lettered_as_shed(regions, rg_config, services, tmp_path):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    stall = tmp_path / "stalled.json"
    router = services("router", ["--stall-file", str(stall), *cfg.cli_args("router", "--no-health")],
                      module="regionguard_testkit.embedded.stall")
    applied = write_event("eu", "users", "upsert", {"id": 1}, {"name": "applied", "version": 1}, policy="shed")
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(applied)])
    wait_until(stall.exists, timeout=60, what="router inside the commit window")
    assert json.loads(stall.read_text())["writes"] == 1
    assert lr.fetch("eu", "SELECT write_id::text AS id FROM regionguard_applied") == [{"id": applied["id"]}]
    router.kill()  # applied in PostgreSQL, offset never committed

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    unapplied = write_event("eu", "users", "upsert", {"id": 2}, {"name": "never", "version": 1}, policy="shed")
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(unapplied)])
    services("router2", cfg.cli_args("router", "--no-health"))
    held = wait_until(lambda: [m for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3)
                               if m.value() is not None],
                      timeout=60, what="both writes held for the replayer to check")
    verify = {json.loads(m.value())["id"]: dict(m.headers()).get("rg-verify") for m in held}
    assert verify == {applied["id"]: b"shed", unapplied["id"]: b"shed"}
    assert applied["id"] not in _dead_ids(cfg)  # the router did not decide while the region was down

    later = write_event("eu", "users", "upsert", {"id": 3}, {"name": "later", "version": 1}, policy="shed")
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(later)])
    lr.proxy("eu").set_mode("pass")
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    # the replayer works in order: once the unapplied write is dead-lettered, the applied one was decided
    wait_until(lambda: {unapplied["id"], later["id"]} <= _dead_ids(cfg), timeout=60,
               what="the writes that were not applied dead-lettered as shed")
    dead = [d for d in read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)]
    assert applied["id"] not in {d.get("write_id") for d in dead}
    assert {d["reason"] for d in dead} == {"shed"}
    assert [r["name"] for r in lr.fetch("eu", "SELECT name FROM users ORDER BY id")] == ["applied"]


def test_commit_answer_lost_then_outage_is_not_dead_lettered_as_shed(regions, rg_config, services):
    """The connection dies while PostgreSQL commits the batch: the write is applied, the router never hears it.

    A deferred trigger holds the COMMIT open; the test resets the router's connection meanwhile. The
    router must treat the batch as possibly applied (found by the chaos suite's pg_crash fault: a shed
    write both applied and dead-lettered).
    """
    lr = regions(["eu"])
    lr.execute("eu", """
        CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.name = 'slow' THEN PERFORM pg_sleep(2); END IF; RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT OR UPDATE ON users
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
    """)
    cfg = rg_config(lr, partitions=1)
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")  # the write comes after the router's look at the partition's end
    applied = write_event("eu", "users", "upsert", {"id": 1}, {"name": "slow", "version": 1}, policy="shed")
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(applied)])
    wait_until(lambda: lr.fetch("eu", "SELECT count(*) AS n FROM pg_stat_activity WHERE query ILIKE 'COMMIT%' "
                                      "AND state = 'active'")[0]["n"] == 1,
               timeout=60, what="the router's COMMIT running (held open by the deferred trigger)")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()  # the answer to COMMIT never reaches the router
    wait_until(lambda: lr.count("eu", "users") == 1, what="the commit done on the server anyway")
    held = wait_until(lambda: [m for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3)
                               if m.value() is not None], timeout=60, what="the write held for the replayer")
    assert [dict(m.headers()).get("rg-verify") for m in held] == [b"shed"]
    assert applied["id"] not in _dead_ids(cfg)

    unapplied = write_event("eu", "users", "upsert", {"id": 2}, {"name": "never", "version": 1}, policy="shed")
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(unapplied)])
    lr.proxy("eu").set_mode("pass")
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    wait_until(lambda: unapplied["id"] in _dead_ids(cfg), timeout=60, what="the unapplied write dead-lettered")
    assert applied["id"] not in _dead_ids(cfg)
    assert [r["name"] for r in lr.fetch("eu", "SELECT name FROM users ORDER BY id")] == ["slow"]


def test_failover_applied_then_crash_then_expiry_is_synced_back_not_dead_lettered(regions, rg_config, services,
                                                                                  tmp_path):
    """The router applied a failover write in its fallback and died before holding it for home.

    The next owner reads it again after its ``expires_at``: it was applied in us, so it is no write
    "applied nowhere" and must not expire. The router finds it in us's inbox and holds it for sync-back
    (``rg-applied-in``); home ends equal to us. An expired failover write that no owner applied anywhere
    is still dead-lettered ``expired``.
    """
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=1)
    stall = tmp_path / "stalled.json"
    router = services("router", ["--stall-file", str(stall), "--after", "failover",
                                 *cfg.cli_args("router", "--no-health")],
                      module="regionguard_testkit.embedded.stall")
    wait_assigned(cfg, "router", "eu")
    # eu goes down: the write's direct apply fails, so the router fails it over to us (nothing held yet,
    # or the next owner would find a held backlog to wait for)
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    expires = datetime.now(timezone.utc) + timedelta(seconds=4)
    fo = write_event("eu", "users", "upsert", {"id": 1}, {"name": "fo", "version": 3},
                     policy="failover", fallback_regions=["us"], expires_at=expires.isoformat())
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(fo)])
    wait_until(stall.exists, timeout=30, what="router stalled after the failover apply")
    assert json.loads(stall.read_text()) == {"region": "eu", "fallback": "us", "writes": 1}
    assert lr.fetch("us", "SELECT name FROM users WHERE id = 1") == [{"name": "fo"}]
    router.kill()  # applied in us, never held for eu, offset never committed

    nowhere = write_event("eu", "users", "upsert", {"id": 2}, {"name": "nowhere", "version": 1},
                          policy="failover", fallback_regions=["us"], expires_at="2000-01-01T00:00:00Z")
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(nowhere)])
    wait_until(lambda: datetime.now(timezone.utc) > expires + timedelta(seconds=0.5), timeout=10,
               what="the failover write past expires_at")
    services("router2", cfg.cli_args("router", "--no-health"))
    held = wait_until(lambda: {json.loads(m.value())["id"]: dict(m.headers()) for m in
                               read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3)
                               if m.value() and json.loads(m.value())["id"] in (fo["id"], nowhere["id"])},
                      timeout=60, what="both expired failover writes held by the next owner")
    assert (held[fo["id"]].get("rg-applied-in"), held[fo["id"]].get("rg-verify")) == (b"us", None)
    assert (held[nowhere["id"]].get("rg-applied-in"), held[nowhere["id"]].get("rg-verify")) == (None, b"expired")

    lr.proxy("eu").set_mode("pass")
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    wait_until(lambda: nowhere["id"] in _dead_ids(cfg), timeout=60, what="the write applied nowhere dead-lettered")
    wait_until(lambda: lr.fetch("eu", "SELECT name FROM users WHERE id = 1"), timeout=30,
               what="the failover write synced back home")
    dead = [d for d in read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)]
    assert [(d["write_id"], d["reason"]) for d in dead] == [(nowhere["id"], "expired")]
    row = "SELECT id, name, version FROM users WHERE id = 1"
    assert lr.fetch("eu", row) == lr.fetch("us", row) == [{"id": 1, "name": "fo", "version": 3}]
