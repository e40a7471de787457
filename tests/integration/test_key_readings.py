"""One row, two spellings of a key only PostgreSQL reads: a date, a domain over bigint, citext, a timestamp, an interval.

``{"day": "2026-01-02"}`` and ``{"day": "Jan 2 2026"}`` are one row of a date key, ``"Alice"`` and
``"ALICE"`` one row of a citext key, ``5`` and ``"5"`` one row of a key whose type is a domain
over bigint. Planned as two rows, an ``update`` pair went into one ``UPDATE ... FROM`` that
changed the row once (a write lost while its inbox claim committed) and an upsert pair failed
with SQLSTATE 21000 (the batch redone in pieces). core/spelling.py asks PostgreSQL how it reads
such keys before planning. Real router and replayer processes, real Kafka and PostgreSQL; each
batch is produced before its service starts, so it is one batch.
"""

from __future__ import annotations

from regionguard_testkit.embedded.regions import DEFAULT_SCHEMA

from tests.harness import free_port
from tests.integration.helpers import (
    ev_bytes, group_event, metric_value, produce_raw, read_json, read_topic, wait_assigned, wait_until,
    write_event,
)

SCHEMA = DEFAULT_SCHEMA + """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE DOMAIN positive_bigint AS bigint CHECK (VALUE > 0);
CREATE DOMAIN account_id AS positive_bigint;  -- a domain of a domain: its base is found through both
CREATE TABLE days (day date PRIMARY KEY, n int, note text);
CREATE TABLE accounts (id account_id PRIMARY KEY, n int, note text);
CREATE TABLE handles (handle citext PRIMARY KEY, n int, note text);
CREATE TABLE ticks (at timestamp PRIMARY KEY, n int, note text);
CREATE TABLE spans (span interval PRIMARY KEY, n int, note text);
"""
TABLES = {"users": {"key": ["id"], "version": "version"}, "orders": {"key": ["id"]},
          "days": {"key": ["day"]}, "accounts": {"key": ["id"]}, "handles": {"key": ["handle"]},
          "ticks": {"key": ["at"]}, "spans": {"key": ["span"]}}
KEYS = {"days": "day", "accounts": "id", "handles": "handle", "ticks": "at", "spans": "span"}


def _row(lr, table: str, key) -> dict | None:
    col = KEYS.get(table, "id")
    cast = "::text" + {"days": "::date", "handles": "::citext", "ticks": "::timestamp",
                      "spans": "::interval"}.get(table, "::bigint")
    rows = lr.fetch("eu", f"SELECT *, {col}::text AS key_text FROM {table} WHERE {col} = $1{cast}", str(key))
    return rows[0] if rows else None


def _inbox(lr) -> list[str]:
    return [r["write_id"] for r in lr.fetch("eu", "SELECT write_id::text FROM regionguard_applied")]


def _setup(regions, rg_config):
    lr = regions(["eu"], schema=SCHEMA)
    return lr, rg_config(lr, partitions=1, tables=TABLES)


def _start_router(cfg, services, port: int):
    router = services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")
    return router


def _route_all(lr, cfg, services, evs: list[dict]):
    """Produce ``evs`` (the last a write to orders/99), start a router; (router, metrics port) once every
    write is claimed in the inbox exactly once."""
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    port = free_port()
    router = _start_router(cfg, services, port)
    wait_until(lambda: _row(lr, "orders", 99), what="the later write to another key applied")
    wait_until(lambda: len(_inbox(lr)) == len(evs), what="every write claimed")
    assert sorted(_inbox(lr)) == sorted(e["id"] for e in evs)  # each once
    return router, port


def _counted(port: int, service: str, total: int):
    """(applied, stale) once they add up to ``total`` row operations."""
    def now():
        a = metric_value(port, "regionguard_writes_applied_total", region="eu", service=service)
        s = metric_value(port, "regionguard_writes_stale_total", region="eu", service=service)
        return (a, s) if a is not None and s is not None and a + s >= total else None
    return wait_until(now, what="the batch counted")


