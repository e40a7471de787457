"""The harness itself, against real PostgreSQL and a real broker (no mocks).

If these fail, every integration/chaos result built on the harness is suspect:
a proxy mode that silently passes traffic would make a failover test prove nothing.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid

import asyncpg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from regionguard.core.kafka import producer_conf
from tests.harness import (
    GROUP_TUNING,
    Broker,
    FaultProxy,
    PgCluster,
    ServiceError,
    ServiceProcess,
    create_topics,
    free_port,
    topic_plan,
    wait_port,
)

pytestmark = pytest.mark.timeout(60)
PG = ("127.0.0.1", 5432)


def _dsn(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


@pytest.fixture
def proxy(pg_available: str):
    with FaultProxy(*PG, name="test") as p:
        yield p


async def test_proxy_passes_traffic(proxy: FaultProxy) -> None:
    conn = await asyncpg.connect(_dsn(proxy.port), timeout=5)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT repeat('x', 200000)") == "x" * 200000
    finally:
        await conn.close()
    s = proxy.stats
    assert s.accepted == 1 and s.bytes_down > 200000 and s.bytes_up > 0


async def test_refuse_fails_fast_and_keeps_live_connections(proxy: FaultProxy) -> None:
    live = await asyncpg.connect(_dsn(proxy.port), timeout=5)
    try:
        proxy.set_mode("refuse")
        t0 = time.monotonic()
        with pytest.raises(OSError):
            await asyncpg.connect(_dsn(proxy.port), timeout=5)
        assert time.monotonic() - t0 < 1.0
        assert await live.fetchval("SELECT 2", timeout=2) == 2  # documented: live ones untouched
        proxy.set_mode("pass")
        again = await asyncpg.connect(_dsn(proxy.port), timeout=5)  # same port listens again
        await again.close()
    finally:
        await live.close(timeout=2)


async def test_blackhole_stalls_live_and_new_connections(proxy: FaultProxy) -> None:
    live = await asyncpg.connect(_dsn(proxy.port), timeout=5)
    try:
        proxy.set_mode("blackhole")
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await live.fetchval("SELECT 3", timeout=0.5)
        with pytest.raises(asyncio.TimeoutError):
            await asyncpg.connect(_dsn(proxy.port), timeout=0.5)
        assert time.monotonic() - t0 < 3.0
        proxy.set_mode("pass")  # documented: stalled traffic resumes
        assert await live.fetchval("SELECT 4", timeout=5) == 4
    finally:
        live.terminate()


async def test_blackhole_drops_connects_abandoned_while_held(proxy: FaultProxy) -> None:
    """A connect given up during a blackhole never reaches the server at the heal (as with packets really
    dropped); one still waiting goes through."""
    async def backends() -> int:
        direct = await asyncpg.connect(_dsn(5432), timeout=5)
        try:
            return await direct.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                                         "rg-abandoned")
        finally:
            await direct.close()

    proxy.set_mode("blackhole")
    for _ in range(5):
        with pytest.raises(asyncio.TimeoutError):
            await asyncpg.connect(_dsn(proxy.port), timeout=0.2, server_settings={"application_name": "rg-abandoned"})
    waiting = asyncio.ensure_future(asyncpg.connect(_dsn(proxy.port), timeout=10))
    await asyncio.sleep(0.2)
    proxy.set_mode("pass")
    conn = await waiting  # held, not abandoned: its startup packet is forwarded at the heal
    try:
        assert await conn.fetchval("SELECT 6") == 6
        assert await backends() == 0
        assert proxy.stats.abandoned == 5
    finally:
        await conn.close()


async def test_reset_breaks_live_connections(proxy: FaultProxy) -> None:
    live = await asyncpg.connect(_dsn(proxy.port), timeout=5)
    proxy.set_mode("reset")
    assert proxy.mode == "pass" and proxy.stats.resets == 1
    with pytest.raises((asyncpg.exceptions.ConnectionDoesNotExistError, ConnectionError, OSError)):
        await live.fetchval("SELECT 1", timeout=2)
    fresh = await asyncpg.connect(_dsn(proxy.port), timeout=5)
    assert await fresh.fetchval("SELECT 5") == 5
    await fresh.close()


async def _timed_select(conn: asyncpg.Connection, n: int = 3) -> float:
    t0 = time.monotonic()
    for _ in range(n):
        await conn.execute("SELECT 1")  # simple protocol: one round trip each
    return (time.monotonic() - t0) / n


async def test_latency_and_flaky_add_delay(proxy: FaultProxy) -> None:
    conn = await asyncpg.connect(_dsn(proxy.port), timeout=5)
    try:
        base = await _timed_select(conn)
        proxy.set_mode("latency", delay_s=0.15)
        slow = await _timed_select(conn)
        assert slow >= 0.14 and slow - base >= 0.12, (base, slow)
        proxy.set_mode("flaky", p=1.0, delay_s=0.1)  # every reply chunk "lost" once
        assert await _timed_select(conn, 2) >= 0.09
        proxy.set_mode("flaky", p=0.0, delay_s=5.0)
        assert await _timed_select(conn, 2) < 1.0
    finally:
        await conn.close()


def test_proxy_rejects_bad_mode_and_stops_twice(pg_available: str) -> None:
    p = FaultProxy(*PG)
    with pytest.raises(ValueError):
        p.set_mode("nope")
    p.set_mode("blackhole")
    t0 = time.monotonic()
    p.stop()
    p.stop()
    assert time.monotonic() - t0 < 2.0


@pytest.mark.smoke
def test_broker_round_trip(broker: Broker) -> None:
    topic = f"harness-{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, {topic: 3})
    create_topics(broker.bootstrap, {topic: 3})  # already exists: fine
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic, timeout=10)
    assert len(md.topics[topic].partitions) == 3
    prod = Producer(producer_conf(broker.bootstrap))
    for i in range(20):
        prod.produce(topic, key=f"k{i % 4}".encode(), value=f"v{i}".encode())
    assert prod.flush(15) == 0
    cons = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{topic}",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False, **GROUP_TUNING})
    try:
        cons.assign([TopicPartition(topic, p, 0) for p in range(3)])
        got: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(got) < 20 and time.monotonic() < deadline:
            msg = cons.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        cons.close()
    assert sorted(got) == sorted(f"v{i}".encode() for i in range(20))


@pytest.mark.smoke
def test_rg_config_writes_yaml_and_creates_topics(rg_config, broker: Broker) -> None:
    from regionguard.core.config import load_config

    cf = rg_config(partitions=2)
    cfg = load_config(cf.path)
    assert list(cfg.regions) == ["eu", "us", "ap"]
    assert cfg.regions["eu"].fallbacks == ("us", "ap")
    assert cfg.kafka.topic_prefix == cf.prefix and cfg.router.group_id.startswith(cf.prefix)
    plan = topic_plan(cf.data)
    assert plan[cf.topic("writes", "eu")] == (2, False) and plan[cf.topic("region-state")] == (1, True)
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    for name, (parts, _) in plan.items():
        assert len(md.topics[name].partitions) == parts, name
    lr = cf.regions
    lr.execute("eu", "INSERT INTO users VALUES (1, 'a', 'a@x', 1)")
    with pytest.raises(asyncpg.CheckViolationError):
        lr.execute("us", "INSERT INTO orders VALUES (1, 1, -5, 'new')")
    assert lr.count("eu", "users") == 1 and lr.count("us", "users") == 0

    async def via_proxy() -> int:
        conn = await asyncpg.connect(lr.dsn("eu"), timeout=5)
        try:
            return await conn.fetchval("SELECT count(*) FROM users")
        finally:
            await conn.close()

    assert asyncio.run(via_proxy()) == 1
    lr.proxy("eu").set_mode("refuse")
    with pytest.raises(OSError):
        asyncio.run(via_proxy())
    assert lr.count("eu", "users") == 1  # direct_dsn bypasses the proxy


def test_pgcluster_crash_and_restart(tmp_path) -> None:
    async def select(dsn: str) -> int:
        conn = await asyncpg.connect(dsn, timeout=5)
        try:
            return await conn.fetchval("SELECT 42")
        finally:
            await conn.close()

    with PgCluster("harness") as pg:
        assert pg.is_running() and asyncio.run(select(pg.dsn)) == 42
        pg.crash()
        assert not pg.is_running()
        with pytest.raises(OSError):
            asyncio.run(select(pg.dsn))
        pg.start()
        assert asyncio.run(select(pg.dsn)) == 42
    assert not pg.base.exists()


def test_service_process_logs_signals_and_exit(tmp_path, services) -> None:
    # the printed usage is the output under test here (and wait_for_log is part of the harness under test)
    help_ = ServiceProcess("cli-help", ["--help"], log_dir=tmp_path)
    help_.wait_for_log(r"usage: regionguard", timeout=30)
    assert help_.wait(30) == 0
    port = free_port()
    srv = services("http", ["--bind", "127.0.0.1", str(port)], module="http.server")

    def serving() -> None:
        # up means answering on its port; http.server prints its banner before it serves and logs
        # the request before it answers, so both are in the log once the answer is here
        assert wait_port("127.0.0.1", port, timeout=20), srv.log_tail()
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).status == 200
        current = srv.log_text(current=True)
        assert "Serving HTTP" in current and '"GET / HTTP/1.1" 200' in current, current

    serving()
    assert srv.alive
    assert srv.terminate(5) is not None and not srv.alive
    srv.start()
    serving()
    assert srv.kill() == -9 and srv.returncode == -9
    with pytest.raises(ServiceError):
        srv.wait_for_log(r"never printed", timeout=0.5)
    assert srv.log_text().count("Serving HTTP") == 2
