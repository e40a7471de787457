"""The router follows rg.region-state and reports its own connection failures as observations."""

from __future__ import annotations

from regionguard_testkit.testing import StatePublisher
from tests.harness import free_port
from tests.integration.helpers import (
    ev_bytes, produce_raw, read_json, read_topic, wait_assigned, wait_metric, wait_until, write_event,
)


def test_open_region_gets_no_direct_applies_until_closed_and_replayed(regions, rg_config, services):
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=2)
    with StatePublisher(cfg.load(), heartbeat_s=0.5) as states:
        port = free_port()
        services("router", cfg.cli_args("router", "--metrics-port", str(port)))
        wait_assigned(cfg, "router", "eu")
        states.set("eu", "open", reason="test")
        # the router has seen the state: every partition of eu it owns is held
        wait_metric(port, "regionguard_held_partitions", lambda n: n == 2, region="eu", what="eu held by the router")
        evs = [write_event("eu", "users", "upsert", {"id": i}, {"name": "held", "version": 1}) for i in range(10)]
        produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in evs])
        wait_until(lambda: len(read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3)) >= 10,
                   what="writes held while the region is open")
        assert lr.count("eu", "users") == 0  # the database was reachable, but the region is open
        # the other region is unaffected
        produce_raw(cfg.bootstrap, cfg.topic("writes", "us"),
                    [ev_bytes(write_event("us", "users", "upsert", {"id": 1}, {"name": "u", "version": 1}))])
        wait_until(lambda: lr.count("us", "users") == 1, what="us applies while eu is open")

        states.set("eu", "closed", reason="test")
        services("replayer", cfg.cli_args("replayer"))
        wait_until(lambda: lr.count("eu", "users") == 10, timeout=40, what="replayed after closed")
        wait_metric(port, "regionguard_held_partitions", lambda n: n == 0, region="eu",
                    what="every partition of eu back in direct mode")


def test_router_reports_connection_failures_as_observations(regions, rg_config, services):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=1)
    services("router", cfg.cli_args("router", "--no-health", "--instance", "r1"))
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "users", "upsert", {"id": 1}, {"name": "x", "version": 1}))])
    obs = wait_until(lambda: [o for o in read_json(cfg.bootstrap, cfg.topic("observations"), idle=0.3)
                              if o["observer"] == "router:r1"], what="a passive observation")
    assert obs[0]["region"] == "eu" and obs[0]["ok"] is False and obs[0]["kind"] in ("refused", "reset", "connection_lost")
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: any(o["ok"] for o in read_json(cfg.bootstrap, cfg.topic("observations"), idle=0.3)
                           if o["observer"] == "router:r1"), what="recovery observed by the router's probe")
