"""Data residency (tables.<t>.allowed_regions): config checks, held-write routing, read tiers,
and the decoder. Pure: no I/O."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import pytest

from regionguard.client.reader import BadRead, RegionalReader
from regionguard.core.config import ConfigError, parse_config
from regionguard.core.db import plan_writes
from regionguard.core.errors import BadWrite
from regionguard.core.models import DeadReason, WriteEvent
from regionguard.core.sql import TableSchema
from regionguard.core.writes import decode_write
from regionguard.router.decide import Route, permitted_fallbacks, route_held

NOW = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
DOC = {
    "regions": {r: {"dsn": f"postgresql://app@db-{r}/app", "fallbacks": [f for f in ("eu", "us", "ap") if f != r]}
                for r in ("eu", "us", "ap")},
    "tables": {"users": {"key": ["id"]}, "orders": {"key": ["id"], "allowed_regions": ["eu", "ap"]},
               "health_records": {"key": ["id"], "allowed_regions": ["eu"]}},
    "redis": {"url": "redis://127.0.0.1:6379/0"},
}
CFG = parse_config(DOC)


def _failover(table: str, fallbacks: list[str]) -> WriteEvent:
    return WriteEvent(id=uuid.uuid4(), region="eu", table=table, op="upsert", key={"id": 1}, data={"x": 1},
                      policy="failover", fallback_regions=fallbacks)


def test_failover_goes_to_the_first_closed_fallback_the_table_allows():
    up = lambda r: r != "eu"  # noqa: E731
    route = lambda w: route_held(w, now=NOW, is_closed=up, allowed=CFG.allowed_in)  # noqa: E731
    assert route(_failover("users", ["us", "ap"])) == (Route.failover, "us")
    assert route(_failover("orders", ["us", "ap"])) == (Route.failover, "ap")
    assert route(_failover("orders", ["us"])) == (Route.residency, "us")      # held for home, and why
    assert route(_failover("health_records", ["us", "ap"])) == (Route.residency, "us")
    # nothing closed to refuse: a plain hold
    assert route_held(_failover("orders", ["us"]), now=NOW, is_closed=lambda r: False,
                      allowed=CFG.allowed_in) == (Route.hold, None)


def test_a_group_fails_over_only_where_every_table_is_allowed():
    g = WriteEvent(id=uuid.uuid4(), region="eu", ordering_key="c/1", policy="failover", fallback_regions=["us", "ap"],
                   ops=[{"table": "users", "op": "upsert", "key": {"id": 1}, "data": {"x": 1}},
                        {"table": "orders", "op": "insert", "key": {"id": 2}, "data": {"x": 1}}])
    assert route_held(g, now=NOW, is_closed=lambda r: r != "eu", allowed=CFG.allowed_in) == (Route.failover, "ap")
    assert route_held(g, now=NOW, is_closed=lambda r: r == "us", allowed=CFG.allowed_in) == (Route.residency, "us")


def test_reads_never_plan_a_tier_outside_the_allowed_regions():
    reader = RegionalReader(CFG)
    assert [(t, x.region if x else None) for t, x in reader.tiers("eu", "users")] == [
        ("home", "eu"), ("fallback", "us"), ("fallback", "ap"), ("redis", None)]
    # orders: us is not allowed, and Redis has no region (redis.region unset), so it is no tier either
    assert [(t, x.region if x else None) for t, x in reader.tiers("eu", "orders")] == [
        ("home", "eu"), ("fallback", "ap")]
    assert [t for t, _ in reader.tiers("eu", "health_records")] == ["home"]
    with pytest.raises(BadRead, match="may not be stored in region 'us'"):
        reader.tiers("us", "orders")
    placed = parse_config({**DOC, "redis": {"url": "redis://x", "region": "ap"}})
    assert [t for t, _ in RegionalReader(placed).tiers("eu", "orders")] == ["home", "fallback", "redis"]
    assert [t for t, _ in RegionalReader(placed).tiers("eu", "health_records")] == ["home"]
    assert placed.cacheable("orders") and not placed.cacheable("health_records") and not CFG.cacheable("orders")


def test_a_write_to_a_region_outside_the_allowed_ones_is_a_schema_dead_letter():
    ev = {"id": str(uuid.uuid4()), "region": "us", "table": "orders", "op": "insert", "key": {"id": 1},
          "data": {"x": 1}}
    bad = decode_write(json.dumps(ev).encode(), region="us", cfg=CFG)
    assert isinstance(bad, BadWrite) and bad.reason.value == "schema" and "allowed_regions" in bad.detail
    assert not isinstance(decode_write(json.dumps({**ev, "region": "eu"}).encode(), region="eu", cfg=CFG), BadWrite)


@pytest.mark.parametrize("patch, message", [
    ({"tables": {"orders": {"key": ["id"], "allowed_regions": ["mars"]}}},
     "tables.orders.allowed_regions names unknown region 'mars'"),
    ({"redis": {"url": "redis://x", "region": "mars"}}, "redis.region names unknown region 'mars'"),
])
def test_config_names_only_configured_regions(patch, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({**DOC, **patch})


def test_the_fallbacks_asked_about_an_expired_failover_write_are_the_ones_residency_permits():
    assert permitted_fallbacks(_failover("users", ["us", "ap"]), CFG.allowed_in) == ["us", "ap"]
    assert permitted_fallbacks(_failover("orders", ["us", "ap"]), CFG.allowed_in) == ["ap"]
    assert permitted_fallbacks(_failover("health_records", ["us", "ap"]), CFG.allowed_in) == []


def test_a_table_the_region_may_not_hold_is_a_schema_failure_of_the_plan_not_a_missing_table():
    users = TableSchema("users", ("id",), None, frozenset({"id", "x"}), {"id": "bigint", "x": "bigint"})
    orders = TableSchema("orders", ("id",), None, frozenset({"id", "x"}), {"id": "bigint", "x": "bigint"})
    barred = frozenset(t for t in CFG.tables if not CFG.allowed_in(t, "us"))
    assert barred == {"orders", "health_records"}
    writes = [_failover("users", []), _failover("orders", [])]
    for schemas in ({"users": users}, {"users": users, "orders": orders}):  # absent in us, or a stray table
        plan = plan_writes(schemas, writes, barred=barred)
        assert [(i, e.reason) for i, e in plan.failed] == [(1, DeadReason.schema)]
        assert [i for i, _ in plan.todo] == [0]
