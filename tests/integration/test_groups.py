"""Atomic write groups (docs/contract.md, "Atomic write groups and ordering keys") on the real broker and PostgreSQL.

Atomicity is read from PostgreSQL itself: the rows a group wrote carry one ``xmin`` (they were
written by one transaction), and an ``AFTER`` trigger counts every row write that committed, so
a group applied twice, or half, shows up in the counts.
"""

from __future__ import annotations

import pytest

from tests.harness import free_port
from tests.integration.helpers import (
    ev_bytes, group_event, metric_value, produce_raw, read_json, read_topic, wait_assigned, wait_metric, wait_until, write_event,
)

SCHEMA_EXTRA = """
CREATE TABLE order_items (
    order_id bigint NOT NULL REFERENCES orders(id), line int NOT NULL, sku text, qty int CHECK (qty > 0),
    PRIMARY KEY (order_id, line));
CREATE TABLE rg_effects (n bigserial PRIMARY KEY, tbl text NOT NULL, k text NOT NULL);
CREATE FUNCTION rg_count() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r jsonb := to_jsonb(NEW);
BEGIN
  INSERT INTO rg_effects (tbl, k) VALUES (TG_TABLE_NAME,
    CASE WHEN TG_TABLE_NAME = 'orders' THEN r->>'id' ELSE (r->>'order_id') || '/' || (r->>'line') END);
  IF r->>'sku' = 'slow' AND r->>'line' = '1' THEN PERFORM pg_sleep(3); END IF;  -- under the 5 s statement timeout
  RETURN NEW;
END $$;
CREATE TRIGGER rg_count_orders AFTER INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION rg_count();
CREATE TRIGGER rg_count_items AFTER INSERT OR UPDATE ON order_items FOR EACH ROW EXECUTE FUNCTION rg_count();
"""
TABLES = {"users": {"key": ["id"], "version": "version"}, "orders": {"key": ["id"]},
          "order_items": {"key": ["order_id", "line"]}}


def _order(region: str, order_id: int, lines: int, *, customer: int | None = None, bad_line: int | None = None,
           sku: str = "A1", **extra) -> dict:
    """An order and its lines as one group (line ``bad_line`` breaks the qty > 0 check)."""
    ops = [{"table": "orders", "op": "insert", "key": {"id": order_id}, "data": {"user_id": customer or order_id,
                                                                                  "amount": 10 * lines}}]
    ops += [{"table": "order_items", "op": "insert", "key": {"order_id": order_id, "line": i},
             "data": {"sku": sku, "qty": -1 if i == bad_line else i}} for i in range(1, lines + 1)]
    return group_event(region, f"customer/{customer or order_id}", ops, **extra)


def _setup(regions, rg_config, names=("eu",), partitions=3, **kw):
    lr = regions(list(names))
    for r in names:
        lr.execute(r, SCHEMA_EXTRA)
    return lr, rg_config(lr, partitions=partitions, tables=TABLES, **kw)


def _xmins(lr, region: str, order_id: int) -> set[str]:
    rows = lr.fetch(region, "SELECT xmin::text AS x FROM orders WHERE id = $1 UNION ALL "
                            "SELECT xmin::text FROM order_items WHERE order_id = $1", order_id)
    return {r["x"] for r in rows}


def _effects(lr, region: str) -> dict[tuple[str, str], int]:
    rows = lr.fetch(region, "SELECT tbl, k, count(*) AS n FROM rg_effects GROUP BY tbl, k")
    return {(r["tbl"], r["k"]): r["n"] for r in rows}


