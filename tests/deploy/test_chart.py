"""The Helm chart renders, and what it renders is a deployment regionguard can run.

`helm template` with the default values and with the MSK + Aurora example; every
built-in object validated against the Kubernetes schema (kubernetes-validate,
strict: an unknown field is an error); the Prometheus Operator objects checked
against their source (alerts.yml) and the Services they select; the config
parsed by regionguard's own config model; the plain manifests in deploy/k8s
equal to a fresh rendering. No cluster, no Kafka: helm and Python only.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from regionguard.core.config import Config, parse_config
from regionguard.core.metrics import SERVICE_PORT_OFFSET

from .render import CHART, MSK_VALUES, PLAIN, ROOT, HelmMissing, objects, plain_manifests, template

# the oldest Kubernetes the chart declares (Chart.yaml kubeVersion is >=1.25) and the newest the validator knows
K8S_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
VALUES = {"default": (), "msk-aurora": (MSK_VALUES,)}
STATUS_PORT_OFFSET = 5  # the status exporter takes --metrics-port; the chart gives it metricsPort + 5


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request) -> tuple[str, dict, list[dict]]:
    try:
        objs = objects(template(*VALUES[request.param]))
    except HelmMissing as exc:
        pytest.fail(str(exc))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for extra in VALUES[request.param]:
        values = _merge(values, yaml.safe_load(extra.read_text()))
    return request.param, values, objs


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _of(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def _enabled(values: dict) -> list[str]:
    return sorted(name for name, svc in values["services"].items() if svc["enabled"])


def test_every_object_validates_against_the_kubernetes_schema(rendered):
    _, _, objs = rendered
    checked = 0
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue  # not in the Kubernetes schema: checked below against their sources
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)  # raises ValidationError naming the field
        checked += 1
    assert checked >= 10


def test_one_deployment_service_and_budget_per_enabled_service(rendered):
    _, values, objs = rendered
    expected = {f"regionguard-{s}" for s in _enabled(values)}
    assert {"regionguard-health", "regionguard-router", "regionguard-replayer", "regionguard-status"} <= expected
    assert set(_of(objs, "Deployment")) == expected
    assert set(_of(objs, "Service")) == expected
    assert set(_of(objs, "PodDisruptionBudget")) == expected
    assert set(_of(objs, "ConfigMap")) == {"regionguard-config"}


def test_probes_hit_livez_and_readyz_on_the_services_metrics_port(rendered):
    _, values, objs = rendered
    base = values["metricsPort"]
    for name, dep in _of(objs, "Deployment").items():
        service = name.removeprefix("regionguard-")
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        port = base + SERVICE_PORT_OFFSET.get(service, STATUS_PORT_OFFSET)
        assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}], name
        assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}, name
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}, name
        assert c["startupProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}, name
        assert c["args"][:3] == [service, "--config", "/etc/regionguard/config.yaml"], name
        if service == "status":
            assert c["args"][3:5] == ["--metrics-port", str(port)]
        svc = _of(objs, "Service")[name]
        assert svc["spec"]["ports"][0]["port"] == port and svc["spec"]["selector"] == \
            dep["spec"]["selector"]["matchLabels"], name
        pdb = _of(objs, "PodDisruptionBudget")[name]
        assert pdb["spec"]["selector"] == dep["spec"]["selector"], name


def _parsed(objs: list[dict], monkeypatch) -> Config:
    """The ConfigMap's config through regionguard's config model, its ${env:NAME} references set
    as the pods' Secrets would (should the loader resolve them)."""
    text = _of(objs, "ConfigMap")["regionguard-config"]["data"]["config.yaml"]
    for ref in _refs(text):
        if ref.startswith("env:"):
            monkeypatch.setenv(ref.removeprefix("env:"), "from-a-secret")
    return parse_config(yaml.safe_load(text), source="ConfigMap regionguard-config")


