"""A write whose held copy or dead letter a router delivered is never applied by the partition's next owner.

The router commits a batch's source offsets only after its held copies and
dead letters are in Kafka. A router killed in between (the test kit's
``die_after_deliver`` seam ends it there with ``os._exit``) leaves the records
handled but uncommitted. The next owner read them again once the region was
closed and the partition direct, and applied them: a write dead-lettered as
``expired`` (by the replayer, from its held copy) or ``shed`` (by the router)
ended applied, so a dead letter named an applied write (issue 25, model
finding A; tests/unit/test_modes_model.py). Real routers and replayer as
subprocesses, Apache Kafka and PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from regionguard.core.held import H_FENCE, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC
from regionguard.core.kafka import router_group
from regionguard.router.handled import MOST, TAIL, last_sources, mark_headers
from regionguard_testkit.embedded.die_after_deliver import EXIT_CODE
from tests.integration.helpers import (
    committed, ev_bytes, produce_raw, read_topic, wait_assigned, wait_until, write_event,
)

SEAM = "regionguard_testkit.embedded.die_after_deliver"


def _dead_letters(cfg, reason: str) -> list[dict]:
    dls = [json.loads(m.value()) for m in read_topic(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)]
    return [d for d in dls if d["reason"] == reason]


def _held_copies(cfg) -> list:
    return [m for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5) if m.value()]


def _users(lr, key: int) -> int:
    return int(lr.fetchval("eu", "SELECT count(*) FROM users WHERE id = $1", key))


def _next_owner_settles(cfg, lr, services, *, through: int, key: int) -> None:
    """Start the next router, then a later write: once its offset is committed, the records before
    it have been handled (or skipped) by the new owner."""
    services("router", cfg.cli_args("router", "--no-health"))
    later = write_event("eu", "users", "upsert", {"id": key}, {"name": "later", "version": 1})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(later)])
    group = router_group(cfg.load(), "eu")
    wait_until(lambda: committed(cfg.bootstrap, group, cfg.topic("writes", "eu"), 1)[0] > through + 1, timeout=90,
               what="the new router's commit past the later write")
    assert _users(lr, key) == 1, "the later write was not applied"


def test_a_held_copy_dead_lettered_by_the_replayer_is_not_applied_by_the_next_router(regions, rg_config, services):
    """(a) Held, router killed before its commit; the held copy expires and the replayer dead-letters it;
    the next router, once direct, must not apply the source record."""
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=1)
    dying = services("router", ["--when", "held", *cfg.cli_args("router", "--no-health")], module=SEAM)
    wait_assigned(cfg, "router", "eu")

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    soon = (datetime.now(timezone.utc) + timedelta(seconds=3)).isoformat()
    late = write_event("eu", "users", "upsert", {"id": 1}, {"name": "late", "version": 1}, expires_at=soon)
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(late)])
    assert dying.wait(timeout=60) == EXIT_CODE, "the router did not die after delivering the held copy"
    assert [json.loads(m.value())["id"] for m in _held_copies(cfg)] == [late["id"]]
    group = router_group(cfg.load(), "eu")
    assert committed(cfg.bootstrap, group, cfg.topic("writes", "eu"), 1)[0] < 1, "committed: the test proves nothing"

    wait_until(lambda: datetime.now(timezone.utc) > datetime.fromisoformat(soon), what="the expiry", timeout=10)
    lr.proxy("eu").set_mode("pass")
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    wait_until(lambda: late["id"] in [d["write_id"] for d in _dead_letters(cfg, "expired")], timeout=90,
               what="the replayer's expired dead letter")

    _next_owner_settles(cfg, lr, services, through=0, key=2)
    assert _users(lr, 1) == 0, "a write dead-lettered as expired was applied by the next router"
    assert {d["write_id"] for d in _dead_letters(cfg, "expired")} == {late["id"]}


def test_a_write_the_router_shed_is_not_applied_by_the_next_router(regions, rg_config, services):
    """(b) The router sheds a write while the region is down and is killed before its commit; the region
    back, the next router must not apply it."""
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=1)
    dying = services("router", ["--when", "dead", *cfg.cli_args("router", "--no-health")], module=SEAM)
    wait_assigned(cfg, "router", "eu")

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    first = write_event("eu", "users", "upsert", {"id": 1}, {"name": "held", "version": 1})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(first)])
    # its apply fails: the router marks the region down and holds (the partition is held from now on)
    wait_until(lambda: len(_held_copies(cfg)) == 1, timeout=60, what="the first write's held copy")
    shed = write_event("eu", "users", "upsert", {"id": 3}, {"name": "shed", "version": 1}, policy="shed")
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(shed)])
    assert dying.wait(timeout=60) == EXIT_CODE, "the router did not die after delivering the dead letter"
    assert [d["write_id"] for d in _dead_letters(cfg, "shed")] == [shed["id"]]
    group = router_group(cfg.load(), "eu")
    assert committed(cfg.bootstrap, group, cfg.topic("writes", "eu"), 1)[0] < 2, "committed: the test proves nothing"

    lr.proxy("eu").set_mode("pass")
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    _next_owner_settles(cfg, lr, services, through=1, key=2)
    assert _users(lr, 1) == 1, "the held write was not replayed"
    assert _users(lr, 3) == 0, "a write dead-lettered as shed was applied by the next router"


def test_the_tail_scan_finds_the_last_named_source_offset_behind_a_run_of_fences(broker):
    """router/handled.py ``last_sources`` on Apache Kafka: the last held copy or mark of each held
    partition, also behind more fences than its first look reads (restarts and outages add them)."""
    held, writes = f"rg.held.eu-{uuid.uuid4().hex[:8]}", "rg.writes.eu"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(held, num_partitions=3, replication_factor=1)])[held].result(30)
    copy = [(H_SOURCE_TOPIC, writes.encode()), (H_SOURCE_PARTITION, b"0"), (H_SOURCE_OFFSET, b"5")]
    produce_raw(broker.bootstrap, held, [(b"k", b"{}")], partition=0, headers=copy)
    produce_raw(broker.bootstrap, held, [(b"fence", None)] * (TAIL * 2), partition=0,
                headers=mark_headers("r0", "rg.writes.us", 0, 99))  # another topic's mark: names nothing here
    produce_raw(broker.bootstrap, held, [(b"fence", None)], partition=1, headers=mark_headers("r0", writes, 1, 7))
    produce_raw(broker.bootstrap, held, [(b"fence", None)] * 3, partition=1, headers=[(H_FENCE, b"r0")])
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"scan-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(held, p), 10, False) for p in range(3)}
        assert ends[0][1] == 1 + TAIL * 2 and TAIL * 2 < MOST
        assert last_sources(consumer, held, writes, ends) == {0: 5, 1: 7, 2: None}
    finally:
        consumer.close()
