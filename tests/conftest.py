"""Shared pytest fixtures: a real broker, real PostgreSQL regions, real config files.

Thin wrappers over :mod:`tests.harness` (which has no pytest dependency):
``broker`` is session-wide (Apache Kafka 4 by default; ``$RG_BROKER`` =
``apache`` | ``tansu`` | ``host:port``, or ``$KAFKA_BOOTSTRAP``, picks another); ``regions`` and
``rg_config`` are per-test factories whose databases and topics are unique to
the test, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import glob
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import settings as hypothesis_settings

# CI runs the property tests on a fixed seed sequence, so a landing can't fail on a
# new random example; local runs keep exploring (and CI still runs every example).
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

from tests.harness import (
    DEFAULT_REGIONS,
    DEFAULT_SCHEMA,
    Broker,
    ConfigFile,
    LocalRegions,
    PgCluster,
    ServiceProcess,
    make_config,
    wait_port,
)

PG_HOST, PG_PORT = "127.0.0.1", 5432


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The session's Kafka broker: a local Apache Kafka unless ``$RG_BROKER``/``$KAFKA_BOOTSTRAP`` say otherwise."""
    b = Broker.from_env(default="apache", log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    b.start()
    print(f"\nbroker: {b.kind} {b.bootstrap}")
    yield b
    b.close()


def _pg_answers() -> str | None:
    """None when ``SELECT 1`` works on the local server, else the error."""

    async def probe() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres", timeout=5)
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    try:
        asyncio.run(probe())
        return None
    except Exception as exc:  # noqa: BLE001 - reported below
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="session")
def pg_available() -> str:
    """The local PostgreSQL (127.0.0.1:5432) is up; start it if needed, fail loudly if impossible."""
    err = _pg_answers()
    if err is None:
        return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"
    outputs = []
    for version in sorted(os.path.basename(p) for p in glob.glob("/etc/postgresql/*")):
        proc = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                              capture_output=True, text=True, timeout=60)
        outputs.append(f"pg_ctlcluster {version} main start: rc={proc.returncode} {proc.stdout}{proc.stderr}")
    wait_port(PG_HOST, PG_PORT, timeout=30)
    err = _pg_answers()
    if err is not None:
        pytest.fail(f"PostgreSQL at {PG_HOST}:{PG_PORT} is down and could not be started: {err}\n"
                    + "\n".join(outputs), pytrace=False)
    return f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"


def _prefix(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^a-z0-9]", "", request.node.name.lower())[:16]
    return f"{name}_{uuid.uuid4().hex[:6]}"


@pytest.fixture
def regions(pg_available: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., LocalRegions]]:
    """Factory: ``regions(names=("eu", "us", "ap"), schema=DEFAULT_SCHEMA)`` -> created LocalRegions.

    Every set made is dropped (proxies stopped, databases dropped) after the test.
    """
    made: list[LocalRegions] = []

    def make(names: Iterable[str] = DEFAULT_REGIONS, *, schema: str | None = DEFAULT_SCHEMA) -> LocalRegions:
        lr = LocalRegions(names, prefix=_prefix(request))
        made.append(lr)
        lr.create()
        if schema:
            lr.setup_schema(schema)
        return lr

    yield make
    for lr in reversed(made):
        try:
            lr.drop()
        except Exception as exc:  # noqa: BLE001 - teardown must try every set
            print(f"warning: dropping {lr!r} failed: {exc}")


@pytest.fixture
def rg_config(broker: Broker, regions: Callable[..., LocalRegions],
              tmp_path: Path) -> Callable[..., ConfigFile]:
    """Factory: ``rg_config(local_regions=None, *, partitions=3, overrides=None, ...)`` -> ConfigFile.

    Writes a YAML config to ``tmp_path`` with a unique topic prefix (and group
    ids) pointing at the session broker, and creates all its topics. Without
    ``local_regions`` a default 3-region set is created via ``regions``.
    Other keyword arguments go to :func:`tests.harness.config.regions_config`.
    """
    count = 0

    def make(local_regions: Any = None, *, partitions: int = 3, create_topics: bool = True,
             **kwargs: Any) -> ConfigFile:
        nonlocal count
        count += 1
        lr = local_regions if local_regions is not None else regions()
        path = tmp_path / f"regionguard-{count}.yaml"
        return make_config(lr, broker.bootstrap, path, partitions=partitions, create_topics=create_topics, **kwargs)

    return make


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Factory: ``services(name, argv, env=None, **kw)`` -> started ServiceProcess (logs in tmp_path/logs).

    Every process still alive is terminated (SIGTERM, then SIGKILL) after the test.
    """
    started: list[ServiceProcess] = []

    def start(name: str, argv: list[str], env: dict[str, str] | None = None, **kwargs: Any) -> ServiceProcess:
        kwargs.setdefault("log_dir", tmp_path / "logs")
        proc = ServiceProcess(name, argv, env, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.terminate(timeout=10)


@pytest.fixture
def pg_cluster() -> Iterator[Callable[..., PgCluster]]:
    """Factory: ``pg_cluster(name="pg")`` -> a started private PostgreSQL cluster, destroyed after the test."""
    made: list[PgCluster] = []

    def make(name: str = "pg", **kwargs: Any) -> PgCluster:
        cluster = PgCluster(name, **kwargs)
        made.append(cluster)
        return cluster.start()

    yield make
    for cluster in made:
        cluster.destroy()


@pytest.fixture
def pgbouncer(pg_available: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory: ``pgbouncer(**kw)`` -> a started PgBouncer (transaction pooling) before the test
    PostgreSQL (tests/integration/pgbouncer.py); stopped after the test, whatever its outcome."""
    from tests.integration.pgbouncer import PgBouncer, binary

    if binary() is None:
        if os.environ.get("CI"):
            pytest.fail("pgbouncer is not installed: scripts/setup.sh --test-tools installs it")
        pytest.skip("pgbouncer is not installed (scripts/setup.sh --test-tools installs it)")
    started: list[PgBouncer] = []

    def start(**kwargs: Any) -> PgBouncer:
        bouncer = PgBouncer(tmp_path / f"pgbouncer-{len(started)}", **kwargs)
        started.append(bouncer)
        return bouncer.start()

    yield start
    for bouncer in started:
        bouncer.stop()
