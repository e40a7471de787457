"""regionguard_testkit.embedded pieces the chaos suite relies on, beyond tests/integration/test_harness.py."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from regionguard_testkit.embedded import LocalRegions, PgCluster

pytestmark = pytest.mark.timeout(120)


def test_pg_crash_keeps_every_acknowledged_commit() -> None:
    """A commit that returned before ``crash()`` must survive it (regionguard commits offsets right after).

    With ``synchronous_commit = off`` the last few hundred ms of commits were lost by an
    immediate shutdown, which the chaos suite reported as lost writes.
    """

    async def commit_many(dsn: str, n: int) -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute("CREATE TABLE t (i int PRIMARY KEY)")
            for i in range(n):
                await conn.execute("INSERT INTO t VALUES ($1)", i)  # one transaction each
        finally:
            conn.terminate()

    async def count(dsn: str) -> int:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return await conn.fetchval("SELECT count(*) FROM t")
        finally:
            await conn.close()

    with PgCluster("durable") as pg:
        asyncio.run(commit_many(pg.dsn, 300))
        pg.crash()
        pg.start()
        assert asyncio.run(count(pg.dsn)) == 300


def test_local_regions_with_a_region_on_a_private_cluster(pg_available: str) -> None:
    with PgCluster("lr") as pg:
        lr = LocalRegions(["a", "b"], servers={"b": ("127.0.0.1", pg.port)})
        with lr:
            lr.setup_schema("CREATE TABLE x (i int)")
            assert lr.direct_dsn("b").startswith(f"postgresql://postgres@127.0.0.1:{pg.port}/")
            assert lr.proxy("b").address[1] != pg.port
            lr.execute("b", "INSERT INTO x VALUES (1)")
            assert lr.count("b", "x") == 1 and lr.count("a", "x") == 0
            pg.crash()
        # drop() tolerates the crashed private cluster
        assert not lr.created
