"""A held copy the broker refuses mid-round must not put a key's writes out of order (issue 25, finding 7).

With an idempotent producer, a record that fails does not stop the later
records of its partition from being written (librdkafka INTRODUCTION.md,
"Message timeout considerations": 1, 2, 3, 4, 5 produced, 2 and 3 time out,
1, 4, 5 written; a broker-side refusal of one batch does the same). The
deliver stage (core/outbox.py) used to resend such a round whole, so the held
topic could hold r1, r3, r1', r2', r3': the replayer applied r3, then r2 (the
inbox skipped r3'), and an unversioned row ended at r2.

Now a copy refused for itself becomes its write's ``too_large`` dead letter and
only that is produced again; nothing acknowledged is resent. (Records only
unconfirmed are waited on, never resent, and the router's producers never time
a record out: tests/unit/test_record_sizes.py.) The gap is made deterministic
here: the held topic refuses records over 1500 bytes while the router holds
r1, r2 (large), r3 of one key, every record its own producer batch
(``batch.num.messages: 1``).
"""

from __future__ import annotations

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from tests.harness import free_port
from tests.integration.helpers import (ev_bytes, produce_raw, read_json, wait_assigned, wait_metric, wait_until,
                                      write_event)


def _order(key: int, status: str) -> dict:
    return write_event("eu", "orders", "upsert", {"id": key}, {"amount": key, "status": status})


def _held_ids(cfg) -> list[str]:
    return [e.get("id") for e in read_json(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3) if e]


def _max_message_bytes(bootstrap: str, topic: str, value: str | None) -> None:
    op = AlterConfigOpType.SET if value is not None else AlterConfigOpType.DELETE
    res = ConfigResource(ConfigResource.Type.TOPIC, topic,
                         incremental_configs=[ConfigEntry("max.message.bytes", value, incremental_operation=op)])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(30)


def test_a_partly_failed_held_round_is_replayed_in_order(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1, overrides={
        "router": {"lanes": 1, "batch_wait_ms": 200, "retry_initial_s": 0.2, "retry_max_s": 0.5},
        "kafka": {"client": {"batch.num.messages": 1, "linger.ms": 0}},
    })
    topic, held = cfg.topic("writes", "eu"), cfg.topic("held", "eu")
    port = free_port()
    services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")
    wait_metric(port, "regionguard_direct_partitions", lambda n: n == 1, region="eu", what="the partition direct")

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    first = _order(100, "held")
    produce_raw(cfg.bootstrap, topic, [ev_bytes(first)])
    wait_until(lambda: first["id"] in _held_ids(cfg), timeout=30, what="the partition holding (eu unavailable)")

    _max_message_bytes(cfg.bootstrap, held, "1500")
    r1, r2, r3 = _order(1, "r1"), _order(1, "r2" + "x" * 3000), _order(1, "r3")
    produce_raw(cfg.bootstrap, topic, [ev_bytes(r1), ev_bytes(r2), ev_bytes(r3)])
    ids = wait_until(lambda: (lambda got: got if r3["id"] in got else None)(_held_ids(cfg)), timeout=30,
                     what="r3 held")
    assert r2["id"] not in ids  # the gap: r3 is in the held topic, r2 before it is not
    dl = wait_until(lambda: next((d for d in read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.3)
                                  if d.get("write_id") == r2["id"]), None), timeout=30, what="r2's dead letter")
    assert dl["reason"] == "too_large"
    _max_message_bytes(cfg.bootstrap, held, None)
    # nothing acknowledged was produced again: a resend is what put r3 ahead of r2 before
    held_ids = _held_ids(cfg)
    assert held_ids.count(r1["id"]) == 1 and held_ids.count(r3["id"]) == 1 and r2["id"] not in held_ids

    lr.proxy("eu").set_mode("pass")
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    wait_metric(port, "regionguard_direct_partitions", lambda n: n == 1, region="eu", timeout=60,
                what="the partition direct again after the replay")
    want = {first["id"], r1["id"], r3["id"]}
    wait_until(lambda: want <= {r["id"] for r in lr.fetch("eu", "SELECT write_id::text AS id FROM regionguard_applied")},
               timeout=30, what="every write applied")
    rows = lr.fetch("eu", "SELECT status FROM orders WHERE id = 1")
    assert rows == [{"status": "r3"}], f"key 1 ended at an older write: {rows[0]['status'][:2]}"
