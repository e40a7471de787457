"""A forged region-state record does not move a running router (issue 28), on Apache Kafka.

Someone who can produce to rg.region-state publishes ``open`` for eu with a
huge epoch, first stamped a day ahead, then stamped now. The router's view
refuses both (``regionguard_region_state_refused_total{reason}`` on its
/metrics), keeps applying eu's writes directly, and still follows the real
health leader's next state (eu opened by a real outage: its partitions held).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from regionguard.core.models import RegionState, State
from tests.harness import free_port
from tests.integration.helpers import (
    ev_bytes, metric_value, produce_raw, read_json, wait_assigned, wait_metric, wait_until, write_event,
)


def _forged(at: datetime) -> tuple[bytes, bytes]:
    rec = RegionState(region="eu", state=State.open, since=at, seq=1, epoch=10 ** 9, reason="forged",
                      observer="mallory", at=at)
    return b"eu", rec.model_dump_json().encode()


def test_a_forged_record_is_refused_and_the_real_leader_still_followed(regions, rg_config, services):
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=2)
    hport, rport = free_port(), free_port()
    services("health", cfg.cli_args("health", "--metrics-port", str(hport)))
    services("router", cfg.cli_args("router", "--metrics-port", str(rport)))
    wait_metric(hport, "regionguard_region_state", lambda v: v == 0, region="eu", timeout=60, what="eu closed")
    wait_assigned(cfg, "router", "eu")
    wait_metric(rport, "regionguard_direct_partitions", lambda n: n == 2, region="eu", what="eu direct")

    # the leader has published eu's state: the router's view has read it before anything produced after it
    wait_until(lambda: [r for r in read_json(cfg.bootstrap, cfg.topic("region-state"), idle=0.3)
                        if r["region"] == "eu"], timeout=60, what="the health leader's first record for eu")
    now = datetime.now(timezone.utc)
    produce_raw(cfg.bootstrap, cfg.topic("region-state"), [_forged(now + timedelta(days=1)), _forged(now)])

    def refused_or_held() -> bool:
        refused = metric_value(rport, "regionguard_region_state_refused_total", reason="epoch_jump") or 0
        return refused >= 1 or (metric_value(rport, "regionguard_held_partitions", region="eu") or 0) > 0

    wait_until(refused_or_held, what="the router's view read the forged records")
    assert metric_value(rport, "regionguard_held_partitions", region="eu") in (None, 0.0), "the forged open was taken"
    assert metric_value(rport, "regionguard_region_state_refused_total", reason="future_at") == 1
    assert metric_value(rport, "regionguard_region_state_refused_total", reason="epoch_jump") == 1

    # the router still takes eu as closed: a write applies directly, nothing is held
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "users", "upsert", {"id": 1}, {"name": "direct", "version": 1}))])
    wait_until(lambda: lr.count("eu", "users") == 1, what="a direct apply after the forged records")
    assert metric_value(rport, "regionguard_held_partitions", region="eu") in (None, 0.0)
    # the health leader refused them too: it did not adopt the forged epoch
    wait_metric(hport, "regionguard_region_state_refused_total", lambda n: n >= 1, reason="epoch_jump",
                what="the health service's view refused the forged epoch")

    # the real leader's next state is followed: a real outage opens eu, the router holds it
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    wait_metric(hport, "regionguard_region_state", lambda v: v == 2, region="eu", timeout=30, what="eu open")
    wait_metric(rport, "regionguard_held_partitions", lambda n: n == 2, region="eu", timeout=30,
                what="the router follows the real leader's open")
    real = [r for r in read_json(cfg.bootstrap, cfg.topic("region-state"), idle=0.5)
            if r["region"] == "eu" and r["observer"] != "mallory"]
    assert real and max(r["epoch"] for r in real) < 1000