def test_config_is_a_regionguard_config_reachable_by_the_probes(rendered, monkeypatch):
    _, values, objs = rendered
    cfg = _parsed(objs, monkeypatch)
    # the kubelet probes the pod IP, so the chart binds metrics to every interface of the pod
    assert cfg.metrics.host == "0.0.0.0" and cfg.metrics.port == values["metricsPort"]
    # exactly the regions of the values file that set config (Helm merges maps; the chart takes a string)
    assert set(cfg.regions) == set(yaml.safe_load(values["config"])["regions"])


def test_no_secret_in_the_config_only_references(rendered):
    _, values, objs = rendered
    cfg = yaml.safe_load(_of(objs, "ConfigMap")["regionguard-config"]["data"]["config.yaml"])
    for region, r in cfg["regions"].items():
        password = urlsplit(r["dsn"]).password
        assert password is None or password.startswith(("${env:", "${file:")), region
    for key, value in cfg["kafka"].get("client", {}).items():
        if "password" in key or "secret" in key:
            assert str(value).startswith(("${env:", "${file:")), key
    assert not _of(objs, "Secret")  # the chart creates none: Secrets are the operator's
    referenced = {ref for r in cfg["regions"].values() for ref in _refs(r["dsn"])} | \
                 {ref for v in cfg["kafka"].get("client", {}).values() for ref in _refs(str(v))}
    for dep in _of(objs, "Deployment").values():
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        from_secrets = {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert {r.removeprefix("env:") for r in referenced if r.startswith("env:")} <= from_secrets
        mounts = [m["mountPath"] for m in c["volumeMounts"]]
        for ref in referenced:
            if ref.startswith("file:"):
                assert any(ref.removeprefix("file:").startswith(m + "/") for m in mounts), ref


def _refs(text: str) -> list[str]:
    out, rest = [], text
    while "${" in rest:
        rest = rest.split("${", 1)[1]
        out.append(rest.split("}", 1)[0])
    return out


def test_pods_run_as_non_root_on_a_read_only_root(rendered):
    _, _, objs = rendered
    for name, dep in _of(objs, "Deployment").items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, name
        (c,) = pod["containers"]
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False, name
        assert sc["capabilities"]["drop"] == ["ALL"], name
        assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"], name


def test_grace_period_outlasts_the_drain(rendered, monkeypatch):
    """SIGTERM -> stopped (services/router/service.py, replayer/service.py): the batch in hand finishes
    (its statements bounded by router.statement_timeout_s), every lane leaves its group (on tansu in turn,
    up to 10 s each; elsewhere together), then each router lane's producer flushes for up to 5 s, one
    after the other (the replayer has one producer). The kubelet must not SIGKILL before that."""
    _, values, objs = rendered
    cfg = _parsed(objs, monkeypatch)
    regions = len(cfg.regions)
    drain = {
        "router": cfg.router.statement_timeout_s + 5 * regions * cfg.router.lanes,
        "replayer": cfg.router.statement_timeout_s + 5,
    }
    for service, need in drain.items():
        dep = _of(objs, "Deployment")[f"regionguard-{service}"]
        grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > need, (service, grace, need)


def test_prometheus_rule_is_deploy_prometheus_alerts_yml(rendered):
    _, _, objs = rendered
    (rule,) = _of(objs, "PrometheusRule").values()
    assert rule["spec"] == yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())


def test_service_monitor_scrapes_every_service(rendered):
    _, _, objs = rendered
    (mon,) = _of(objs, "ServiceMonitor").values()
    wanted = mon["spec"]["selector"]["matchLabels"]
    selected = {n for n, s in _of(objs, "Service").items() if wanted.items() <= s["metadata"]["labels"].items()}
    assert selected == set(_of(objs, "Service"))
    assert mon["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    for svc in _of(objs, "Service").values():
        assert [p["name"] for p in svc["spec"]["ports"]] == ["metrics"]


def test_plain_manifests_are_the_chart_rendered():
    try:
        fresh = plain_manifests()
    except HelmMissing as exc:
        pytest.fail(str(exc))
    assert PLAIN.read_text() == fresh, f"{PLAIN.relative_to(ROOT)} is stale: run `make k8s`"
