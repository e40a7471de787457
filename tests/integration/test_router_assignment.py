"""A router that gets partitions with records already waiting applies them directly, never holds them.

The records of a newly assigned partition can arrive with the assignment
(Apache Kafka assigns and fetches fast). They used to be routed while the
partition's mode was still unknown (before the lookup of its held partition),
so they went to the held topic and the partition stayed held until a replayer
drained it -- with no replayer running, for good (found by bench/router_apply.py
and bench/takeover.py on Apache Kafka).
"""

from __future__ import annotations

import urllib.request

from tests.harness import free_port
from tests.integration.helpers import ev_bytes, produce_raw, wait_until, write_event


def _held(port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("regionguard_writes_held_total{"))


def test_a_backlog_waiting_at_assignment_is_applied_not_held(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=12)
    n = 3000
    evs = [write_event("eu", "users", "upsert", {"id": i}, {"name": "x", "version": 1}) for i in range(n)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    port = free_port()
    router = services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))

    def applied() -> int:
        try:
            return lr.count("eu", "regionguard_applied")
        except Exception:  # noqa: BLE001 - the router creates the inbox when it starts
            return 0

    wait_until(lambda: applied() == n, timeout=90,
               what="the whole backlog applied (no replayer runs: a held write would never be)")
    assert _held(port) == 0
    assert lr.count("eu", "users") == n
    router.terminate()
