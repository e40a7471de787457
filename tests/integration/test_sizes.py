"""Size limits on Apache Kafka: oversized records become dead letters that fit, and nothing crashes.

The topics keep the broker's default ``max.message.bytes`` (1,048,588) and the
producers librdkafka's ``message.max.bytes`` (1,000,000). A dead letter embeds
its original (base64 when binary), so without the limits an 800 KB record made
a dead letter Kafka refused, and the router died on that record at every start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from regionguard.core.errors import BadWrite
from regionguard.core.models import DeadLetter, DeadReason
from regionguard.core.publish import dead_letter_value
from regionguard.core.sizes import dead_letter_max
from regionguard.core.writes import Record
from tests.integration.helpers import (ev_bytes, produce_raw, read_json, read_topic, wait_assigned, wait_until,
                                       write_event)

BINARY = bytes(range(256)) * 3125  # 800,000 bytes, not UTF-8: its dead letter would be ~1.07 MB in base64


def _dead_letters(cfg, n: int = 1) -> list[DeadLetter]:
    docs = wait_until(lambda: (lambda d: d if len(d) >= n else None)(
        read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)), timeout=40, what=f"{n} dead letter(s)")
    return [DeadLetter.model_validate(d) for d in docs]


def _one_dead_letter(cfg) -> DeadLetter:
    """The one record dead-lettered (a batch read again after a rebalance may publish its dead letter twice)."""
    dls = _dead_letters(cfg)
    assert len({(d.topic, d.partition, d.offset) for d in dls}) == 1, dls
    return dls[0]


def _orders(lr) -> set[int]:
    return {r["id"] for r in lr.fetch("eu", "SELECT id FROM orders")}


def _redrive(cfg, reason: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "regionguard.cli", "dead-letters", "redrive", "--reason", reason,
                           "--config", str(cfg.path)], capture_output=True, text=True, timeout=120)


def test_an_800kb_binary_record_is_dead_lettered_truncated_and_redriven_whole(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    router = services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    writes = cfg.topic("writes", "eu")
    before = write_event("eu", "orders", "insert", {"id": 1}, {"amount": 1, "status": "ok"})
    after = [write_event("eu", "orders", "insert", {"id": i}, {"amount": 1, "status": "ok"}) for i in (2, 3)]
    produce_raw(cfg.bootstrap, writes, [ev_bytes(before), (b"k-big", BINARY), *map(ev_bytes, after)])

    wait_until(lambda: _orders(lr) == {1, 2, 3}, timeout=40, what="the writes around the large one applied")
    dl = _one_dead_letter(cfg)
    assert dl.reason is DeadReason.invalid_json and (dl.topic, dl.partition, dl.offset) == (writes, 0, 1)
    assert dl.original_truncated and dl.original_size == len(BINARY) and dl.original_encoding == "base64"
    assert BINARY.startswith(dl.original_bytes()) and len(dl.original_bytes()) > 500_000
    assert router.alive

    run = _redrive(cfg, "invalid_json")
    assert run.returncode == 0, run.stdout + run.stderr
    summary = run.stdout.strip().splitlines()[-1]  # redrive <reason>: redriven=N refused=N ... (offsets)
    counts = {k: int(v) for k, v in (f.split("=") for f in summary.split("(")[0].split()[2:])}
    assert counts["redriven"] >= 1 and counts["refused"] == 0, run.stdout
    republished = [m for m in read_topic(cfg.bootstrap, writes, idle=0.5) if m.offset() > 3]
    assert republished and {(m.key(), m.value()) for m in republished} == {(b"k-big", BINARY)}  # exact, whole
    assert router.alive


def test_a_write_over_writes_max_bytes_is_dead_lettered_too_large(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1, overrides={"writes": {"max_bytes": 20_000}})
    router = services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    big = write_event("eu", "orders", "insert", {"id": 1}, {"amount": 1, "status": "x" * 30_000})
    small = write_event("eu", "orders", "insert", {"id": 2}, {"amount": 1, "status": "ok"})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(big), ev_bytes(small)])

    wait_until(lambda: _orders(lr) == {2}, timeout=40, what="the write after the large one applied")
    dl = _one_dead_letter(cfg)
    assert dl.reason is DeadReason.too_large and "writes.max_bytes (20000)" in dl.detail
    assert not dl.original_truncated and dl.original_bytes() == ev_bytes(big)[1]  # it fits: kept whole
    assert router.alive


def _near_limit_while_held(regions, rg_config, services, overrides):
    """A valid write the writes topic takes but whose held copy (same bytes plus headers) it would not."""
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1, overrides=overrides)
    router = services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    big = write_event("eu", "orders", "insert", {"id": 1}, {"amount": 1, "status": ""})
    key, value = ev_bytes(big)
    big["data"]["status"] = "x" * (999_940 - len(key) - len(value))
    key, value = ev_bytes(big)
    assert len(key) + len(value) == 999_940
    small = write_event("eu", "orders", "insert", {"id": 2}, {"amount": 1, "status": "ok"})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [(key, value), ev_bytes(small)])

    held = wait_until(lambda: read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5), timeout=40,
                      what="the small write held")
    assert [json.loads(m.value())["id"] for m in held] == [small["id"]]
    dl = _one_dead_letter(cfg)
    assert dl.reason is DeadReason.too_large and (dl.partition, dl.offset) == (0, 0)
    assert dl.original_size == len(value) and value.startswith(dl.original_bytes())
    assert router.alive
    return dl


def test_a_write_just_under_the_topic_limit_is_dead_lettered_not_held_unproducibly(regions, rg_config, services):
    dl = _near_limit_while_held(regions, rg_config, services, None)
    assert "exceeds writes.max_bytes" in dl.detail  # the default leaves room for the held copy's headers


def test_a_held_copy_kafka_refuses_becomes_a_dead_letter(regions, rg_config, services):
    """writes.max_bytes set above what a held copy can carry: the produce refusal itself is handled."""
    dl = _near_limit_while_held(regions, rg_config, services, {"writes": {"max_bytes": 1_000_000}})
    assert "MSG_SIZE_TOO_LARGE" in dl.detail and dl.original_truncated


def test_a_replayer_dead_letter_of_a_large_held_write_is_truncated(regions, rg_config, services):
    """A large write expires while held; on recovery the replayer's dead letter (JSON-escaped, larger
    than the write) must fit, and the replay go on to the write after it."""
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    router = services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    # a backslash is 2 bytes in the write's JSON and 4 in its dead letter's: ~900 KB of write, ~1.8 MB escaped
    expires = datetime.now(timezone.utc) + timedelta(seconds=10)
    big = write_event("eu", "orders", "insert", {"id": 1}, {"amount": 1, "status": "\\" * 450_000},
                      expires_at=expires.isoformat())
    nxt = write_event("eu", "orders", "insert", {"id": 2}, {"amount": 1, "status": "ok"})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(big), ev_bytes(nxt)])
    wait_until(lambda: len(read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5)) == 2, timeout=40,
               what="both writes held")
    wait_until(lambda: datetime.now(timezone.utc) > expires, timeout=30, what="the large write expired while held")
    replayer = services("replayer", cfg.cli_args("replayer", "--no-health"))  # it finds it expired
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: _orders(lr) == {2}, timeout=60, what="the write after the expired one replayed")
    dl = _one_dead_letter(cfg)
    assert dl.reason is DeadReason.expired and dl.topic == cfg.topic("held", "eu")
    assert dl.original_truncated and dl.original_size == len(ev_bytes(big)[1])
    assert router.alive and replayer.alive


def test_redrive_says_plainly_when_a_truncated_original_is_no_longer_retained(regions, rg_config):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    writes, dl_topic = cfg.topic("writes", "eu"), cfg.topic("dead-letter")
    produce_raw(cfg.bootstrap, writes, [(b"k-big", BINARY)])
    rec = Record(writes, 0, 0, b"k-big", BINARY)
    value = dead_letter_value(rec, BadWrite(DeadReason.invalid_json, "not JSON"), region="eu",
                              limit=dead_letter_max(None, None))
    assert DeadLetter.model_validate_json(value).original_truncated
    produce_raw(cfg.bootstrap, dl_topic, [(b"k-big", value)])
    admin = AdminClient({"bootstrap.servers": cfg.bootstrap})
    for fut in admin.delete_records([TopicPartition(writes, 0, 1)]).values():
        fut.result(timeout=30)

    run = _redrive(cfg, "invalid_json")
    assert run.returncode == 1, run.stdout + run.stderr
    [refused] = [line for line in run.stdout.splitlines() if line.startswith("refused")]
    assert "truncated" in refused and f"{writes}[0]@0 is no longer retained" in refused
    assert "redriven=0 refused=1" in run.stdout
    assert not run.stderr.strip() or "Traceback" not in run.stderr
    assert [m.offset() for m in read_topic(cfg.bootstrap, writes, idle=0.5)] == []  # nothing republished


def _set_max_message_bytes(bootstrap: str, topic: str, value: int) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    admin = AdminClient({"bootstrap.servers": bootstrap})
    res = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET)])
    for fut in admin.incremental_alter_configs([res]).values():
        fut.result(timeout=30)


def test_a_held_topic_smaller_than_the_writes_topic(regions, rg_config, services):
    """rg.held.eu takes 100,000 bytes a record. The broker itself refuses a 150 KB held copy (a delivery
    report, not produce()): it becomes a too_large dead letter. Held copies of 10 KB each, 200 KB in all,
    are held, none taken for too large (the producer's batches fit the topic)."""
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1, overrides={"writes": {"max_bytes": 500_000}})
    _set_max_message_bytes(cfg.bootstrap, cfg.topic("held", "eu"), 100_000)
    router = services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    big = write_event("eu", "orders", "insert", {"id": 0}, {"amount": 1, "status": "x" * 150_000})
    smalls = [write_event("eu", "orders", "insert", {"id": i}, {"amount": 1, "status": "y" * 10_000})
              for i in range(1, 21)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(big), *map(ev_bytes, smalls)])

    held = wait_until(lambda: (lambda r: r if len(r) >= 20 else None)(
        read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5)), timeout=40, what="the 20 small writes held")
    assert [json.loads(m.value())["id"] for m in held] == [e["id"] for e in smalls]
    dl = _one_dead_letter(cfg)
    assert dl.reason is DeadReason.too_large and dl.offset == 0 and "MSG_SIZE_TOO_LARGE" in dl.detail
    assert not dl.original_truncated and dl.original_bytes() == ev_bytes(big)[1]
    assert router.alive


