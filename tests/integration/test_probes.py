"""/livez and /readyz on each service's metrics port: real router, replayer and health processes.

On the session broker (Apache Kafka) and PostgreSQL; every wait is a bounded poll of the
endpoints themselves.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.error
import urllib.request

import pytest

from tests.harness import free_port, write_config
from tests.integration.helpers import metric_value, wait_until

pytestmark = pytest.mark.timeout(150)
WEDGE = "regionguard_testkit.embedded.wedge"  # SIGUSR1 blocks the service's event loop


def probe(port: int, path: str) -> tuple[int, dict | None]:
    """(HTTP status, JSON body) of ``path``; (0, None) while nothing answers on the port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return 0, None


def start(services, name: str, argv: list[str], **kw):
    port = free_port()
    proc = services(name, [*argv, "--metrics-port", str(port)], **kw)
    proc.metrics_port = port
    return proc


def test_not_ready_with_a_reason_while_kafka_cannot_be_reached_but_live(tmp_path, services):
    """A router whose region-state view cannot be read (no broker): 503 naming why; its loop turns: live."""
    cfg = tmp_path / "rg.yaml"
    write_config({"kafka": {"bootstrap": f"127.0.0.1:{free_port()}", "startup_timeout_s": 120},
                  "regions": {"eu": {"dsn": "postgresql://postgres@127.0.0.1:5432/nowhere"}},
                  "tables": {"users": {"key": ["id"]}}}, cfg)
    procs = [start(services, s, [s, "--config", str(cfg)]) for s in ("router", "replayer", "health")]
    for proc in procs:
        code, body = wait_until(lambda: (r := probe(proc.metrics_port, "/readyz"))[0] and r, timeout=30,
                                what=f"{proc.name} answering /readyz")
        assert (code, body) == (503, {"status": "not_ready", "reason": "waiting for Kafka"}), (proc.name, body)
        code, body = wait_until(lambda: (r := probe(proc.metrics_port, "/livez"))[0] and r, timeout=10,
                                what=f"{proc.name} answering /livez")
        assert code == 200 and body["status"] == "live", (proc.name, body)
        assert proc.alive  # still waiting for the broker, not gone


def test_router_replayer_and_health_turn_ready_on_kafka_and_postgresql(broker, regions, rg_config, services):
    lr = regions(["eu", "us"])
    # two router lanes on one partition: one lane settles with an empty assignment, which is ready too
    cf = rg_config(lr, partitions=1, overrides={"router": {"lanes": 2}, "metrics": {"loop_stall_s": 5.0},
                                                "health": {"leader_session_timeout_s": 6.0}})
    conf = ["--config", str(cf.path)]
    h1 = start(services, "health-h1", ["health", *conf, "--observer", "h1"])
    router = start(services, "router", ["router", *conf], module=WEDGE)
    replayer = start(services, "replayer", ["replayer", *conf])
    procs = (h1, router, replayer)
    seen: dict[str, list] = {p.name: [] for p in procs}  # each service's distinct answers, in order

    def all_ready() -> bool:
        for proc in procs:
            code, body = probe(proc.metrics_port, "/readyz")
            if code and (not seen[proc.name] or seen[proc.name][-1] != (code, body)):
                seen[proc.name].append((code, body))
        return all(s and s[-1][0] == 200 for s in seen.values())

    wait_until(all_ready, timeout=90, interval=0.05, what="/readyz 200 from health, router and replayer")
    print("readyz answers:", seen)
    for proc in procs:
        assert seen[proc.name][-1] == (200, {"status": "ready"}), seen
        # every answer before was a 503 with a one-line reason
        assert all(c == 503 and b["status"] == "not_ready" and b["reason"] for c, b in seen[proc.name][:-1]), seen
        assert probe(proc.metrics_port, "/livez")[0] == 200
        assert metric_value(proc.metrics_port, "regionguard_background_errors_total") is not None  # /metrics as before
    assert metric_value(h1.metrics_port, "regionguard_health_leader") == 1

    # a second health instance does not lead; it is ready once it knows the leader (fresh heartbeats)
    h2 = start(services, "health-h2", ["health", *conf, "--observer", "h2"])
    wait_until(lambda: probe(h2.metrics_port, "/readyz")[0] == 200, timeout=90, what="h2 /readyz 200")
    assert metric_value(h2.metrics_port, "regionguard_health_leader") == 0

    # the router's event loop wedged (test-kit seam): /livez and /readyz turn 503, /metrics still answers
    os.kill(router.pid, signal.SIGUSR1)
    code, body = wait_until(lambda: (r := probe(router.metrics_port, "/livez"))[0] == 503 and r, timeout=30,
                            what="router /livez 503")
    assert body["status"] == "stalled" and "has not turned for" in body["reason"], body
    code, body = probe(router.metrics_port, "/readyz")
    assert code == 503 and "has not turned for" in body["reason"], body
    assert metric_value(router.metrics_port, "regionguard_background_errors_total") is not None
    router.kill()  # a wedged loop does not serve SIGTERM


def test_feature_manager_and_status_exporter_turn_ready(broker, regions, rg_config, services):
    lr = regions(["eu"], schema=None)
    cf = rg_config(lr, overrides={"features": {"search": {"off_when": ["open"]}}})
    conf = ["--config", str(cf.path)]
    features = start(services, "features", ["features", *conf])
    status = start(services, "status", ["status", *conf, "--interval", "0.5"])
    for proc in (features, status):
        code, body = wait_until(lambda: (r := probe(proc.metrics_port, "/readyz"))[0] == 200 and r, timeout=60,
                                what=f"{proc.name} /readyz 200")
        assert body == {"status": "ready"}
        assert probe(proc.metrics_port, "/livez")[0] == 200
    assert metric_value(status.metrics_port, "regionguard_held_backlog", region="eu") == 0  # /metrics as before
