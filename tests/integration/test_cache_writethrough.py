"""The router keeps Redis write-through when ``redis.url`` is set (the reader's last tier)."""

from __future__ import annotations

import json
import uuid

import redis

from tests.integration.helpers import ev_bytes, produce_raw, wait_assigned, wait_until, write_event

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_applied_rows_are_written_through_and_stale_ones_are_not(regions, rg_config, services):
    region = f"c{uuid.uuid4().hex[:6]}"  # cache keys are per region: keep them unique to this test
    lr = regions([region])
    cfg = rg_config(lr, partitions=1, overrides={"redis": {"url": REDIS_URL, "ttl_s": 600}})
    r = redis.Redis.from_url(REDIS_URL)
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", region)
    evs = [
        write_event(region, "users", "upsert", {"id": 1}, {"name": "v2", "version": 2}),
        write_event(region, "users", "upsert", {"id": 1}, {"name": "stale", "version": 1}),
        write_event(region, "users", "upsert", {"id": 2}, {"name": "gone", "version": 1}),
        write_event(region, "users", "delete", {"id": 2}),
        write_event(region, "orders", "insert", {"id": 7}, {"amount": 3, "status": "new"}),
    ]
    produce_raw(cfg.bootstrap, cfg.topic("writes", region), [ev_bytes(e) for e in evs])
    wait_until(lambda: r.get(f"rg:{region}:orders:7"), what="row written through")
    user = json.loads(r.get(f"rg:{region}:users:1"))
    assert user["name"] == "v2" and user["version"] == 2  # the row as stored, not the stale write
    assert r.get(f"rg:{region}:users:2") is None
    assert 0 < r.ttl(f"rg:{region}:users:1") <= 600
    assert json.loads(r.get(f"rg:{region}:orders:7"))["status"] == "new"
    r.delete(f"rg:{region}:users:1", f"rg:{region}:orders:7")