def test_a_dead_letter_kafka_keeps_refusing_is_retried_visibly_and_never_dropped(regions, rg_config, services):
    """rg.dead-letter takes 200 bytes a record: not even a dead letter with an empty original fits. The
    router retries with backoff, counts every refusal, commits nothing past the record, stays alive;
    once the topic takes it, the dead letter lands and the offset is committed."""
    from regionguard.core.kafka import router_group
    from tests.harness import free_port
    from tests.integration.helpers import committed, wait_metric

    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    dl_topic, writes = cfg.topic("dead-letter"), cfg.topic("writes", "eu")
    _set_max_message_bytes(cfg.bootstrap, dl_topic, 200)
    port = free_port()
    router = services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")
    good = write_event("eu", "orders", "insert", {"id": 1}, {"amount": 1, "status": "ok"})
    produce_raw(cfg.bootstrap, writes, [(b"k-bad", b"{not json"), ev_bytes(good)])

    wait_metric(port, "regionguard_produce_errors_total", lambda n: n >= 3, timeout=40, topic=dl_topic,
                code="MSG_SIZE_TOO_LARGE", what="the dead letter refused again and again")
    group = router_group(cfg.load(), "eu")
    assert committed(cfg.bootstrap, group, writes, 1)[0] < 1  # nothing committed past the refused record
    assert router.alive

    _set_max_message_bytes(cfg.bootstrap, dl_topic, 1_048_588)
    dl = _one_dead_letter(cfg)
    assert dl.reason is DeadReason.invalid_json and dl.offset == 0 and dl.original_truncated and dl.original == ""
    wait_until(lambda: committed(cfg.bootstrap, group, writes, 1)[0] == 2, timeout=40, what="the batch committed")
    assert _orders(lr) == {1} and router.alive