def test_updates_of_one_row_spelled_two_ways_apply_in_order_for_keys_postgresql_reads(regions, rg_config, services):
    lr, cfg = _setup(regions, rg_config)
    lr.execute("eu", "INSERT INTO days VALUES ('2026-01-02', 0, 'old');"
                     "INSERT INTO accounts VALUES (5, 0, 'old');"
                     "INSERT INTO handles VALUES ('Alice', 0, 'old'), ('Bob', 0, 'old');"
                     "INSERT INTO ticks VALUES ('2026-01-02 03:04:05', 0, 'old');"
                     "INSERT INTO spans VALUES ('1 day', 0, 'old')")
    evs = [
        write_event("eu", "days", "update", {"day": "2026-01-02"}, {"n": 1, "note": "first"}),
        write_event("eu", "days", "update", {"day": "Jan 2 2026"}, {"n": 2, "note": "last"}),
        write_event("eu", "accounts", "update", {"id": 5}, {"n": 1, "note": "first"}),
        write_event("eu", "accounts", "update", {"id": "5"}, {"n": 2, "note": "last"}),
        write_event("eu", "handles", "update", {"handle": "alice"}, {"n": 1, "note": "first"}),
        write_event("eu", "handles", "update", {"handle": "ALICE"}, {"n": 2, "note": "last"}),
        write_event("eu", "ticks", "update", {"at": "2026-01-02 03:04:05"}, {"n": 1, "note": "first"}),
        write_event("eu", "ticks", "update", {"at": "2026-01-02T03:04:05.000000"}, {"n": 2, "note": "last"}),
        # interval equality compares spans: one row
        write_event("eu", "spans", "update", {"span": "1 day"}, {"n": 1, "note": "first"}),
        write_event("eu", "spans", "update", {"span": "24 hours"}, {"n": 2, "note": "last"}),
        # a group whose ops spell one citext row two ways: applied in listed order
        group_event("eu", "handles/bob", [
            {"table": "handles", "op": "update", "key": {"handle": "bob"}, "data": {"n": 1, "note": "first"}},
            {"table": "handles", "op": "update", "key": {"handle": "BOB"}, "data": {"n": 2, "note": "last"}}]),
        write_event("eu", "orders", "insert", {"id": 99}, {"amount": 1, "status": "later"}),
    ]
    router, port = _route_all(lr, cfg, services, evs)
    # thirteen row operations, each changed its row: none lost to UPDATE ... FROM's one source row
    assert _counted(port, "router", 13) == (13, 0)
    for table, key in (("days", "2026-01-02"), ("accounts", 5), ("handles", "alice"), ("handles", "bob"),
                       ("ticks", "2026-01-02 03:04:05"), ("spans", "1 day")):
        row = _row(lr, table, key)
        assert (row["n"], row["note"]) == (2, "last"), (table, key, dict(row))
    assert _row(lr, "handles", "alice")["key_text"] == "Alice"  # the key as stored: an update never changes it
    assert read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5) == []
    assert router.alive


def test_upserts_of_one_row_spelled_two_ways_are_one_row_without_the_careful_path(regions, rg_config, services):
    """Planned as two rows, a pair of upserts failed its statement with SQLSTATE 21000 and the batch
    was redone in pieces (a stall of the partition); read by PostgreSQL, they are two statements."""
    lr, cfg = _setup(regions, rg_config)
    evs = [
        write_event("eu", "days", "upsert", {"day": "20260102"}, {"n": 1, "note": "a"}),
        write_event("eu", "days", "upsert", {"day": "2026-002"}, {"n": 2, "note": "b"}),
        write_event("eu", "accounts", "upsert", {"id": "7"}, {"n": 1, "note": "a"}),
        write_event("eu", "accounts", "upsert", {"id": 7.0}, {"n": 2, "note": "b"}),
        write_event("eu", "handles", "upsert", {"handle": "Carol"}, {"n": 1, "note": "a"}),
        write_event("eu", "handles", "upsert", {"handle": "cAROL"}, {"n": 2, "note": "b"}),
        write_event("eu", "ticks", "upsert", {"at": "2026-01-02 03:04:05"}, {"n": 1, "note": "a"}),
        write_event("eu", "ticks", "upsert", {"at": "2026-01-02T03:04:05.000000"}, {"n": 2, "note": "b"}),
        write_event("eu", "ticks", "upsert", {"at": "Jan 2 2026 03:04:05"}, {"n": 3, "note": "c"}),
        write_event("eu", "spans", "upsert", {"span": "1 mon"}, {"n": 1, "note": "a"}),
        write_event("eu", "spans", "upsert", {"span": "P30D"}, {"n": 2, "note": "b"}),
        group_event("eu", "days/3", [
            {"table": "days", "op": "upsert", "key": {"day": "2026-01-03"}, "data": {"n": 1, "note": "a"}},
            {"table": "days", "op": "upsert", "key": {"day": "January 3, 2026"}, "data": {"n": 2, "note": "b"}}]),
        write_event("eu", "orders", "insert", {"id": 99}, {"amount": 1, "status": "later"}),
    ]
    router, port = _route_all(lr, cfg, services, evs)
    assert _counted(port, "router", 14) == (14, 0)
    assert metric_value(port, "regionguard_careful_batches_total", region="eu") == 0  # no statement failed
    for table, key, want in (("days", "2026-01-02", (2, "b")), ("accounts", 7, (2, "b")), ("handles", "carol", (2, "b")),
                             ("ticks", "2026-01-02 03:04:05", (3, "c")), ("days", "2026-01-03", (2, "b")),
                             ("spans", "30 days", (2, "b"))):
        row = _row(lr, table, key)
        assert (row["n"], row["note"]) == want, (table, key, dict(row))
    assert _row(lr, "handles", "carol")["key_text"] == "Carol"  # stored as first written: only the planner reads lower()
    assert lr.fetch("eu", "SELECT count(*) AS n FROM handles")[0]["n"] == 1
    assert read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5) == []
    assert router.alive


