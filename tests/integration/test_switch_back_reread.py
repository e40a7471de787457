"""After the switch back to direct, a lane reads on from its own settled position, not the broker's commit.

A lane paces its offset commits (router/commits.py), so the broker's committed
offset may lag what the lane has settled. When the region closes again, a
batch read before the partition's pause holds records of the now draining
partition; they are left to be read again (sort.py ``deferred``) and the
reader seeks back. It used to seek to the broker's commit: the records the lane
had already handled in held mode were read again once the partition went
direct -- a write dead-lettered as ``shed`` was then applied as well, after the
newer held write of its key (found by review, issue 25 finding 6).

The commit window is normally 0.1 s; the test widens it with the test kit's
``slow_commits`` seam so the sequence happens every time. The table is
unversioned: last-writer-wins can't hide the stale write.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import Producer

from regionguard.core.kafka import producer_conf
from tests.harness import free_port
from tests.integration.helpers import (ev_bytes, produce_raw, read_json, wait_assigned, wait_metric, wait_until,
                                      write_event)

EVERY_S = 0.003
TRICKLE_MAX = 6000  # 18 s at most; stopped once the partition is direct again


def _order(key: int, status: str, **extra) -> dict:
    return write_event("eu", "orders", "upsert", {"id": key}, {"amount": key, "status": status}, **extra)


def _trickle(bootstrap: str, topic: str, sent: list[dict], stop: threading.Event) -> None:
    p = Producer(producer_conf(bootstrap, **{"linger.ms": 0}))
    for i in range(TRICKLE_MAX):
        if stop.is_set():
            break
        ev = _order(1000 + i, "trickle")
        key, value = ev_bytes(ev)
        p.produce(topic, key=key, value=value)
        sent.append(ev)
        p.poll(0)
        time.sleep(EVERY_S)
    assert p.flush(30) == 0


def _applied(lr) -> set[str]:
    return {r["id"] for r in lr.fetch("eu", "SELECT write_id::text AS id FROM regionguard_applied")}


def test_a_shed_write_is_not_applied_after_the_switch_back(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1, overrides={"router": {"lanes": 1, "batch_wait_ms": 200}})
    topic = cfg.topic("writes", "eu")
    port = free_port()
    services("router", ["--commit-interval", "120",
                        *cfg.cli_args("router", "--no-health", "--metrics-port", str(port))],
             module="regionguard_testkit.embedded.slow_commits")
    wait_assigned(cfg, "router", "eu")
    wait_metric(port, "regionguard_direct_partitions", lambda n: n == 1, region="eu",
                what="the partition looked up and direct (later writes are not taken for possibly applied)")

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    first = _order(100, "held")
    produce_raw(cfg.bootstrap, topic, [ev_bytes(first)])
    wait_metric(port, "regionguard_held_partitions", lambda n: n == 1, region="eu",
                what="the partition held (eu unavailable)")
    # the lane's first commit went at once; from here on the broker's commit stays behind these two
    shed = _order(1, "shed", policy="shed")
    newer = _order(1, "new")
    produce_raw(cfg.bootstrap, topic, [ev_bytes(shed), ev_bytes(newer)])
    wait_until(lambda: shed["id"] in {d.get("write_id") for d in read_json(cfg.bootstrap, cfg.topic("dead-letter"),
                                                                               idle=0.3)},
               timeout=30, what="the shed write dead-lettered")
    wait_until(lambda: newer["id"] in {e.get("id") for e in read_json(cfg.bootstrap, cfg.topic("held", "eu"),
                                                                          idle=0.3) if e},
               timeout=30, what="the newer write of its key held")

    # writes keep coming while eu recovers: a batch read just before the partition's pause holds
    # records of the draining partition, which the lane leaves to be read again
    sent: list[dict] = []
    stop = threading.Event()
    trickle = threading.Thread(target=_trickle, args=(cfg.bootstrap, topic, sent, stop), daemon=True)
    trickle.start()
    try:
        wait_until(lambda: len(sent) > 100, timeout=10, what="writes trickling in")
        lr.proxy("eu").set_mode("pass")
        services("replayer", cfg.cli_args("replayer", "--no-health"))
        wait_metric(port, "regionguard_direct_partitions", lambda n: n == 1, region="eu", timeout=60,
                    what="the partition direct again after the replay")
    finally:
        stop.set()
        trickle.join(30)

    last = _order(2, "last")
    produce_raw(cfg.bootstrap, topic, [ev_bytes(last)])
    want = {first["id"], newer["id"], last["id"], *(e["id"] for e in sent)}
    wait_until(lambda: want <= _applied(lr), timeout=60,
               what="every held, trickled and later write applied (the lane read past the shed write)")

    assert shed["id"] not in _applied(lr), "the write dead-lettered as shed was applied after the switch back"
    rows = lr.fetch("eu", "SELECT status FROM orders WHERE id = 1")
    assert rows == [{"status": "new"}], f"key 1 went back to an older write: {rows}"
