"""docker-compose.yml is valid and consistent with the files and ports it names.

``docker compose config -q`` (or the standalone ``docker-compose``) validates
the file when a binary is installed; no container is started. The rest is
checked with PyYAML either way: every service, volume, bind-mounted file and
build context it references exists; the mounted regionguard config is valid
and points at the compose hosts; Prometheus scrapes the ports the services
really listen on; Grafana loads the dashboard from where it is mounted; and
the init SQL creates every allow-listed table.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from regionguard.core.config import parse_config
from regionguard.core.metrics import SERVICE_PORT_OFFSET

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
CONFIG_TARGET = "/etc/regionguard/config.yaml"
SERVICES = ("health", "router", "replayer", "features")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _compose_cmd() -> list[str] | None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_validates():
    cmd = _compose_cmd()
    if cmd is None:
        pytest.skip("neither 'docker compose' nor 'docker-compose' is installed "
                    "(apt-get install docker-compose); the file is still checked with PyYAML below")
    r = subprocess.run([*cmd, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, timeout=60,
                       cwd=REPO)
    assert r.returncode == 0, f"{' '.join(cmd)} config -q failed:\n{r.stdout}\n{r.stderr}"


def _bind_mounts(svc: dict) -> list[tuple[str, str]]:
    out = []
    for v in svc.get("volumes", []):
        src, _, rest = v.partition(":")
        target = rest.split(":")[0]
        out.append((src, target))
    return out


def test_references_exist(compose):
    services = compose["services"]
    declared_volumes = set(compose.get("volumes") or {})
    for required in ("kafka", "pg-eu", "pg-us", "pg-ap", *SERVICES, "prometheus", "grafana"):
        assert required in services, required
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        if "build" in svc:
            ctx = svc["build"] if isinstance(svc["build"], str) else svc["build"]["context"]
            assert (REPO / ctx / "Dockerfile").is_file(), name
        deps = svc.get("depends_on") or []
        for dep in (deps if isinstance(deps, list) else deps.keys()):
            assert dep in services, f"{name} depends on unknown service {dep}"
        for src, _target in _bind_mounts(svc):
            if src.startswith(("./", "/")):
                assert (REPO / src).exists(), f"{name} mounts missing {src}"
            else:
                assert src in declared_volumes, f"{name} uses undeclared volume {src}"
    used = {src for svc in services.values() for src, _ in _bind_mounts(svc) if not src.startswith(("./", "/"))}
    assert used == declared_volumes, declared_volumes ^ used
    for svc in SERVICES:
        s = services[svc]
        assert s["command"][:3] == [svc, "--config", CONFIG_TARGET], s["command"]
        assert ("./deploy/config/compose.yaml", CONFIG_TARGET) in _bind_mounts(s)


def test_dockerfile_copies_existing_sources():
    text = (REPO / "Dockerfile").read_text()
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:  # --from copies from a build stage
            for src in line.split()[1:-1]:
                if src.endswith("*"):
                    continue  # optional (README.md*)
                assert (REPO / src).exists(), src
    assert 'ENTRYPOINT ["regionguard"]' in text
    assert "COPY requirements.lock" in text


def test_mounted_config_matches_the_compose_hosts(compose):
    services = compose["services"]
    data = yaml.safe_load((REPO / "deploy" / "config" / "compose.yaml").read_text())
    cfg = parse_config(data, source="deploy/config/compose.yaml")
    host, _, port = cfg.kafka.bootstrap.partition(":")
    assert host in services and f"PLAINTEXT://{host}:{port}" in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for region, rc in cfg.regions.items():
        m = re.match(r"postgresql://(\w+):(\w+)@([\w-]+):5432/(\w+)", rc.dsn)
        assert m, rc.dsn
        user, password, pg_host, db = m.groups()
        env = services[pg_host]["environment"]
        assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == (user, password, db), region
        assert ("./deploy/sql", "/docker-entrypoint-initdb.d") in _bind_mounts(services[pg_host])
    assert cfg.metrics.host == "0.0.0.0"

    # Prometheus scrapes each service on metrics.port + its offset; the status exporter on its --metrics-port
    prom = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0] for j in prom["scrape_configs"]}
    for svc in SERVICES:
        assert targets[f"regionguard-{svc}"] == f"{svc}:{cfg.metrics.port + SERVICE_PORT_OFFSET[svc]}", svc
    exporter = services["status-exporter"]["command"]
    host, _, port = targets["regionguard-status"].partition(":")
    assert host == "status-exporter" and exporter[exporter.index("--metrics-port") + 1] == port
    assert ("./deploy/prometheus", "/etc/prometheus") in _bind_mounts(services["prometheus"])


def test_grafana_provisioning_points_at_the_mounted_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounts = dict(_bind_mounts(grafana))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    dash_target = mounts["./deploy/grafana/regionguard-dashboard.json"]
    prov = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/regionguard.yml").read_text())
    assert str(Path(dash_target).parent) == prov["providers"][0]["options"]["path"]
    ds = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["uid"] == "prometheus" and "prometheus:9090" in ds["datasources"][0]["url"]


def test_init_sql_creates_every_allow_listed_table():
    from regionguard_testkit.embedded.regions import DEFAULT_SCHEMA

    data = yaml.safe_load((REPO / "deploy" / "config" / "compose.yaml").read_text())
    sql = "\n".join(p.read_text() for p in sorted((REPO / "deploy" / "sql").glob("*.sql")))
    created = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", sql))
    assert set(data["tables"]) <= created
    assert set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", DEFAULT_SCHEMA)) == created  # same as the demo


def test_init_sql_runs_on_postgresql(pg_available):
    """The init SQL is valid PostgreSQL and gives the config's key and version columns."""
    import asyncio
    import uuid

    import asyncpg

    sql = "\n".join(p.read_text() for p in sorted((REPO / "deploy" / "sql").glob("*.sql")))
    data = yaml.safe_load((REPO / "deploy" / "config" / "compose.yaml").read_text())
    db = f"rg_compose_{uuid.uuid4().hex[:8]}"

    async def run():
        admin = await asyncpg.connect(pg_available, timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{db}"')
            conn = await asyncpg.connect(pg_available.rsplit("/", 1)[0] + f"/{db}", timeout=10)
            try:
                await conn.execute(sql)
                rows = await conn.fetch("SELECT table_name, column_name FROM information_schema.columns "
                                        "WHERE table_schema = 'public'")
            finally:
                await conn.close()
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await admin.close()
        return {(r["table_name"], r["column_name"]) for r in rows}

    cols = asyncio.run(run())
    for table, spec in data["tables"].items():
        for col in [*spec["key"], *([spec["version"]] if spec.get("version") else [])]:
            assert (table, col) in cols, (table, col)
