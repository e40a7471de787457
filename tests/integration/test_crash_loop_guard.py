"""The crash-loop guard: a record that kills the process outright is dead-lettered as poison, nothing is lost.

The test kit's ``crashloop`` seam makes the router or the replayer ``os._exit(70)``
when it decodes a record carrying a magic string (as a segfault in a C
extension or an OOM kill would: no exception, no cleanup). The test restarts
the process whenever it dies, as a supervisor would. After at most three
deaths the record must be in rg.dead-letter (reason ``poison``, its source
topic, partition and offset, its exact bytes), every good record around it
applied exactly once and in order, and the process up. Clean stops must
never count as deaths.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from regionguard.core import crashguard
from regionguard.core.kafka import replayer_group, router_group
from regionguard.core.models import DeadLetter
from regionguard_testkit.embedded.crashloop import EXIT_CODE
from tests.integration.helpers import (ev_bytes, produce_raw, read_json, read_topic, wait_assigned, wait_until,
                                      write_event)

MAGIC = "rg-test-dies-here"
SEAM = "regionguard_testkit.embedded.crashloop"


def _events(first: int, n: int) -> list[dict]:
    return [write_event("eu", "users", "upsert", {"id": i}, {"name": f"good{i}", "version": 1})
            for i in range(first, first + n)]


def _poison_letters(cfg) -> list[DeadLetter]:
    return [DeadLetter.model_validate(d) for d in read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.3)
            if d.get("reason") == "poison"]


def _supervise(proc: Any, done: Callable[[], Any], *, max_deaths: int = 3, timeout: float = 90) -> int:
    """Restart ``proc`` whenever it dies until ``done()``; the number of deaths (fails past ``max_deaths``)."""
    deaths = 0
    while True:
        wait_until(lambda: done() or not proc.alive, timeout=timeout, what="the poison dead-lettered or a death")
        if done():
            return deaths
        assert proc.returncode == EXIT_CODE, proc.log_tail()
        deaths += 1
        assert deaths <= max_deaths, f"still dying after {deaths} deaths: the partition never moves on"
        proc.start()


def _assert_applied_once_in_order(lr, goods: list[dict]) -> None:
    ids = [g["id"] for g in goods]
    rows = {r["id"]: r["at"] for r in lr.fetch("eu", "SELECT write_id::text AS id, applied_at AS at "
                                                     "FROM regionguard_applied")}
    assert set(rows) == set(ids), "every good write applied, the poison one never"
    at = [rows[i] for i in ids]
    assert at == sorted(at), "applied in the order produced"
    names = [r["name"] for r in lr.fetch("eu", "SELECT name FROM users ORDER BY id")]
    assert names == [g["data"]["name"] for g in sorted(goods, key=lambda g: g["key"]["id"])]


def _assert_poison_letter(letter: DeadLetter, *, topic: str, offset: int, value: bytes) -> None:
    assert letter.reason.value == "poison"
    assert (letter.topic, letter.partition, letter.offset) == (topic, 0, offset)
    assert letter.original_bytes() == value  # redrivable as it was
    assert f"offset {offset}" in letter.detail and "times" in letter.detail


@pytest.mark.parametrize("batch_max, good_before", [(None, 3), (4, 10)], ids=["first-batch", "read-ahead"])
def test_router_dead_letters_a_record_that_kills_it_and_moves_on(regions, rg_config, services, batch_max,
                                                                 good_before):
    """``read-ahead``: the record is batches past the last commit (read ahead while the first batch applies)."""
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1, overrides={"router": {"batch_max": batch_max}} if batch_max else None)
    before, after = _events(100, good_before), _events(200, 3)
    poison = write_event("eu", "users", "upsert", {"id": 150}, {"name": MAGIC, "version": 1})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in [*before, poison, *after]])
    source = read_topic(cfg.bootstrap, cfg.topic("writes", "eu"), idle=0.3)
    bad = next(m for m in source if MAGIC.encode() in m.value())

    router = services("router", ["--magic", MAGIC, *cfg.cli_args("router", "--no-health")], module=SEAM)
    deaths = _supervise(router, lambda: _poison_letters(cfg))
    assert 1 <= deaths <= 3
    [letter] = _poison_letters(cfg)
    _assert_poison_letter(letter, topic=cfg.topic("writes", "eu"), offset=bad.offset(), value=bad.value())

    later = _events(300, 2)
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in later])
    goods = [*before, *after, *later]
    wait_until(lambda: lr.count("eu", "regionguard_applied") >= len(goods), timeout=60, what="every good write")
    _assert_applied_once_in_order(lr, goods)
    assert router.alive, router.log_tail()
    assert len(_poison_letters(cfg)) == 1


def test_replayer_dead_letters_a_held_record_that_kills_it_and_moves_on(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    services("router", cfg.cli_args("router", "--no-health"))  # holds without decoding through the seam
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    before, after = _events(1, 3), _events(10, 3)
    poison = write_event("eu", "users", "upsert", {"id": 5}, {"name": MAGIC, "version": 1})
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in [*before, poison, *after]])
    wait_until(lambda: len([m for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3)
                            if m.value() is not None]) == 7, timeout=60, what="all seven writes held")
    held = [m for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3) if m.value() is not None]
    bad = next(m for m in held if MAGIC.encode() in m.value())
    lr.proxy("eu").set_mode("pass")

    replayer = services("replayer", ["--magic", MAGIC, *cfg.cli_args("replayer", "--no-health")], module=SEAM)
    deaths = _supervise(replayer, lambda: _poison_letters(cfg))
    assert 1 <= deaths <= 3
    [letter] = _poison_letters(cfg)
    _assert_poison_letter(letter, topic=cfg.topic("held", "eu"), offset=bad.offset(), value=bad.value())

    goods = [*before, *after]
    wait_until(lambda: lr.count("eu", "regionguard_applied") >= len(goods), timeout=60, what="every good write")
    _assert_applied_once_in_order(lr, goods)
    assert replayer.alive, replayer.log_tail()
    assert len(_poison_letters(cfg)) == 1


def _marker(cfg, service: str) -> crashguard.Marker | None:
    """The crash guard's marker on ``service``'s committed offset of partition 0 (None: no marker)."""
    group = (router_group if service == "router" else replayer_group)(cfg.load(), "eu")
    topic = cfg.topic("writes" if service == "router" else "held", "eu")

    def lookup() -> tuple[crashguard.Marker | None] | None:
        c = Consumer({"bootstrap.servers": cfg.bootstrap, "group.id": group, "enable.auto.commit": False})
        try:
            [tp] = c.committed([TopicPartition(topic, 0)], timeout=10)
        except KafkaException:
            return None  # e.g. the coordinator moving while the group forms: ask again
        finally:
            c.close()
        return (crashguard.parse(tp.metadata),)

    return wait_until(lookup, timeout=30, what=f"the {service}'s committed offset")[0]


BUSY = """
    CREATE TABLE busy (on_ boolean);
    INSERT INTO busy VALUES (true);
    CREATE FUNCTION refuse_while_busy() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN IF EXISTS (SELECT 1 FROM busy) THEN RAISE EXCEPTION 'busy' USING ERRCODE = '40001'; END IF;
    RETURN NEW; END $$;
    CREATE TRIGGER refuse_while_busy BEFORE INSERT OR UPDATE ON users
        FOR EACH ROW EXECUTE FUNCTION refuse_while_busy();
