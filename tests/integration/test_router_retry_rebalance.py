"""A rebalance while the router waits to retry must not leave partitions paused for good (found by review
while chasing a chaos failure).

The router pauses its partitions while it backs off from a retriable error
(here: an allow-listed table that does not exist yet). A partition revoked
during that wait and assigned back stayed paused -- the pause outlives the
rebalance -- so its writes were never applied until the router restarted.
"""

from __future__ import annotations

import time

import pytest

from tests.harness import free_port
from tests.integration.helpers import ev_bytes, produce_raw, wait_assigned, wait_metric, wait_until, write_event

pytestmark = pytest.mark.timeout(180)

ONLY_ORDERS = "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, amount numeric, status text);"


def test_partitions_resume_after_a_rebalance_during_a_retry_wait(regions, rg_config, services):
    lr = regions(["eu"], schema=ONLY_ORDERS)  # users is allow-listed but missing: retry with backoff
    # 4 partitions: two routers with two lanes each are four members, and b must get some
    cfg = rg_config(lr, partitions=4, overrides={"router": {"retry_max_s": 1.0}})
    port = free_port()
    services("router-a", cfg.cli_args("router", "--no-health", "--instance", "a", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")
    sent: list[dict] = []

    def burst(first: int) -> None:
        evs = [write_event("eu", "users", "upsert", {"id": i}, {"name": "x", "version": 1})
               for i in range(first, first + 20)]
        produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
        sent.extend(evs)

    burst(0)
    wait_metric(port, "regionguard_apply_errors_total", lambda n: n >= 1, region="eu", what="router a retrying")
    services("router-b", cfg.cli_args("router", "--no-health", "--instance", "b"))
    # the group rebalanced while a was waiting: four members on four partitions, one each, so b owns some
    wait_assigned(cfg, "router", "eu", processes=2, timeout=40)
    for k in range(1, 6):
        burst(k * 20)
        time.sleep(0.3)
    lr.setup_schema("CREATE TABLE users (id bigint PRIMARY KEY, name text, email text, version bigint NOT NULL)")
    wait_until(lambda: lr.count("eu", "users") == len(sent), timeout=60, what="every write applied")
    assert lr.fetchval("eu", "SELECT count(*) FROM regionguard_applied") == len(sent)
