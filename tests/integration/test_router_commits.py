"""A router lane paces its offset commits; the last one still lands once it is idle (router/commits.py).

A lane used to commit after every batch. With small batches (``batch_wait_ms: 0``
here, one write every few milliseconds) that is hundreds of commits a second;
on Apache Kafka they queued ahead of the lane's heartbeats on the coordinator
connection until its session expired (bench/latency.py, README). The test
watches the group's committed offsets from outside, as often as the broker
answers, while writes trickle in: each change it sees is at least one commit
that reached the broker.
"""

from __future__ import annotations

import threading
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from regionguard.core.kafka import producer_conf, router_group
from regionguard.router.commits import COMMIT_INTERVAL_S
from tests.integration.helpers import ev_bytes, wait_assigned, wait_until, write_event

TRICKLE_S = 4.0
EVERY_S = 0.003  # one write every 3 ms: without pacing, a batch (and a commit) every few ms


def _trickle(bootstrap: str, topic: str, events: list[dict], stop: threading.Event) -> None:
    p = Producer(producer_conf(bootstrap, **{"linger.ms": 0}))
    for ev in events:
        if stop.is_set():
            break
        key, value = ev_bytes(ev)
        p.produce(topic, key=key, value=value)
        p.poll(0)
        time.sleep(EVERY_S)
    assert p.flush(30) == 0


def test_commits_are_paced_under_a_trickle_and_the_last_lands_when_idle(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=2, overrides={"router": {"batch_wait_ms": 0, "lanes": 1}})
    topic, group = cfg.topic("writes", "eu"), router_group(cfg.load(), "eu")
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")

    n = int(TRICKLE_S / EVERY_S)
    events = [write_event("eu", "users", "upsert", {"id": i}, {"name": "x", "version": 1}) for i in range(n)]
    stop = threading.Event()
    producer = threading.Thread(target=_trickle, args=(cfg.bootstrap, topic, events, stop), daemon=True)
    watcher = Consumer({"bootstrap.servers": cfg.bootstrap, "group.id": group, "enable.auto.commit": False})
    parts = [TopicPartition(topic, p) for p in range(2)]
    samples: list[tuple[float, tuple[int, ...]]] = []
    try:
        producer.start()
        t0 = time.monotonic()
        while producer.is_alive() and time.monotonic() - t0 < TRICKLE_S + 30:
            offsets = tuple(tp.offset for tp in watcher.committed(parts, timeout=10))
            samples.append((time.monotonic(), offsets))
            time.sleep(0.005)  # ~200 looks a second: far more often than paced commits, little load
        stop.set()
        producer.join(30)

        def settled() -> bool:
            return lr.count("eu", "regionguard_applied") == n and \
                sum(max(tp.offset, 0) for tp in watcher.committed(parts, timeout=10)) == n

        # idle now: what the pacer held back must still reach the broker
        wait_until(settled, timeout=30, what="every write applied and its offset committed after the trickle")
    finally:
        stop.set()
        watcher.close()

    span = samples[-1][0] - samples[0][0]
    changes = sum(1 for a, b in zip(samples, samples[1:]) if a[1] != b[1])
    rate = len(samples) / span
    # the check means something only if we look more often than the pacer lets commits through
    assert rate >= 3 / COMMIT_INTERVAL_S, f"sampled the commits only {rate:.0f} times a second"
    allowed = span / COMMIT_INTERVAL_S * 1.5 + 3  # slack: commits sent 0.1 s apart may reach the broker closer
    assert changes <= allowed, (f"{changes} commit changes seen in {span:.1f} s ({len(samples)} samples): "
                                f"more than {allowed:.0f}, the lane is not pacing its commits")
