"""The monitoring assets name only metrics the services really export.

Every ``regionguard_*`` name in the Grafana dashboard and the Prometheus alert
rules must appear, with samples, in a live ``/metrics`` scrape of the real
services (health, router, replayer, features and the status exporter, run as
processes against a real broker and real PostgreSQL). The scenario makes every
metric move: direct writes, a dead letter, a refused region (probe failures,
breaker transitions, apply errors, held and failover writes, disabled
features), the recovery and the replay.

The rule files are also checked with ``promtool`` (``check config``,
``check rules`` and the rule unit tests in ``alerts_test.yml``) when it is
installed (Debian package ``prometheus``); without it, their structure is
checked with PyYAML.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import free_port
from tests.integration.helpers import ev_bytes, produce_raw, wait_assigned, wait_metric, wait_until, write_event

pytestmark = pytest.mark.timeout(180)
REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "regionguard-dashboard.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts_test.yml"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
METRIC = re.compile(r"\bregionguard_[a-z0-9_]+\b")


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    out.append(v)
                elif k == "query" and isinstance(v, dict) and isinstance(v.get("query"), str):
                    out.append(v["query"])
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dash)
    return out


def _alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def referenced_metrics() -> dict[str, set[str]]:
    """metric name -> the files that use it."""
    refs: dict[str, set[str]] = {}
    for expr in _dashboard_exprs():
        for name in METRIC.findall(expr):
            refs.setdefault(name, set()).add(DASHBOARD.name)
    for rule in _alert_rules():
        for name in METRIC.findall(rule["expr"]):
            refs.setdefault(name, set()).add(ALERTS.name)
    return refs


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = s.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}"
                            if s.labels else "")
            out[key] = s.value
    return out


def names(samples: dict[str, float]) -> set[str]:
    return {k.split("{", 1)[0] for k in samples}


def value(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, v in samples.items():
        n, _, rest = key.partition("{")
        if n != name:
            continue
        if all(f'{k}="{val}"' in rest for k, val in labels.items()):
            total += v
    return total


# --------------------------------------------------------------------------------------------
def test_assets_are_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "regionguard" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        if p["type"] == "row":
            continue
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for needed in ("region state", "transitions", "probe latency", "probe failures", "applied", "held writes",
                   "dead letters", "held backlog", "replay progress", "consumer lag", "disabled features"):
        assert needed in titles, needed

    rules = _alert_rules()
    alerts = {r["alert"]: r for r in rules}
    for needed in ("RegionGuardRegionOpen", "RegionGuardHeldBacklogGrowing", "RegionGuardReplayStalled",
                   "RegionGuardDeadLetters", "RegionGuardHealthHeartbeatMissing"):
        assert needed in alerts, needed
    for r in rules:
        assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, r["alert"]
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]

    prom = yaml.safe_load(PROMETHEUS.read_text())
    assert prom["rule_files"] == ["alerts.yml"]
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in prom["scrape_configs"]}
    assert set(jobs) == {"regionguard-health", "regionguard-router", "regionguard-replayer",
                         "regionguard-features", "regionguard-status"}


def test_promtool_validates_rules_and_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package 'prometheus'); structure checked by test_assets_are_well_formed")
    for argv in (["check", "config", str(PROMETHEUS)], ["check", "rules", str(ALERTS)],
                 ["test", "rules", str(ALERT_TESTS)]):
        r = subprocess.run([promtool, *argv], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"promtool {' '.join(argv)}:\n{r.stdout}\n{r.stderr}"


def test_every_referenced_metric_is_in_a_live_scrape(broker, regions, rg_config, services):
    refs = referenced_metrics()
    assert len(refs) >= 20, sorted(refs)  # the parser found the dashboard's and the rules' metrics

    lr = regions(["eu", "us"])
    session = 6.0  # the config floor
    cf = rg_config(lr, partitions=2, overrides={
        "health": {"leader_session_timeout_s": session},
        "features": {"recommendations": {"off_when": ["open", "half_open"]}, "checkout": {"critical": True}},
    })
    port = {s: free_port() for s in ("health", "router", "replayer", "features", "status")}
    services("health", cf.cli_args("health", "--metrics-port", str(port["health"])))
    # routers and replayers judge the region by their own connection failures here, so the
    # apply-error and readiness paths run for sure (the health service still decides the breaker)
    services("router", cf.cli_args("router", "--no-health", "--metrics-port", str(port["router"])))
    services("replayer", cf.cli_args("replayer", "--no-health", "--metrics-port", str(port["replayer"])))
    services("features", cf.cli_args("features", "--metrics-port", str(port["features"])))
    services("status", cf.cli_args("status", "--metrics-port", str(port["status"]), "--interval", "0.5"))
    wait_metric(port["health"], "regionguard_health_leader", lambda v: v == 1, timeout=45, what="health the leader")
    wait_assigned(cf, "router", "eu", timeout=45)

    writes = cf.topic("writes", "eu")
    ok = [write_event("eu", "users", "upsert", {"id": i}, {"name": "a", "version": 1}) for i in range(5)]
    produce_raw(cf.bootstrap, writes, [ev_bytes(e) for e in ok] + [(b"users/bad", b"{not json")])
    wait_until(lambda: lr.count("eu", "users") == 5, timeout=30, what="direct applies")

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    held = [write_event("eu", "users", "upsert", {"id": i}, {"name": "b", "version": 2}) for i in range(10)]
    fo = write_event("eu", "orders", "insert", {"id": 1}, {"amount": 5, "status": "new"},
                     policy="failover", fallback_regions=["us"])
    produce_raw(cf.bootstrap, writes, [ev_bytes(e) for e in held + [fo]])
    wait_until(lambda: value(scrape(port["router"]), "regionguard_writes_held_total", region="eu") >= 11,
               timeout=30, what="writes held by the router")
    wait_until(lambda: value(scrape(port["health"]), "regionguard_breaker_transitions_total",
                             region="eu", to_state="open") >= 1, timeout=30, what="eu opened")
    wait_until(lambda: value(scrape(port["features"]), "regionguard_feature_disabled",
                             region="eu", feature="recommendations") == 1, timeout=30, what="feature turned off")
    wait_until(lambda: value(scrape(port["status"]), "regionguard_held_backlog", region="eu") >= 11,
               timeout=30, what="the exporter's held backlog")

    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: value(scrape(port["replayer"]), "regionguard_writes_replayed_total", region="eu") >= 11,
               timeout=60, what="held writes replayed")
    wait_until(lambda: value(scrape(port["status"]), "regionguard_held_backlog", region="eu") == 0,
               timeout=30, what="the exporter's held backlog back to 0")
    assert lr.fetch("eu", "SELECT count(*) AS n FROM users WHERE version = 2") == [{"n": 10}]

    scraped: dict[str, set[str]] = {svc: names(scrape(p)) for svc, p in port.items()}
    everywhere = set().union(*scraped.values())
    missing = {name: sorted(files) for name, files in refs.items() if name not in everywhere}
    assert not missing, f"referenced but not in any live scrape: {missing}"
    status = scrape(port["status"])
    assert value(status, "regionguard_consumer_lag", region="eu", service="router") == 0
    assert 0 <= value(status, "regionguard_health_heartbeat_age_seconds") < 5
    assert value(scrape(port["router"]), "regionguard_dead_letters_total", region="eu", reason="invalid_json") == 1
