"""A span per batch, linked to the writes' traces (issue 27), on a real router and replayer.

The services run under the test kit's ``traced`` seam, which installs the
OpenTelemetry SDK with a file exporter, as ``opentelemetry-instrument`` with an
exporter would; the test reads the spans from that file. Apache Kafka,
PostgreSQL, no health service.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.helpers import ev_bytes, produce_raw, wait_assigned, wait_until, write_event

TRACE_A = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_B = "0af7651916cd43dd8448eb211c80319c"


def _tp(trace_id: str) -> bytes:
    return f"00-{trace_id}-00f067aa0ba902b7-01".encode()


def _spans(path: Path, name: str) -> list[dict]:
    if not path.exists():
        return []
    return [s for s in map(json.loads, path.read_text().splitlines()) if s["name"] == name]


def _linked(spans: list[dict]) -> set[str]:
    return {ln["trace_id"] for s in spans for ln in s["links"]}


def test_router_and_replayer_record_a_span_per_batch_linked_to_the_writes_traces(
        regions, rg_config, services, tmp_path):
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=1)
    spans = tmp_path / "spans.jsonl"
    traced = ["--spans", str(spans)]
    services("router", [*traced, *cfg.cli_args("router", "--no-health")], module="regionguard_testkit.embedded.traced")
    wait_assigned(cfg, "router", "eu")

    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "users", "upsert", {"id": 1}, {"name": "a", "version": 1}))],
                headers=[("traceparent", _tp(TRACE_A))])
    wait_until(lambda: lr.count("eu", "users") == 1, what="the direct write applied")
    found = wait_until(lambda: (lambda s: s if TRACE_A in _linked(s) else None)(
        _spans(spans, "regionguard.router.batch")), what="a router batch span linked to the write's trace")
    span = next(s for s in found if TRACE_A in _linked([s]))
    assert span["attributes"]["regionguard.region"] == "eu"
    assert span["trace_id"] != TRACE_A  # linked, not parented: a batch carries many traces

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"),
                [ev_bytes(write_event("eu", "users", "upsert", {"id": 2}, {"name": "b", "version": 1}))],
                headers=[("traceparent", _tp(TRACE_B))])
    wait_until(lambda: TRACE_B in _linked(_spans(spans, "regionguard.router.batch")),
               what="the router's span of the held batch")
    services("replayer", [*traced, *cfg.cli_args("replayer", "--no-health")],
             module="regionguard_testkit.embedded.traced")
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: lr.count("eu", "users") == 2, timeout=40, what="the held write replayed")
    wait_until(lambda: TRACE_B in _linked(_spans(spans, "regionguard.replayer.batch")),
               what="a replayer batch span linked to the held write's trace (its header followed the copy)")
