"""RegionalReader on real PostgreSQL (behind the harness FaultProxy), a real broker and real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as aioredis

from regionguard.client import BadRead, ReadUnavailable, RegionalReader, RegionStates
from regionguard.client.cache import cache_key, row_to_cache
from regionguard_testkit.testing import StatePublisher

pytestmark = pytest.mark.timeout(60)

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def setup(regions, rg_config):
    """Three regions; user 1 exists in each with a name saying where it lives."""
    names = tuple(f"{r}{uuid.uuid4().hex[:4]}" for r in ("eu", "us", "ap"))  # unique Redis keys too
    lr = regions(names)
    for r in names:
        lr.execute(r, "INSERT INTO users (id, name, email, version) VALUES (1, $1, $2, 1), (2, 'two', NULL, 1)",
                   f"ada@{r}", f"ada@{r}.example")
    eu, us, ap = names
    cf = rg_config(lr, overrides={
        "regions": {eu: {"read_replicas": [lr.direct_dsn(eu)]}},  # a second path to eu's data
        "redis": {"url": REDIS_URL, "ttl_s": 60},
        "health": {"heartbeat_s": 0.2},
    })
    return lr, cf.load(), names


async def test_home_then_replica_then_fallback(setup):
    lr, cfg, (eu, us, ap) = setup
    async with RegionalReader(cfg, tier_timeout_s=0.3) as reader:
        res = await reader.get("users", {"id": 1}, region=eu)
        assert (res.tier, res.source, res.stale_by_s, res.degraded) == ("home", eu, 0.0, False)
        assert res.row["name"] == f"ada@{eu}" and res.served_region == eu

        # eu's primary path blackholed: the home tier times out, the replica answers
        lr.proxy(eu).set_mode("blackhole")
        t0 = time.monotonic()
        res = await reader.get("users", {"id": 1}, region=eu)
        took = time.monotonic() - t0
        assert res.tier == "replica" and res.source == f"{eu}/replica0" and res.degraded
        assert res.stale_by_s is None  # not a streaming standby: lag unknown
        assert [(a.tier, a.outcome) for a in res.attempts] == [("home", "timeout"), ("replica", "ok")]
        assert 0.25 < took < 1.5, took
        # within the cooldown the dead tier is skipped without waiting
        t0 = time.monotonic()
        res = await reader.get("users", {"id": 1}, region=eu)
        assert res.attempts[0].outcome == "cooldown" and time.monotonic() - t0 < 0.2

    # without the replica tier: the first fallback region answers with its own copy
    async with RegionalReader(cfg, tier_timeout_s=0.3, order=("home", "fallbacks")) as reader:
        res = await reader.get("users", {"id": 1}, region=eu)
        assert (res.tier, res.source, res.served_region) == ("fallback", us, us)
        assert res.row["name"] == f"ada@{us}" and res.degraded and res.stale_by_s is None
        # select() follows the same tiers
        res = await reader.select("users", region=eu, columns=["id", "name"], limit=10)
        assert res.tier == "fallback" and [r["id"] for r in res.rows] == [1, 2]
        lr.proxy(eu).set_mode("pass")
        await asyncio.sleep(1.1)  # cooldown over
        res = await reader.get("users", {"id": 2}, region=eu)
        assert res.tier == "home"


async def test_open_breaker_skips_tier_without_io(setup):
    lr, cfg, (eu, us, ap) = setup
    with StatePublisher(cfg, heartbeat_s=0.2) as pub:
        states = RegionStates(cfg).start()
        try:
            assert states.wait_ready(10)
            pub.set(eu, "open", reason="drill")
            pub.set(us, "open", reason="drill")
            deadline = time.monotonic() + 5
            while not (states.is_open(eu) and states.is_open(us)) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            accepted = lr.proxy(eu).stats.accepted
            async with RegionalReader(cfg, states=states, order=("home", "fallbacks")) as reader:
                t0 = time.monotonic()
                res = await reader.get("users", {"id": 1}, region=eu)
                took = time.monotonic() - t0
                assert [(a.tier, a.source, a.outcome) for a in res.attempts] == [
                    ("home", eu, "breaker_open"), ("fallback", us, "breaker_open"), ("fallback", ap, "ok")]
                assert res.source == ap and res.row["name"] == f"ada@{ap}"
                assert lr.proxy(eu).stats.accepted == accepted  # eu was never contacted
                assert took < 0.5, took
                # half_open lets reads try the region again
                pub.set(eu, "half_open")
                while states.state_name(eu) != "half_open":
                    await asyncio.sleep(0.02)
                res = await reader.get("users", {"id": 1}, region=eu)
                assert res.tier == "home"
        finally:
            states.stop()


async def test_bulkhead_rejects_fast_when_a_region_is_slow(setup):
    lr, cfg, (eu, us, ap) = setup
    async with RegionalReader(cfg, order=("home", "fallbacks"), max_concurrency=4, pool_size=4,
                              tier_timeout_s=3.0) as reader:
        # warm eu's pool: 4 connections with the statement prepared, so a slow read is one round trip
        await asyncio.gather(*(reader.get("users", {"id": 1}, region=eu) for _ in range(4)))
        lr.proxy(eu).set_mode("latency", delay_s=0.6)
        t0 = time.monotonic()
        results = await asyncio.gather(*(reader.get("users", {"id": 1}, region=eu) for _ in range(14)),
                                       return_exceptions=True)
        took = time.monotonic() - t0
        served = [r.source for r in results if not isinstance(r, Exception)]
        failed = [r for r in results if isinstance(r, Exception)]
        # each target lets 4 reads in: eu's 4 wait for the slow region, the rest go elsewhere at once
        assert (served.count(eu), served.count(us), served.count(ap)) == (4, 4, 4), served
        assert len(failed) == 2 and all(isinstance(e, ReadUnavailable) for e in failed)
        assert all(a.outcome == "rejected" for e in failed for a in e.attempts)
        assert reader.rejected[eu] == 10 and reader.rejected[us] == 6 and reader.rejected[ap] == 2
        rejected_first = [r for r in results if not isinstance(r, Exception) and r.source != eu]
        assert all(r.attempts[0].outcome == "rejected" and r.attempts[0].elapsed_s == 0.0 for r in rejected_first)
        fast = [a.elapsed_s for r in rejected_first for a in r.attempts if a.outcome == "ok"]
        assert max(fast) < 0.5, fast  # the fallback answers did not queue behind eu
        assert 0.55 < took < 2.0, took
        lr.proxy(eu).set_mode("pass")


async def test_redis_tier_and_unavailable(setup):
    lr, cfg, (eu, us, ap) = setup
    r = aioredis.from_url(REDIS_URL)
    try:
        # the router's write-through, as it would do after applying the row
        await r.set(cache_key(eu, "users", {"id": 1}), row_to_cache({"id": 1, "name": "cached", "version": 3}), ex=60)
        await asyncio.sleep(0.3)
        for region in (eu, us, ap):
            lr.proxy(region).set_mode("refuse")
        async with RegionalReader(cfg, tier_timeout_s=0.5, order=("home", "fallbacks", "redis")) as reader:
            res = await reader.get("users", {"id": 1}, region=eu, columns=["id", "name"])
            assert res.tier == "redis" and res.source == "redis" and res.degraded
            assert res.row == {"id": 1, "name": "cached"}
            assert res.served_region == eu
            assert 0.2 <= res.stale_by_s < 5, res.stale_by_s
            assert [a.outcome for a in res.attempts] == ["unavailable", "unavailable", "unavailable", "ok"]
            # not cached, every database down: an explicit error listing every attempt
            with pytest.raises(ReadUnavailable) as ei:
                await reader.get("users", {"id": 2}, region=eu)
            assert [a.outcome for a in ei.value.attempts][-1] == "miss"
            assert "redis:redis=miss" in str(ei.value)
            # range reads cannot use the cache
            with pytest.raises(ReadUnavailable, match="redis:redis=unsupported"):
                await reader.select("users", region=eu, where={"name": "x"})
    finally:
        await r.delete(cache_key(eu, "users", {"id": 1}))
        await r.aclose()


async def test_allow_list_and_bind_parameters(setup, rg_config):
    lr, cfg, (eu, us, ap) = setup
    async with RegionalReader(cfg) as reader:
        with pytest.raises(BadRead, match="not allow-listed"):
            await reader.get("pg_authid", {"id": 1}, region=eu)
        with pytest.raises(BadRead, match="key of 'users'"):
            await reader.get("users", {"name": "x"}, region=eu)
        with pytest.raises(BadRead, match="refusing identifier"):
            await reader.select("users", region=eu, columns=['name" FROM pg_authid --'])
        with pytest.raises(BadRead, match="refusing identifier"):
            await reader.select("users", region=eu, where={"1=1 OR name": "x"})
        with pytest.raises(BadRead, match="unknown region"):
            await reader.get("users", {"id": 1}, region="nowhere")
        # unknown column: PostgreSQL refuses it, reported as a bad read (not as an outage)
        with pytest.raises(BadRead, match="UndefinedColumn"):
            await reader.select("users", region=eu, columns=["nope"])
        # values are bind parameters: an injection attempt is just a string that matches nothing
        res = await reader.select("users", region=eu, where={"email": "x' OR '1'='1"})
        assert res.rows == [] and res.tier == "home"
        res = await reader.select("users", region=eu, where={"email": None})
        assert [r["id"] for r in res.rows] == [2]
        with pytest.raises(BadRead):
            await reader.get("users", {"id": "1; DROP TABLE users"}, region=eu)
    assert lr.count(eu, "users") == 2
    # a column allow-list in the config is enforced before any I/O
    cfg2 = cfg.model_copy(update={"tables": {**cfg.tables, "users": cfg.tables["users"].model_copy(
        update={"columns": ("id", "name", "version")})}})
    async with RegionalReader(cfg2) as reader:
        with pytest.raises(BadRead, match="'email' is not allow-listed"):
            await reader.select("users", region=eu, columns=["email"])
        res = await reader.get("users", {"id": 1}, region=eu)
        assert set(res.row) == {"id", "name", "version"}


def test_cache_format_helpers():
    """The write-through format the router shares with the reader (pure functions)."""
    import datetime as dt
    from decimal import Decimal

    from regionguard.client.cache import cache_age_s, row_from_cache

    assert cache_key("eu", "users", {"id": 42}) == "rg:eu:users:42"
    # sorted column order, like entity_key; "/" and "%" inside values are escaped
    assert cache_key("eu", "t", {"b": "x/y", "a": "50%"}) == "rg:eu:t:50%25/x%2Fy"
    with pytest.raises(ValueError):
        cache_key("eu", "t", {})
    raw = row_to_cache({"id": 1, "amount": Decimal("9.50"), "at": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)})
    assert row_from_cache(raw) == {"id": 1, "amount": "9.50", "at": "2026-01-01T00:00:00+00:00"}
    assert cache_age_s(60, 59_000) == 1.0 and cache_age_s(60, -1) is None and cache_age_s(60, None) is None


@pytest.fixture
def primary_and_standby():
    """A private primary and a real streaming standby of it (pg_basebackup -R)."""
    import os
    import pwd
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from tests.harness import PgCluster, free_port

    primary = PgCluster("rdr-primary").start()
    base = Path(tempfile.mkdtemp(prefix="rg-pg-standby-"))  # not under pytest's 0700 tmp: postgres must reach it
    (base / "sock").mkdir(parents=True)
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        pw = pwd.getpwnam("postgres")
        for p in (base, base / "sock"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    bb = subprocess.run([*as_user, str(primary.bindir / "pg_basebackup"), "-D", str(base / "data"), "-R",
                         "-X", "stream", "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "--no-sync"],
                        capture_output=True, text=True, timeout=60)
    if bb.returncode != 0:
        primary.destroy()
        pytest.fail(f"pg_basebackup failed: {bb.stderr}")
    port = free_port()
    with open(base / "data" / "postgresql.conf", "a") as f:
        f.write(f"port = {port}\nunix_socket_directories = '{base / 'sock'}'\n")
    standby = PgCluster("rdr-standby", port=port, base_dir=base).start()
    try:
        yield primary, standby
    finally:
        standby.destroy()
        primary.destroy()
        shutil.rmtree(base, ignore_errors=True)


async def test_replica_tier_reports_replay_lag_of_a_real_standby(primary_and_standby, broker, tmp_path):
    import asyncpg

    from tests.harness import FaultProxy, make_config

    primary, standby = primary_and_standby
    conn = await asyncpg.connect(primary.dsn)
    try:
        await conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, name text, version bigint NOT NULL)")
        await conn.execute("INSERT INTO users VALUES (1, 'Ada', 1)")
    finally:
        await conn.close()
    with FaultProxy("127.0.0.1", primary.port, name="rdr-primary") as proxy:
        cfg = make_config({"eu": f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"}, broker.bootstrap,
                          tmp_path / "rg.yaml", fallbacks=False, tables={"users": {"key": ["id"], "version": "version"}},
                          overrides={"regions": {"eu": {"read_replicas": [standby.dsn]}}}, create_topics=False).load()
        async with RegionalReader(cfg, tier_timeout_s=0.3) as reader:
            # wait for the row to be replayed on the standby
            deadline = time.monotonic() + 10
            while True:
                try:
                    res = await reader.get("users", {"id": 1}, region="eu")
                except ReadUnavailable:
                    res = None
                sconn = await asyncpg.connect(standby.dsn)
                try:
                    replayed = await sconn.fetchval("SELECT count(*) FROM users")
                except asyncpg.UndefinedTableError:
                    replayed = 0
                finally:
                    await sconn.close()
                if replayed or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert res is not None and res.tier == "home"
            proxy.set_mode("blackhole")
            res = await reader.get("users", {"id": 1}, region="eu")
            assert res.tier == "replica" and res.source == "eu/replica0" and res.row["name"] == "Ada"
            # a streaming standby: the lag is known (time since the last replayed commit; an idle primary
            # makes it grow, so it is an upper bound on how stale the answer may be)
            assert res.stale_by_s is not None and 0.0 <= res.stale_by_s < 30, res.stale_by_s
            assert res.degraded and res.served_region == "eu"
            print(f"standby replay lag reported: {res.stale_by_s:.3f}s")