@pytest.mark.smoke
def test_groups_apply_whole_in_order_and_a_bad_op_leaves_nothing(regions, rg_config, services):
    lr, cfg = _setup(regions, rg_config)
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    good = [_order("eu", i, 4) for i in range(1, 41)]
    bad = _order("eu", 100, 5, bad_line=3)                      # the 4th op fails its CHECK
    orphan = group_event("eu", "customer/7", [               # the 2nd op's parent row does not exist
        {"table": "orders", "op": "insert", "key": {"id": 200}, "data": {"user_id": 7, "amount": 1}},
        {"table": "order_items", "op": "insert", "key": {"order_id": 999, "line": 1}, "data": {"qty": 1}}])
    mixed = dict(_order("eu", 300, 1), table="orders")       # ops mixed with table: a schema dead letter
    # one customer's events apply in their order: the order, then a later group adding a line to it,
    # then a single-row write with the same ordering key updating the order
    chain = [_order("eu", 400, 1, customer=9),
             group_event("eu", "customer/9", [{"table": "order_items", "op": "insert",
                                              "key": {"order_id": 400, "line": 2}, "data": {"qty": 5}}]),
             write_event("eu", "orders", "update", {"id": 400}, {"status": "paid"}, ordering_key="customer/9")]
    after = write_event("eu", "orders", "insert", {"id": 500}, {"amount": 1}, ordering_key="customer/100")
    items = [ev_bytes(e) for e in good[:20] + [bad, orphan, mixed] + chain + good[20:] + [after]]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), items)

    wait_until(lambda: lr.count("eu", "orders") == 40 + 1 + 1, what="good groups and the single write applied")
    dls = wait_until(lambda: (lambda d: d if len(d) >= 3 else None)(
        read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.3)), what="three dead letters")
    by_id = {d["write_id"]: d for d in dls if d.get("write_id")}
    assert by_id[bad["id"]]["reason"] == "constraint" and by_id[bad["id"]]["detail"].startswith("ops[3]")
    assert by_id[orphan["id"]]["reason"] == "constraint" and by_id[orphan["id"]]["detail"].startswith("ops[1]")
    assert [d["reason"] for d in dls if d["write_id"] is None] == ["schema"]
    # nothing of a failed group applied, every good group whole
    assert lr.fetch("eu", "SELECT id FROM orders WHERE id IN (100, 200, 300)") == []
    assert lr.count("eu", "order_items") == 40 * 4 + 2
    assert lr.fetch("eu", "SELECT line, qty FROM order_items WHERE order_id = 400 ORDER BY line") == [
        {"line": 1, "qty": 1}, {"line": 2, "qty": 5}]
    assert lr.fetch("eu", "SELECT status FROM orders WHERE id = 400") == [{"status": "paid"}]
    for g in good:
        assert len(_xmins(lr, "eu", g["ops"][0]["key"]["id"])) == 1  # one transaction wrote the group
    effects = _effects(lr, "eu")
    assert set(effects.values()) == {1} or effects[("orders", "400")] == 2  # 400: insert, then the update
    assert {k: n for k, n in effects.items() if k != ("orders", "400")} and \
        max(n for k, n in effects.items() if k != ("orders", "400")) == 1
    inbox = {r["write_id"]: r["tbl"] for r in lr.fetch("eu", "SELECT write_id::text, tbl FROM regionguard_applied")}
    assert set(inbox) == {e["id"] for e in good + chain + [after]}  # each group once, failed ones released
    assert inbox[good[0]["id"]] == "group:orders"


