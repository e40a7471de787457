"""``regionguard_write_lag_seconds{region,path}`` on a real router and replayer (issue 27).

Direct, failover and replay each observe their path; a replayed write's lag starts at the
producer's record, not at its held copy, so it covers the outage it waited through (the test's
records are stamped an hour back by their producer, as a producer may stamp them).
Apache Kafka and PostgreSQL, real processes, no health service (passive health).
"""

from __future__ import annotations

import time

from tests.harness import free_port
from tests.integration.helpers import (
    ev_bytes, metric_value, produce_raw, read_topic, wait_assigned, wait_metric, wait_until, write_event,
)

LAG = "regionguard_write_lag_seconds"


def test_write_lag_is_observed_per_path_and_a_replayed_write_carries_its_wait(regions, rg_config, services):
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=1)
    rport, pport = free_port(), free_port()
    services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(rport)))
    wait_assigned(cfg, "router", "eu")

    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "users", "upsert", {"id": 1}, {"name": "direct", "version": 1}))])
    wait_metric(rport, f"{LAG}_count", lambda n: n >= 1, region="eu", path="direct", what="a direct lag")
    assert metric_value(rport, f"{LAG}_sum", region="eu", path="direct") < 60

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    # records stamped an hour ago by their producer: the lag counts from there, whoever applies them
    hour_ago_ms = int((time.time() - 3600) * 1000)
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [
        ev_bytes(write_event("eu", "users", "upsert", {"id": 2}, {"name": "held", "version": 1})),
        ev_bytes(write_event("eu", "users", "upsert", {"id": 3}, {"name": "fo", "version": 1},
                             policy="failover", fallback_regions=["us"])),
    ], timestamp_ms=hour_ago_ms)
    copies = wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(
        [m for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5) if m.value()]),
        what="both writes held (the failover one for sync-back)")
    assert all(dict(m.headers())["rg-source-timestamp"] for m in copies)
    wait_metric(rport, f"{LAG}_count", lambda n: n >= 1, region="eu", path="failover", what="a failover lag")
    assert metric_value(rport, f"{LAG}_sum", region="eu", path="failover") >= 3600

    services("replayer", cfg.cli_args("replayer", "--no-health", "--metrics-port", str(pport)))
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: lr.count("eu", "users") == 3, timeout=40, what="the held writes replayed")
    wait_metric(pport, f"{LAG}_count", lambda n: n >= 1, region="eu", path="replay", what="a replay lag")
    count = metric_value(pport, f"{LAG}_count", region="eu", path="replay")
    total = metric_value(pport, f"{LAG}_sum", region="eu", path="replay")
    # from the producer's record, not from the held copy (stamped when it was held, seconds ago)
    assert total / count >= 3600, (total, count)