"""


def _stop_cleanly_five_times(cfg, services, service: str) -> None:
    """Start ``service``, wait until its batch is in flight (refused by ``busy``, retried), SIGTERM; x5."""
    for i in range(5):
        proc = services(f"{service}{i}", cfg.cli_args(service, "--no-health"))
        marker = wait_until(lambda: _marker(cfg, service), timeout=60, what="the batch read and in flight")
        assert marker.kind is crashguard.Kind.start, marker
        proc.terminate()
        assert proc.returncode == 0, proc.log_tail()
        assert _marker(cfg, service) is None, "a clean stop left the crash guard's marker: counted as a death"


def test_router_clean_restarts_with_a_batch_in_flight_never_poison(regions, rg_config, services):
    """SIGTERM x5, each time with the partition's batch in flight (its transaction refused, retried).

    A clean stop abandons the batch uncommitted; it must hand the partition over without the guard's
    start marker, or five clean restarts would look like five deaths and poison a good write.
    """
    lr = regions(["eu"])
    lr.execute("eu", BUSY)
    cfg = rg_config(lr, partitions=1)
    goods = _events(1, 3)
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in goods])
    _stop_cleanly_five_times(cfg, services, "router")
    lr.execute("eu", "DELETE FROM busy")
    router = services("router", cfg.cli_args("router", "--no-health"))
    wait_until(lambda: lr.count("eu", "regionguard_applied") >= len(goods), timeout=60, what="every write")
    _assert_applied_once_in_order(lr, goods)
    assert read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5) == []
    assert router.alive


def test_replayer_clean_restarts_with_a_batch_in_flight_never_poison(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    goods = _events(1, 3)
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in goods])
    wait_until(lambda: len([m for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3)
                            if m.value() is not None]) == 3, timeout=60, what="the writes held")
    lr.execute("eu", BUSY)
    lr.proxy("eu").set_mode("pass")
    _stop_cleanly_five_times(cfg, services, "replayer")
    lr.execute("eu", "DELETE FROM busy")
    replayer = services("replayer", cfg.cli_args("replayer", "--no-health"))
    wait_until(lambda: lr.count("eu", "regionguard_applied") >= len(goods), timeout=60, what="every write")
    _assert_applied_once_in_order(lr, goods)
    assert read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5) == []
    assert replayer.alive
