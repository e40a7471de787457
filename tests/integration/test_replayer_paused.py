"""The replayer must never consume past a held write it did not apply (found by the chaos suite).

While a region is not closed (or not ready), the replayer pauses its held
partitions and polls only to serve rebalance callbacks. Partitions assigned
during that wait were not really paused, so each ``poll(0)`` returned -- and
threw away -- one held write; its offset was later committed with the next
batch, and the write was lost for good.
"""

from __future__ import annotations

import time

import pytest

from regionguard_testkit.testing import StatePublisher
from tests.integration.helpers import ev_bytes, produce_raw, wait_assigned, wait_until, write_event

pytestmark = pytest.mark.timeout(120)


def test_held_writes_survive_a_replayer_that_starts_while_the_region_is_open(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    with StatePublisher(cfg.load(), heartbeat_s=0.5, initial=None) as health:
        health.set("eu", "open", reason="test: region down")
        evs = [write_event("eu", "users", "upsert", {"id": i}, {"name": f"n{i}", "version": 1}) for i in range(40)]
        produce_raw(cfg.bootstrap, cfg.topic("held", "eu"), [ev_bytes(e) for e in evs], partition=0)
        services("replayer", cfg.cli_args("replayer"))
        # the group forms and assigns the held partition while the region is open
        wait_assigned(cfg, "replayer", "eu", timeout=35)
        for n in range(40, 140, 20):  # more writes are held, arriving over time, while the replayer waits
            evs = [write_event("eu", "users", "upsert", {"id": i}, {"name": f"n{i}", "version": 1})
                   for i in range(n, n + 20)]
            produce_raw(cfg.bootstrap, cfg.topic("held", "eu"), [ev_bytes(e) for e in evs], partition=0)
            time.sleep(0.5)  # the pace of the arrivals, not a wait for anything
        closed_at = lr.fetchval("eu", "SELECT clock_timestamp()")
        health.set("eu", "closed", reason="test: recovered")
        wait_until(lambda: lr.count("eu", "users") == 140, timeout=40,
                   what=f"all 140 held writes replayed (have {lr.count('eu', 'users')})")
    assert lr.fetchval("eu", "SELECT count(*) FROM regionguard_applied") == 140
    # none of them was applied while the region was open
    assert lr.fetchval("eu", "SELECT count(*) FROM regionguard_applied WHERE applied_at < $1", closed_at) == 0