def test_router_killed_inside_a_group_leaves_all_or_nothing(regions, rg_config, services):
    """SIGKILL while PostgreSQL runs the group's transaction: nothing of it commits; the next router applies
    it whole, once."""
    lr, cfg = _setup(regions, rg_config, partitions=1)
    router = services("router", cfg.cli_args("router", "--no-health"))
    first = wait_assigned(cfg, "router", "eu")
    slow = _order("eu", 1, 3, sku="slow")  # line 1's trigger sleeps 3 s: the transaction is open a while
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(slow)])
    wait_until(lambda: lr.fetch("eu", "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE '%order_items%' "
                                      "AND state = 'active' AND pid <> pg_backend_pid()")[0]["n"] >= 1,
               what="the group's transaction running in PostgreSQL")
    assert lr.count("eu", "orders") == 0  # not committed yet: invisible
    router.kill()
    # PostgreSQL ends the orphaned transaction without a commit once the statement returns
    wait_until(lambda: lr.fetch("eu", "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE '%order_items%' "
                                      "AND pid <> pg_backend_pid()")[0]["n"] == 0,
               timeout=30, what="the killed router's transaction gone")
    assert lr.count("eu", "orders") == 0 and lr.count("eu", "order_items") == 0
    assert lr.count("eu", "regionguard_applied") == 0

    services("router2", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu", exclude=first)
    wait_until(lambda: lr.count("eu", "regionguard_applied") == 1, timeout=60, what="the group applied by the next router")
    assert lr.count("eu", "orders") == 1 and lr.count("eu", "order_items") == 3
    assert len(_xmins(lr, "eu", 1)) == 1
    assert set(_effects(lr, "eu").values()) == {1}  # every row written once, by one committed transaction


def test_held_groups_replay_whole_and_fail_over_whole(regions, rg_config, services):
    lr, cfg = _setup(regions, rg_config, names=("eu", "us"), partitions=2)
    port = free_port()
    services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(_order("eu", 999, 1))])
    wait_metric(port, "regionguard_held_partitions", lambda n: n == 2, region="eu", what="eu held by the router")
    held = [_order("eu", i, 5) for i in range(1, 31)]
    failover = _order("eu", 77, 3, policy="failover", fallback_regions=["us"])
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in held + [failover]])
    # failover: applied in us now, whole, in one transaction
    wait_until(lambda: lr.count("us", "order_items") == 3, what="the failover group applied in us")
    assert len(_xmins(lr, "us", 77)) == 1 and lr.count("us", "orders") == 1
    wait_until(lambda: len(read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3)) >= 32, what="groups held")
    assert lr.count("eu", "orders") == 0
    wait_metric(port, "regionguard_groups_total", lambda n: n == 32, region="eu", service="router", outcome="held",
                what="32 groups counted as held")
    assert metric_value(port, "regionguard_groups_total", region="eu", service="router",
                        outcome="failover_applied") == 1
    # recovery: every held group replayed whole, the failover group synced home whole
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: lr.count("eu", "orders") == 32, timeout=60, what="held groups replayed")
    assert lr.count("eu", "order_items") == 30 * 5 + 3 + 1
    for oid in [*range(1, 31), 77, 999]:
        assert len(_xmins(lr, "eu", oid)) == 1, oid
    assert set(_effects(lr, "eu").values()) == {1}
    assert set(_effects(lr, "us").values()) == {1}
    finished = [e["detail"] for e in read_json(cfg.bootstrap, cfg.topic("failover-events"), idle=0.3)
                if e["kind"] == "replay_finished" and e["region"] == "eu"]
    assert sum(f["groups"] for f in finished) == 32  # every held group replayed whole


def test_a_group_the_planner_refuses_is_a_dead_letter_and_the_router_goes_on(regions, rg_config, services):
    """A group failing the planner's own check (here an op updating key columns only) was subtracted
    from the batch's applied groups though it was never among them: alone in its batch, the count
    went negative, the metric raised and the router exited after the commit, before dead-lettering it."""
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    evs = [group_event("eu", "orders/1", [
               {"table": "orders", "op": "upsert", "key": {"id": 1}, "data": {"amount": 1}},
               {"table": "orders", "op": "update", "key": {"id": 1}, "data": {"id": 1}}]),
           write_event("eu", "orders", "insert", {"id": 2}, {"amount": 1})]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])  # one batch
    router = services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    dls = wait_until(lambda: read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5), what="a dead letter")
    assert [(d["offset"], d["reason"], d["detail"]) for d in dls] == [
        (0, "schema", "ops[1]: update needs at least one non-key column")]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "orders", "insert", {"id": 3}, {"amount": 1}))])
    wait_until(lambda: lr.count("eu", "orders") == 2, what="the router still applying")
    assert {r["id"] for r in lr.fetch("eu", "SELECT id FROM orders")} == {2, 3}
    assert router.alive
