"""Hold and replay on the real broker and PostgreSQL, with real router and replayer processes.

No health service here: the router's own connection failures take the
region out (passive health), as docs/contract.md allows.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from tests.harness import free_port
from tests.integration.helpers import (
    committed, ev_bytes, metric_value, produce_raw, read_json, read_json_to_end, read_topic, wait_assigned,
    wait_metric, wait_until, write_event,
)


def _users(regions, region):
    return {r["id"]: r for r in regions.fetch(region, "SELECT id, name, version FROM users")}


@pytest.mark.smoke
def test_outage_holds_then_replays_in_order_exactly_once(regions, rg_config, services):
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=3)
    port = free_port()
    router = services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    replayer = services("replayer", cfg.cli_args("replayer", "--no-health"))
    wait_assigned(cfg, "router", "eu")

    # healthy: direct
    first = [write_event("eu", "users", "upsert", {"id": i}, {"name": "v1", "version": 1}) for i in range(20)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in first])
    wait_until(lambda: lr.count("eu", "users") == 20, what="direct applies")

    # outage: the router must hold, never lose
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    second = [write_event("eu", "users", "upsert", {"id": i}, {"name": "v2", "version": 2}) for i in range(20)]
    third = [write_event("eu", "users", "upsert", {"id": i}, {"name": f"v{v}", "version": v})
             for v in (3, 4) for i in range(5)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in second + third])
    held = wait_until(lambda: len(read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5)) >= 30,
                      timeout=30, what="writes diverted to the held topic")
    assert held
    assert all(r["name"] == "v1" for r in _users(lr, "eu").values())

    # recovery: replay, then direct again
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: {r["version"] for r in _users(lr, "eu").values() if r["id"] < 5} == {4}
               and {r["version"] for r in _users(lr, "eu").values() if r["id"] >= 5} == {2},
               timeout=40, what="held writes replayed")
    wait_metric(port, "regionguard_held_partitions", lambda n: n == 0, region="eu",
                what="every partition of eu back in direct mode")
    fourth = [write_event("eu", "users", "upsert", {"id": i}, {"name": "v9", "version": 9}) for i in range(20)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in fourth])
    wait_until(lambda: {r["version"] for r in _users(lr, "eu").values()} == {9}, what="direct after replay")

    # exactly once: every write id in the inbox once, none twice, none missing
    ids = {r["write_id"] for r in lr.fetch("eu", "SELECT write_id::text FROM regionguard_applied")}
    expected = {e["id"] for e in first + second + third + fourth}
    assert ids == expected
    events = read_json(cfg.bootstrap, cfg.topic("failover-events"), idle=0.5)
    kinds = Counter(e["kind"] for e in events if e["region"] == "eu")
    assert kinds["hold_started"] >= 1 and kinds["replay_started"] >= 1 and kinds["replay_finished"] >= 1
    finished = [e["detail"] for e in events if e["kind"] == "replay_finished"]
    # a drain may be reported in more than one run when the held writes arrive with gaps
    assert sum(f["applied"] + f["duplicates"] + f["stale"] for f in finished) >= 30
    assert all({"applied", "duplicates", "stale", "expired", "dead_lettered", "seconds"} <= set(f) for f in finished)
    replayer.terminate()
    router.terminate()
    assert router.returncode == 0 and replayer.returncode == 0


def test_policies_failover_shed_expired(regions, rg_config, services):
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=2)
    port = free_port()
    services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    # take eu down in the router's eyes first: a connection failure, then every partition of eu held
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "users", "upsert", {"id": 0}, {"name": "probe", "version": 1}))])
    wait_metric(port, "regionguard_apply_errors_total", lambda n: n >= 1, region="eu", what="eu unavailable")
    wait_metric(port, "regionguard_held_partitions", lambda n: n == 2, region="eu", what="eu held by the router")
    fo = write_event("eu", "users", "upsert", {"id": 1}, {"name": "fo", "version": 1},
                     policy="failover", fallback_regions=["us"])
    shed = write_event("eu", "users", "upsert", {"id": 2}, {"name": "shed", "version": 1}, policy="shed")
    exp = write_event("eu", "users", "upsert", {"id": 3}, {"name": "old", "version": 1},
                      expires_at="2000-01-01T00:00:00Z")
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in (fo, shed, exp)])
    # failover: applied in us now, and held for eu
    wait_until(lambda: lr.fetch("us", "SELECT name FROM users WHERE id = 1") == [{"name": "fo"}],
               what="failover write applied in the fallback region")
    dls = wait_until(lambda: [d for d in read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)
                              if d["reason"] in ("shed", "expired")], what="shed and expired dead letters")
    assert sorted(d["reason"] for d in dls) == ["expired", "shed"]
    held = read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5)
    fo_held = [m for m in held if m.value() and fo["id"].encode() in m.value()]
    assert fo_held and dict(fo_held[0].headers())["rg-applied-in"] == b"us"
    # sync-back: when eu returns, the replayer brings the failover write home
    replayer = services("replayer", cfg.cli_args("replayer", "--no-health"))
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: lr.fetch("eu", "SELECT name FROM users WHERE id = 1") == [{"name": "fo"}],
               timeout=40, what="failover write synced back home")
    assert lr.fetch("eu", "SELECT id FROM users WHERE id IN (2, 3)") == []
    replayer.terminate()


def test_a_synced_back_failover_write_never_expires(regions, rg_config, services):
    """A failover write applied in its fallback comes home even when its expires_at passed meanwhile.

    Only a write applied nowhere may expire: the held copy of one the fallback has (``rg-applied-in``)
    is synced back, or home would never converge with the fallback (and ``wait_applied`` already said
    ``applied_elsewhere``). A plain held write past ``expires_at`` is still dead-lettered ``expired``.
    """
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=2)
    port = free_port()
    services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "users", "upsert", {"id": 0}, {"name": "probe", "version": 1}))])
    wait_metric(port, "regionguard_held_partitions", lambda n: n == 2, region="eu", what="eu held by the router")
    # unexpired while the router routes them; expired long before eu returns
    expires = datetime.now(timezone.utc) + timedelta(seconds=4)
    fo = write_event("eu", "users", "upsert", {"id": 1}, {"name": "fo", "version": 3},
                     policy="failover", fallback_regions=["us"], expires_at=expires.isoformat())
    plain = write_event("eu", "users", "upsert", {"id": 2}, {"name": "late", "version": 1},
                        expires_at=expires.isoformat())
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(fo), ev_bytes(plain)])
    wait_until(lambda: lr.fetch("us", "SELECT name FROM users WHERE id = 1") == [{"name": "fo"}],
               what="the failover write applied in us")
    held = wait_until(lambda: {json.loads(m.value())["id"]: dict(m.headers() or []).get("rg-applied-in")
                               for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3)
                               if m.value() and json.loads(m.value())["id"] in (fo["id"], plain["id"])},
                      what="both writes held for eu")
    assert held == {fo["id"]: b"us", plain["id"]: None}
    wait_until(lambda: datetime.now(timezone.utc) > expires + timedelta(seconds=0.5), timeout=10,
               what="both writes past expires_at")

    services("replayer", cfg.cli_args("replayer", "--no-health"))
    lr.proxy("eu").set_mode("pass")

    def decided() -> list[dict] | None:
        dead = [d for d in read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.3)
                if d.get("write_id") in (fo["id"], plain["id"])]
        home = lr.fetch("eu", "SELECT id FROM users WHERE id = 1")
        return dead if plain["id"] in {d["write_id"] for d in dead} and (home or len(dead) > 1) else None
    dead = wait_until(decided, timeout=60, what="both held writes replayed or dead-lettered")
    assert [(d["write_id"], d["reason"]) for d in dead] == [(plain["id"], "expired")]  # the rule still holds
    assert _users(lr, "eu")[1] == _users(lr, "us")[1] == {"id": 1, "name": "fo", "version": 3}
    assert 2 not in _users(lr, "eu")
    wait_metric(port, "regionguard_held_partitions", lambda n: n == 0, region="eu",
                what="every partition of eu back in direct mode")


def test_replayer_offsets_gate_the_switch_back(regions, rg_config, services):
    """Without a replayer the router never goes direct again for a partition with a held backlog."""
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    port = free_port()
    services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    evs = [write_event("eu", "users", "upsert", {"id": 1}, {"name": f"n{v}", "version": v}) for v in range(1, 4)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    wait_until(lambda: len(read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3)) >= 3, what="held")
    lr.proxy("eu").set_mode("pass")
    later = write_event("eu", "users", "upsert", {"id": 1}, {"name": "n4", "version": 4})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(later)])
    # the router's probe got an answer (its passive observation says so): eu is closed in its eyes again,
    # and the held partition now waits for a replayer to pass its held writes
    wait_until(lambda: any(o["ok"] and o["observer"].startswith("router:")
                           for o in read_json_to_end(cfg.bootstrap, cfg.topic("observations"))),
               timeout=30, what="the router seeing eu answer again")
    # the newer write must not overtake the held ones: nothing applied directly, the partition still held
    assert lr.count("eu", "users") == 0
    assert metric_value(port, "regionguard_held_partitions", region="eu") == 1
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    wait_until(lambda: lr.fetch("eu", "SELECT version FROM users WHERE id = 1") == [{"version": 4}],
               timeout=40, what="replay then direct")
    # and it never did: the newer write was applied after every held one (by the replayer, or
    # directly once the replayer had passed the held writes)
    at = {r["write_id"]: r["applied_at"]
          for r in lr.fetch("eu", "SELECT write_id::text, applied_at FROM regionguard_applied")}
    assert set(at) == {e["id"] for e in evs + [later]}
    assert at[later["id"]] >= max(at[e["id"]] for e in evs)
    groups = committed(cfg.bootstrap, f"{cfg.prefix}{cfg.data['replay']['group_id']}.eu", cfg.topic("held", "eu"), 1)
    assert groups[0] > 0
