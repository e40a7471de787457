"""The rule for the unknown (issue 25): no record may stop a service or be retried forever.

Each test puts a record that used to kill the router (or stall its partition)
between good writes on the same partition, with real processes on Apache
Kafka and PostgreSQL, and checks that the service lives, the record is a dead
letter with a reason, and the good writes around it apply.
"""

from __future__ import annotations

import json

from tests.harness import free_port
from tests.integration.helpers import (
    committed, ev_bytes, produce_raw, read_json, read_topic, wait_assigned, wait_metric, wait_until, write_event,
)


def _deep(levels: int) -> object:
    v: object = []
    for _ in range(levels):
        v = [v]
    return v


def _deep_record(region: str, levels: int) -> bytes:
    """A 1,000-level record is ~2.5 KB: msgspec recursed past Python's stack on it."""
    head = json.dumps(write_event(region, "users", "upsert", {"id": 900}, {"name": "x", "version": 1}))
    return head[:-1].encode() + b', "meta": {"deep": ' + b"[" * levels + b"]" * levels + b"}}"


def _dead_letters(cfg, n: int) -> list[dict]:
    return wait_until(lambda: (lambda d: d if len(d) >= n else None)(
        read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)), what=f"{n} dead letter(s)")


def test_deeply_nested_records_are_dead_letters_and_the_router_lives(regions, rg_config, services):
    lr = regions(["eu"])
    lr.execute("eu", "ALTER TABLE orders ADD COLUMN doc jsonb")
    cfg = rg_config(lr, partitions=1)
    router = services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    good = [write_event("eu", "orders", "upsert", {"id": i}, {"amount": 1, "status": "ok"}) for i in range(6)]
    # nested deeper than the JSON encoder that sends jsonb to PostgreSQL takes (orjson: 255 levels),
    # well inside what the decoder takes
    deep_value = write_event("eu", "orders", "upsert", {"id": 901}, {"amount": 1, "doc": _deep(300)})
    items = [ev_bytes(good[0]), (b"deep", _deep_record("eu", 1000)), ev_bytes(good[1]), ev_bytes(deep_value),
             *[ev_bytes(e) for e in good[2:]]]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), items)

    wait_until(lambda: lr.count("eu", "orders") == 6, what="the good writes around the deep ones")
    dls = {d["offset"]: d for d in _dead_letters(cfg, 2)}
    assert sorted(dls) == [1, 3]
    assert dls[1]["reason"] == "schema" and "nested too deeply" in dls[1]["detail"]
    assert dls[3]["reason"] == "schema" and dls[3]["write_id"] == deep_value["id"]
    assert "cannot be sent to PostgreSQL" in dls[3]["detail"]
    assert router.alive, "the router died on a deeply nested record"
    assert lr.count("eu", "regionguard_applied") == 6  # the dead write's inbox claim was released


def test_a_sqlstate_nobody_named_is_a_dead_letter_not_a_retry_loop(regions, rg_config, services):
    lr = regions(["eu"])
    # 54000 (program_limit_exceeded: e.g. a key too long for its index) and 21000 (cardinality_violation)
    # were retried as transient errors for ever; so was any state outside the known classes
    lr.execute("eu", """
        CREATE FUNCTION odd_states() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.status = 'too-long' THEN RAISE EXCEPTION 'index row too long' USING ERRCODE = '54000'; END IF;
          IF NEW.status = 'twice' THEN RAISE EXCEPTION 'affects a row twice' USING ERRCODE = '21000'; END IF;
          IF NEW.status = 'custom' THEN RAISE EXCEPTION 'an application code' USING ERRCODE = 'RG001'; END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER odd_states BEFORE INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION odd_states();
    """)
    cfg = rg_config(lr, partitions=1)
    port = free_port()
    router = services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")
    bad = {status: write_event("eu", "orders", "upsert", {"id": 100 + n}, {"amount": 1, "status": status})
           for n, status in enumerate(("too-long", "twice", "custom"))}
    good = [write_event("eu", "orders", "upsert", {"id": i}, {"amount": 1, "status": "ok"}) for i in range(6)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(e) for e in good[:2] + list(bad.values()) + good[2:]])

    wait_until(lambda: lr.count("eu", "orders") == 6, what="the good writes around the failing ones")
    by_id = {d["write_id"]: d for d in _dead_letters(cfg, 3)}
    for status, sqlstate in (("too-long", "54000"), ("twice", "21000"), ("custom", "RG001")):
        dl = by_id[bad[status]["id"]]
        assert dl["reason"] == "poison", dl
        assert f"SQLSTATE {sqlstate}" in dl["detail"], dl
    # the partition moved on: its committed position is past every record
    wait_until(lambda: _committed(cfg) == 9, what="the source offsets committed past the failing writes")
    assert router.alive