def test_a_key_postgresql_refuses_is_a_schema_dead_letter_naming_the_column(regions, rg_config, services):
    lr, cfg = _setup(regions, rg_config)
    evs = [
        write_event("eu", "days", "upsert", {"day": "2026-01-02"}, {"n": 1, "note": "ok"}),
        write_event("eu", "days", "upsert", {"day": "2026-02-30"}, {"n": 1, "note": "no such day"}),
        group_event("eu", "days/4", [
            {"table": "days", "op": "upsert", "key": {"day": "2026-01-04"}, "data": {"n": 1}},
            {"table": "days", "op": "upsert", "key": {"day": "someday"}, "data": {"n": 2}}]),
        write_event("eu", "days", "upsert", {"day": "Jan 5 2026"}, {"n": 1, "note": "later"}),
    ]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    port = free_port()
    router = _start_router(cfg, services, port)
    wait_until(lambda: _row(lr, "days", "2026-01-05"), what="the write after the bad ones applied")
    dls = wait_until(lambda: (lambda d: d if len(d) >= 2 else None)(
        read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)), what="two dead letters")
    assert sorted((d["offset"], d["reason"], d["detail"]) for d in dls) == [
        (1, "schema", "column 'day' (date): cannot cast '2026-02-30' (SQLSTATE 22008)"),
        (2, "schema", "ops[1]: column 'day' (date): cannot cast 'someday' (SQLSTATE 22007)")]
    assert sorted(_inbox(lr)) == sorted([evs[0]["id"], evs[3]["id"]])  # a dead letter leaves no claim
    assert _row(lr, "days", "2026-01-04") is None  # the group is all or nothing
    assert metric_value(port, "regionguard_careful_batches_total", region="eu") == 0  # found before any statement
    assert router.alive


def test_held_writes_of_one_row_spelled_two_ways_replay_in_order_for_keys_postgresql_reads(
        regions, rg_config, services):
    lr, cfg = _setup(regions, rg_config)
    lr.execute("eu", "INSERT INTO handles VALUES ('Dave', 0, 'old')")
    port = free_port()
    router = _start_router(cfg, services, port)
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "orders", "insert", {"id": 1}, {"amount": 1, "status": "direct"}))])
    wait_until(lambda: _row(lr, "orders", 1), what="a direct apply first")

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    held = [
        write_event("eu", "handles", "update", {"handle": "dave"}, {"n": 1, "note": "first"}),
        write_event("eu", "handles", "update", {"handle": "DAVE"}, {"n": 2, "note": "last"}),
        write_event("eu", "days", "upsert", {"day": "2026-01-06"}, {"n": 1, "note": "a"}),
        write_event("eu", "days", "upsert", {"day": "Jan 6 2026"}, {"n": 2, "note": "b"}),
        write_event("eu", "accounts", "upsert", {"id": 8}, {"n": 1, "note": "a"}),
        write_event("eu", "accounts", "update", {"id": "8"}, {"n": 2, "note": "b"}),
        write_event("eu", "orders", "insert", {"id": 99}, {"amount": 1, "status": "later"}),
    ]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in held])
    wait_until(lambda: len(read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5)) >= len(held),
               timeout=30, what="the writes held")
    # the replayer starts once all are held, so its first batch holds every spelling
    rport = free_port()
    replayer = services("replayer", cfg.cli_args("replayer", "--no-health", "--metrics-port", str(rport)))
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: _row(lr, "orders", 99), timeout=40, what="the replay reached the later write")
    wait_until(lambda: len(_inbox(lr)) == 1 + len(held), what="every write claimed")
    assert set(_inbox(lr)) >= {e["id"] for e in held}
    assert _counted(rport, "replayer", len(held)) == (len(held), 0)
    for table, key, want in (("handles", "dave", (2, "last")), ("days", "2026-01-06", (2, "b")),
                             ("accounts", 8, (2, "b"))):
        row = _row(lr, table, key)
        assert (row["n"], row["note"]) == want, (table, key, dict(row))
    assert read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5) == []
    replayer.terminate()
    router.terminate()
