"""One row, two spellings of its key: ``{"id": 42}`` and ``{"id": "42"}`` are one row of a bigint key.

They share a Kafka key and so often a batch. Planned as two rows they went into one statement:
an ``UPDATE ... FROM`` applied one of the two (the other was lost while its inbox claim committed)
and an upsert failed with SQLSTATE 21000, retried forever. Real router and replayer processes,
real Kafka and PostgreSQL. Each batch is produced before its service starts, so it is one batch.
"""

from __future__ import annotations

from tests.harness import free_port
from tests.integration.helpers import (
    ev_bytes, group_event, metric_value, produce_raw, read_json, read_topic, wait_assigned, wait_until,
    write_event,
)


def _row(lr, table: str, key: int) -> dict | None:
    rows = lr.fetch("eu", f"SELECT * FROM {table} WHERE id = $1", key)
    return rows[0] if rows else None


def _inbox(lr) -> list[str]:
    return [r["write_id"] for r in lr.fetch("eu", "SELECT write_id::text FROM regionguard_applied")]


def _start_router(cfg, services, *args: str):
    router = services("router", cfg.cli_args("router", "--no-health", *args))
    wait_assigned(cfg, "router", "eu")
    return router


def test_updates_of_one_row_spelled_two_ways_in_one_batch_all_apply_in_order(regions, rg_config, services):
    """PostgreSQL's ``UPDATE ... FROM`` changes a row once per statement, from one of its matching
    source rows: the other write of the row was lost (counted stale) though its claim committed."""
    lr = regions(["eu"])
    lr.execute("eu", "INSERT INTO orders (id, amount, status) VALUES (7, 1, 'old');"
                     "INSERT INTO users (id, name, version) VALUES (8, 'v1', 1), (9, 'v1', 1)")
    cfg = rg_config(lr, partitions=1)
    evs = [
        write_event("eu", "orders", "update", {"id": 7}, {"status": "first", "amount": 5}),
        write_event("eu", "orders", "update", {"id": "7"}, {"status": "last", "amount": 2}),
        # versioned: both are newer than the row, so each must apply in turn
        write_event("eu", "users", "update", {"id": 8}, {"name": "v2", "version": 2}),
        write_event("eu", "users", "update", {"id": "8"}, {"name": "v3", "version": 3}),
        # versioned, the newer first: the older is stale, whichever spelling came last
        write_event("eu", "users", "update", {"id": 9}, {"name": "v3", "version": 3}),
        write_event("eu", "users", "update", {"id": "9"}, {"name": "v2", "version": 2}),
        # a group whose ops spell its row two ways: applied in listed order
        group_event("eu", "orders/50", [
            {"table": "orders", "op": "upsert", "key": {"id": 50}, "data": {"amount": 1, "status": "a"}},
            {"table": "orders", "op": "update", "key": {"id": 50}, "data": {"status": "b"}},
            {"table": "orders", "op": "update", "key": {"id": "50"}, "data": {"status": "c"}}]),
        write_event("eu", "orders", "insert", {"id": 99}, {"amount": 1, "status": "later"}),
    ]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    port = free_port()
    router = _start_router(cfg, services, "--metrics-port", str(port))
    wait_until(lambda: _row(lr, "orders", 99), what="the later write to another key applied")
    wait_until(lambda: len(_inbox(lr)) == len(evs), what="every write claimed")
    assert sorted(_inbox(lr)) == sorted(e["id"] for e in evs)  # each once
    # ten row operations; each changed its row but the one older version: 2+2+1+3+1 applied, 1 stale
    counted = wait_until(lambda: (lambda a, s: (a, s) if a is not None and s is not None and a + s >= 10 else None)(
        metric_value(port, "regionguard_writes_applied_total", region="eu", service="router"),
        metric_value(port, "regionguard_writes_stale_total", region="eu", service="router")), what="the batch counted")
    assert counted == (9, 1)
    o7, u8, u9, o50 = (_row(lr, "orders", 7), _row(lr, "users", 8), _row(lr, "users", 9), _row(lr, "orders", 50))
    assert (o7["status"], o7["amount"]) == ("last", 2)
    assert (u8["name"], u8["version"]) == ("v3", 3)
    assert (u9["name"], u9["version"]) == ("v3", 3)
    assert o50["status"] == "c"
    assert read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5) == []
    assert router.alive


