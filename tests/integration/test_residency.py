"""Data residency on the real broker, PostgreSQL and Redis: failover writes and reads stay inside a table's
``allowed_regions`` (docs/contract.md, "Residency")."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import redis.asyncio as aioredis

from regionguard.client import ReadUnavailable, RegionalReader
from regionguard.client.cache import cache_key, row_to_cache
from regionguard.core import wire
from regionguard.core.db import RegionDB
from regionguard.core.models import DeadReason
from tests.harness import free_port
from tests.integration.helpers import (
    ev_bytes, group_event, metric_value, produce_raw, read_json, read_topic, wait_assigned, wait_metric, wait_until,
    write_event,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
TABLES = {"users": {"key": ["id"], "version": "version"},
          "orders": {"key": ["id"], "allowed_regions": ["eu", "ap"]}}


def _regions(regions, rg_config, **kw):
    lr = regions(["eu", "us", "ap"])
    return lr, rg_config(lr, partitions=2, tables=TABLES, **kw)


def test_failover_writes_never_apply_outside_allowed_regions(regions, rg_config, services):
    lr, cfg = _regions(regions, rg_config, overrides={"redis": {"url": REDIS_URL}})
    port = free_port()
    services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")
    # orders rows written through to Redis? never: the cache has no region (redis.region unset)
    direct = write_event("eu", "orders", "insert", {"id": 50}, {"amount": 1})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(direct)])
    wait_until(lambda: lr.count("eu", "orders") == 1, what="a direct orders write")

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "users", "upsert", {"id": 0}, {"name": "probe", "version": 1}))])
    wait_metric(port, "regionguard_held_partitions", lambda n: n == 2, region="eu", what="eu held by the router")
    users_fo = write_event("eu", "users", "upsert", {"id": 1}, {"name": "fo", "version": 1},
                           policy="failover", fallback_regions=["us"])
    orders_us = write_event("eu", "orders", "insert", {"id": 1}, {"amount": 5},
                            policy="failover", fallback_regions=["us"])           # us may not hold orders
    orders_ap = write_event("eu", "orders", "insert", {"id": 2}, {"amount": 6},
                            policy="failover", fallback_regions=["us", "ap"])     # first allowed: ap
    group_us = group_event("eu", "customer/3", [
        {"table": "users", "op": "upsert", "key": {"id": 3}, "data": {"name": "g", "version": 1}},
        {"table": "orders", "op": "insert", "key": {"id": 3}, "data": {"user_id": 3, "amount": 7}}],
        policy="failover", fallback_regions=["us"])                                  # held whole, not half in us
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in (users_fo, orders_us, orders_ap,
                                                                                 group_us)])
    wait_until(lambda: lr.fetch("us", "SELECT name FROM users WHERE id = 1") == [{"name": "fo"}],
               what="the unrestricted failover write applied in us")
    wait_until(lambda: lr.fetch("ap", "SELECT amount FROM orders WHERE id = 2") != [], what="orders 2 failed over to ap")
    wait_metric(port, "regionguard_writes_residency_held_total", lambda n: n == 2, region="eu",
                what="two failover writes held for eu by residency")
    assert lr.count("us", "orders") == 0 and lr.fetch("us", "SELECT id FROM users WHERE id = 3") == []
    events = wait_until(lambda: [e for e in read_json(cfg.bootstrap, cfg.topic("failover-events"), idle=0.3)
                                 if e["kind"] == "residency_hold"], what="a residency_hold failover event")
    assert {e["detail"]["refused_region"] for e in events} == {"us"}
    assert sum(e["detail"]["writes"] for e in events) == 2
    assert {i for e in events for i in e["detail"]["write_ids"]} == {orders_us["id"], group_us["id"]}
    assert all(e["detail"]["tables"] == ["orders"] and "allowed_regions" in e["detail"]["reason"] for e in events)

    # home again: the replayer brings every held write home, the refused ones included
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: lr.count("eu", "orders") == 4, timeout=60, what="held orders replayed home")
    assert lr.fetch("eu", "SELECT name FROM users WHERE id = 3") == [{"name": "g"}]
    assert metric_value(port, "regionguard_writes_failover_applied_total", region="eu", applied_in="us") == 1

    async def cached() -> set[bytes]:
        r = aioredis.from_url(REDIS_URL)
        try:
            return {k for k in await r.keys(f"rg:eu:*") if b":orders:" in k or b":users:1" in k}
        finally:
            await r.aclose()
    wait_until(lambda: asyncio.run(cached()), what="the users row written through")  # the cache works ...
    assert not [k for k in asyncio.run(cached()) if b":orders:" in k]           # ... and holds no orders row


@pytest.mark.timeout(60)
async def test_reads_never_fall_back_outside_allowed_regions(regions, rg_config):
    lr, cf = _regions(regions, rg_config, overrides={"redis": {"url": REDIS_URL, "ttl_s": 60}})
    tag = uuid.uuid4().hex[:6]
    for r in ("eu", "us", "ap"):
        lr.execute(r, "INSERT INTO users (id, name, version) VALUES (1, $1, 1)", f"ada@{r}")
    for r in ("eu", "us"):  # a stray orders row in us (say, from before the rule): never to be read
        lr.execute(r, "INSERT INTO orders (id, amount) VALUES (1, 5)")
    cfg = cf.load()
    r = aioredis.from_url(REDIS_URL)
    keys = [cache_key("eu", "orders", {"id": 1}), cache_key("eu", "users", {"id": 2})]
    try:
        await r.set(keys[0], row_to_cache({"id": 1, "amount": 5, "status": tag}), ex=60)
        await r.set(keys[1], row_to_cache({"id": 2, "name": tag, "version": 1}), ex=60)
        lr.proxy("eu").set_mode("refuse")
        async with RegionalReader(cfg, tier_timeout_s=0.5, order=("home", "fallbacks", "redis")) as reader:
            res = await reader.get("users", {"id": 1}, region="eu")
            assert (res.tier, res.served_region) == ("fallback", "us")      # unrestricted: the first fallback
            for region in ("us", "ap"):
                lr.proxy(region).set_mode("refuse")
                lr.proxy(region).reset_all()  # the reader's pooled connection to us goes too
            res = await reader.get("users", {"id": 2}, region="eu")          # every database down: the cache
            assert res.tier == "redis" and res.row["name"] == tag
            with pytest.raises(ReadUnavailable) as ei:
                await reader.get("orders", {"id": 1}, region="eu")          # us and Redis are outside: not tried
            assert [(a.tier, a.source) for a in ei.value.attempts] == [("home", "eu"), ("fallback", "ap")]
            lr.proxy("ap").set_mode("pass")
            lr.execute("ap", "INSERT INTO orders (id, amount) VALUES (1, 5)")
            await asyncio.sleep(reader.failure_cooldown_s + 0.1)  # ap's failed attempt cools down first
            res = await reader.get("orders", {"id": 1}, region="eu")
            assert (res.tier, res.served_region) == ("fallback", "ap")
    finally:
        await r.delete(*keys)
        await r.aclose()


def test_a_region_without_a_table_it_may_not_hold_replays_its_backlog(regions, rg_config, services):
    """us may not hold orders (allowed_regions: eu, ap) and its database has no such table: that is no
    reason to keep it from replaying. Readiness requires only the tables a region may hold."""
    lr, cfg = _regions(regions, rg_config)
    lr.execute("us", "DROP TABLE orders")
    port = free_port()
    services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    wait_assigned(cfg, "router", "us")
    first = write_event("us", "users", "upsert", {"id": 0}, {"name": "direct", "version": 1})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "us"), [ev_bytes(first)])
    wait_until(lambda: lr.count("us", "users") == 1, what="a direct users write in us")

    lr.proxy("us").set_mode("refuse")
    lr.proxy("us").reset_all()
    held = [write_event("us", "users", "upsert", {"id": i}, {"name": "held", "version": 2}) for i in range(10)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "us"), [ev_bytes(e) for e in held])
    wait_metric(port, "regionguard_held_partitions", lambda n: n == 2, region="us", what="us held by the router")
    wait_until(lambda: len([m for m in read_topic(cfg.bootstrap, cfg.topic("held", "us"), idle=0.3) if m.value()])
               >= len(held), what="the writes held for us")

    lr.proxy("us").set_mode("pass")
    wait_until(lambda: {r["name"] for r in lr.fetch("us", "SELECT name FROM users")} == {"held"}
               and lr.count("us", "users") == 10, timeout=60, what="the held backlog replayed in us")
    wait_metric(port, "regionguard_held_partitions", lambda n: n == 0, region="us",
                what="every partition of us back in direct mode")
    assert metric_value(port, "regionguard_direct_partitions", region="us") == 2
    after = write_event("us", "users", "upsert", {"id": 20}, {"name": "direct again", "version": 1})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "us"), [ev_bytes(after)])
    wait_until(lambda: lr.fetch("us", "SELECT name FROM users WHERE id = 20") == [{"name": "direct again"}],
               what="a direct write after the replay")


@pytest.mark.timeout(60)
async def test_a_table_the_region_may_not_hold_is_never_required_nor_written_there(regions, rg_config):
    """The database layer's own rule, for any way a write might reach it: a write of a table outside the
    region's allowed_regions fails as a ``schema`` dead letter (its batch goes on), whether the table is
    absent -- which never makes the region "not ready" -- or present from before the rule."""
    lr, cf = _regions(regions, rg_config)
    lr.execute("us", "DROP TABLE orders")
    cfg = cf.load()
    db = RegionDB(cfg, "us")

    def batch(order_id: int) -> list:
        return [wire.decode(json.dumps(e).encode()) for e in (
            write_event("us", "users", "upsert", {"id": order_id}, {"name": "u", "version": 1}),
            write_event("us", "orders", "insert", {"id": order_id}, {"amount": 1}))]
    try:
        await db.check_ready()  # orders is not required in us
        res = await db.apply(batch(1), source="test")
        assert (res.applied, [(i, e.reason) for i, e in res.failed]) == (1, [(1, DeadReason.schema)])
        lr.execute("us", "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, amount numeric, status text)")
        db.ready = False  # learn the tables again: now orders exists in us
        res = await db.apply(batch(2), source="test")
        assert (res.applied, [(i, e.reason) for i, e in res.failed]) == (1, [(1, DeadReason.schema)])
        assert lr.count("us", "orders") == 0 and lr.count("us", "users") == 2
    finally:
        await db.close()
