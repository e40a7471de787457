"""/livez and /readyz (core/probes.py): the decisions, pure, with an injected clock; the WSGI dispatch in-process."""

from __future__ import annotations

import json

import pytest

from regionguard.core.config import METRICS_SERVICES, ConfigError, parse_config
from regionguard.core.metrics import SERVICE_PORT_OFFSET, metrics_port
from regionguard.core.probes import (Heartbeat, Probes, health_reason, lanes_reason, liveness, probe_app,
                                     readiness)

GOOD = {"regions": {"eu": {"dsn": "postgresql://app@db-eu/app"}}, "tables": {"users": {"key": ["id"]}}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_live_while_the_loop_turns_stalled_once_it_stops():
    clock = Clock()
    hb = Heartbeat(clock)
    assert liveness(hb.age(), 30)[0] == 200  # not turned yet: starting, live
    hb.beat()
    clock.now += 29.9
    assert liveness(hb.age(), 30) == (200, {"status": "live", "loop_age_s": 29.9})
    clock.now += 0.2
    code, body = liveness(hb.age(), 30)
    assert code == 503 and body["status"] == "stalled" and "30.1s" in body["reason"]
    hb.beat()
    assert liveness(hb.age(), 30)[0] == 200  # turning again


def test_readiness_codes_and_bodies():
    assert readiness(None) == (200, {"status": "ready"})
    assert readiness("waiting for Kafka") == (503, {"status": "not_ready", "reason": "waiting for Kafka"})


@pytest.mark.parametrize("view_ready, lanes, reason", [
    (False, [("eu", 0, 1)], "the region-state view is not read to its end yet"),
    (True, None, "the lanes are not started yet"),
    (True, [("eu", 0, 1), ("eu", 1, 0), ("us", 0, 0)], "no partition assignment yet for lane(s) eu/1, us/0"),
    (True, [("eu", 0, 1), ("eu", 1, 3)], None),  # an empty assignment counts: assignments >= 1
    (None, [("eu", 0, 1)], None),                 # --no-health: no view to wait for
    (None, [("eu", 0, 0)], "no partition assignment yet for lane(s) eu/0"),
])
def test_router_and_replayer_ready_with_a_full_view_and_every_lane_assigned(view_ready, lanes, reason):
    got = lanes_reason(view_ready, lanes)
    assert got == reason if reason is None or got is None else reason in got


@pytest.mark.parametrize("joined, leader, view_ready, stale, ready", [
    (False, False, True, False, False),  # not in the election yet
    (True, True, False, None, True),     # this instance leads
    (True, False, False, None, False),   # view not read yet
    (True, False, True, None, False),    # no heartbeat seen yet: leader unknown
    (True, False, True, True, False),    # heartbeats stopped: leader lost
    (True, False, True, False, True),    # another instance leads, heartbeats fresh
])
def test_health_ready_when_the_leader_is_known(joined, leader, view_ready, stale, ready):
    assert (health_reason(joined, leader, view_ready, stale) is None) is ready


def _call(app, path, method="GET"):
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": method}, start_response))
    return int(seen["status"].split()[0]), seen["headers"], body


def test_probe_paths_answer_one_line_json_and_everything_else_is_the_metrics_app():
    clock = Clock()
    probes = Probes(heartbeat=Heartbeat(clock), stall_s=5)

    def metrics_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"metrics of " + environ["PATH_INFO"].encode()]

    app = probe_app(metrics_app, probes)
    assert _call(app, "/metrics")[2] == b"metrics of /metrics"
    assert _call(app, "/")[2] == b"metrics of /"  # unchanged: prometheus_client answers any other path
    code, headers, body = _call(app, "/readyz")
    assert (code, headers["Content-Type"]) == (503, "application/json")
    assert body.count(b"\n") == 1 and json.loads(body) == {"status": "not_ready", "reason": "starting"}
    probes.ready_when(lambda: "no partition assignment yet for lane(s) eu/0")
    assert json.loads(_call(app, "/readyz")[2])["reason"].startswith("no partition assignment")
    probes.ready_when(lambda: None)
    assert _call(app, "/readyz")[:1] == (200,)
    probes.not_ready("waiting for Kafka")
    assert json.loads(_call(app, "/readyz")[2]) == {"status": "not_ready", "reason": "waiting for Kafka"}
    probes.heartbeat.beat()
    assert _call(app, "/livez")[0] == 200
    probes.ready_when(lambda: None)
    clock.now += 6
    code, _, body = _call(app, "/livez")
    assert code == 503 and json.loads(body)["status"] == "stalled"
    code, _, body = _call(app, "/readyz")  # a wedged loop does no job: not ready either
    assert code == 503 and "has not turned for 6.0s" in json.loads(body)["reason"]


def test_a_failing_check_is_not_ready_never_an_error():
    probes = Probes()
    probes.ready_when(lambda: 1 / 0)
    assert probes.ready() == (503, {"status": "not_ready", "reason": "readiness check failed: ZeroDivisionError"})


def test_a_port_per_service_else_the_offset():
    assert set(SERVICE_PORT_OFFSET) == set(METRICS_SERVICES)  # metrics.ports accepts exactly these
    cfg = parse_config({**GOOD, "metrics": {"port": 9400, "ports": {"router": 9101}}})
    assert metrics_port(cfg, "router") == 9101
    assert metrics_port(cfg, "replayer") == 9402 and metrics_port(cfg, "health") == 9400
    assert metrics_port(parse_config({**GOOD, "metrics": {"port": 0}}), "replayer") == 0


@pytest.mark.parametrize("ports, needle", [
    ({"routr": 9101}, "metrics.ports: unknown service 'routr'"),
    ({"router": 70000}, "port of router must be 0..65535"),
])
def test_a_bad_metrics_port_is_one_line(ports, needle):
    with pytest.raises(ConfigError) as exc:
        parse_config({**GOOD, "metrics": {"ports": ports}})
    assert needle in str(exc.value) and "\n" not in str(exc.value)