def test_upserts_of_one_row_spelled_three_ways_in_one_batch_all_apply_in_order(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    evs = [
        write_event("eu", "orders", "upsert", {"id": 42}, {"amount": 1, "status": "a"}),
        write_event("eu", "orders", "upsert", {"id": "42"}, {"amount": 2, "status": "b"}),
        write_event("eu", "orders", "upsert", {"id": 42.0}, {"amount": 3, "status": "c"}),
        write_event("eu", "orders", "update", {"id": " 42"}, {"status": "d"}),
        write_event("eu", "users", "upsert", {"id": 43}, {"name": "v1", "version": 1}),
        write_event("eu", "users", "upsert", {"id": "43"}, {"name": "v2", "version": "2"}),
        group_event("eu", "orders/60", [
            {"table": "orders", "op": "upsert", "key": {"id": 60}, "data": {"amount": 1, "status": "a"}},
            {"table": "orders", "op": "upsert", "key": {"id": "60"}, "data": {"amount": 2, "status": "b"}}]),
        write_event("eu", "orders", "insert", {"id": 99}, {"amount": 1, "status": "later"}),
    ]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    router = _start_router(cfg, services)
    wait_until(lambda: _row(lr, "orders", 99), what="the later write to another key applied (no retry loop)")
    wait_until(lambda: len(_inbox(lr)) == len(evs), what="every write claimed")
    assert sorted(_inbox(lr)) == sorted(e["id"] for e in evs)
    o42, u43, o60 = _row(lr, "orders", 42), _row(lr, "users", 43), _row(lr, "orders", 60)
    assert (o42["amount"], o42["status"]) == (3, "d")
    assert (u43["name"], u43["version"]) == ("v2", 2)
    assert (o60["amount"], o60["status"]) == (2, "b")
    assert read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5) == []
    assert router.alive


def test_an_uncastable_key_is_a_schema_dead_letter_naming_the_column_and_the_partition_moves_on(
        regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    evs = [
        write_event("eu", "orders", "upsert", {"id": 1}, {"amount": 1, "status": "ok"}),
        write_event("eu", "orders", "upsert", {"id": "abc"}, {"amount": 1, "status": "bad key"}),
        group_event("eu", "orders/2", [
            {"table": "orders", "op": "upsert", "key": {"id": 2}, "data": {"amount": 1}},
            {"table": "orders", "op": "update", "key": {"id": 2}, "data": {"user_id": 2.5}}]),
        write_event("eu", "orders", "upsert", {"id": 3}, {"amount": 1, "status": "later"}),
    ]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    router = _start_router(cfg, services)
    wait_until(lambda: _row(lr, "orders", 3), what="the write after the bad ones applied")
    dls = wait_until(lambda: (lambda d: d if len(d) >= 2 else None)(
        read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)), what="two dead letters")
    assert sorted((d["offset"], d["reason"], d["detail"]) for d in dls) == [
        (1, "schema", "column 'id' (bigint): cannot cast 'abc'"),
        (2, "schema", "ops[1]: column 'user_id' (bigint): cannot cast 2.5")]
    assert sorted(_inbox(lr)) == sorted([evs[0]["id"], evs[3]["id"]])  # a dead letter leaves no claim
    assert _row(lr, "orders", 2) is None  # the group is all or nothing
    assert router.alive


def test_held_writes_of_one_row_spelled_two_ways_replay_in_order(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    router = _start_router(cfg, services)
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "users", "upsert", {"id": 42}, {"name": "v1", "version": 1}))])
    wait_until(lambda: _row(lr, "users", 42), what="a direct apply first")

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    held = [
        write_event("eu", "users", "upsert", {"id": "42"}, {"name": "v2", "version": 2}),
        write_event("eu", "users", "upsert", {"id": 42}, {"name": "v3", "version": 3}),
        write_event("eu", "users", "update", {"id": "42"}, {"name": "v4", "version": 4}),
        write_event("eu", "orders", "upsert", {"id": 7}, {"amount": 1, "status": "a"}),
        write_event("eu", "orders", "update", {"id": 7}, {"status": "b"}),
        write_event("eu", "orders", "update", {"id": "7"}, {"status": "c"}),
        write_event("eu", "orders", "insert", {"id": 99}, {"amount": 1, "status": "later"}),
    ]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in held])
    wait_until(lambda: len(read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5)) >= len(held),
               timeout=30, what="the writes held")
    # the replayer starts once all are held, so its first batch holds every spelling
    replayer = services("replayer", cfg.cli_args("replayer", "--no-health"))
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: _row(lr, "orders", 99), timeout=40, what="the replay reached the later write")
    wait_until(lambda: len(_inbox(lr)) == 1 + len(held), what="every write claimed")
    assert set(_inbox(lr)) >= {e["id"] for e in held}
    u42, o7 = _row(lr, "users", 42), _row(lr, "orders", 7)
    assert (u42["name"], u42["version"]) == ("v4", 4)
    assert o7["status"] == "c"
    assert read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5) == []
    replayer.terminate()
    router.terminate()