def _committed(cfg) -> int | None:
    from regionguard.core.kafka import router_group
    return committed(cfg.bootstrap, router_group(cfg.load(), "eu"), cfg.topic("writes", "eu"), 1).get(0)


def test_an_error_no_stage_foresaw_isolates_its_record_and_the_lane_goes_on(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    router = services("router", ["--marker", "rg-test-explode", *cfg.cli_args("router", "--no-health")],
                      module="regionguard_testkit.embedded.faults")
    wait_assigned(cfg, "router", "eu")
    good = [write_event("eu", "users", "upsert", {"id": i}, {"name": "ok", "version": 1}) for i in range(10)]
    marked = write_event("eu", "users", "upsert", {"id": 99}, {"name": "x", "version": 1},
                         meta={"rg_test": "rg-test-explode"})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(e) for e in good[:5] + [marked] + good[5:]])

    wait_until(lambda: lr.count("eu", "users") == 10, what="every other write of the batch applied")
    (dl,) = _dead_letters(cfg, 1)
    assert dl["reason"] == "poison" and dl["offset"] == 5
    assert "RuntimeError" in dl["detail"]
    assert json.loads(dl["original"])["id"] == marked["id"]  # the exact bytes, for a redrive
    assert router.alive, "an unforeseen error in a stage stopped the router"
    # order within the partition held: the next writes of the same keys still apply on top
    later = [write_event("eu", "users", "upsert", {"id": i}, {"name": "later", "version": 2}) for i in range(10)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in later])
    wait_until(lambda: {r["name"] for r in lr.fetch("eu", "SELECT name FROM users")} == {"later"},
               what="writes after the isolated record")


def test_the_replayer_isolates_a_record_it_fails_on_and_replays_the_rest(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    port = free_port()
    router = services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    replayer = services("replayer", ["--marker", "rg-test-explode", *cfg.cli_args("replayer", "--no-health")],
                        module="regionguard_testkit.embedded.faults")
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    good = [write_event("eu", "users", "upsert", {"id": i}, {"name": "ok", "version": 1}) for i in range(10)]
    marked = write_event("eu", "users", "upsert", {"id": 99}, {"name": "x", "version": 1},
                         meta={"rg_test": "rg-test-explode"})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in good[:5] + [marked] + good[5:]])
    wait_until(lambda: len(read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5)) >= 11,
               what="the writes held while eu is down")
    lr.proxy("eu").set_mode("pass")

    wait_until(lambda: lr.count("eu", "users") == 10, timeout=40, what="the held writes replayed around it")
    (dl,) = _dead_letters(cfg, 1)
    assert dl["reason"] == "poison" and "the replayer failed on it" in dl["detail"]
    assert dl["write_id"] is None or dl["write_id"] == marked["id"]
    assert json.loads(dl["original"])["id"] == marked["id"]
    wait_metric(port, "regionguard_held_partitions", lambda n: n == 0, region="eu",
                what="eu back in direct mode after the replay")
    assert replayer.alive and router.alive
