"""RegionDB.apply when the connection dies in the middle of a statement (found by the chaos suite).

A PostgreSQL crash or a connection reset while a batch is in flight must
surface as the retriable :class:`RegionUnavailable`, so the router holds the
region's writes. It used to escape as asyncpg's ``InterfaceError`` ("connection
has been released back to the pool", raised by ``conn.terminate()`` on a
connection the pool had already dropped) and kill the whole router process.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from regionguard.core.config import parse_config
from regionguard.core.db import RegionDB
from regionguard.core.errors import RegionUnavailable
from regionguard.core.models import WriteEvent

pytestmark = pytest.mark.timeout(60)

SLOW_SCHEMA = """
CREATE TABLE slow (id bigint PRIMARY KEY, v text);
CREATE FUNCTION slow_down() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(3); RETURN NEW; END $$;
CREATE TRIGGER slow_down BEFORE INSERT ON slow FOR EACH ROW EXECUTE FUNCTION slow_down();
"""


async def test_connection_reset_mid_statement_is_region_unavailable(regions) -> None:
    lr = regions(["eu"], schema=SLOW_SCHEMA)
    cfg = parse_config({"regions": {"eu": {"dsn": lr.dsn("eu")}}, "tables": {"slow": {"key": ["id"]}}})
    db = RegionDB(cfg, "eu")
    try:
        await db.prepare()
        w = WriteEvent(id=uuid.uuid4(), region="eu", table="slow", op="insert", key={"id": 1}, data={"v": "x"})
        task = asyncio.create_task(db.apply([w], source="router"))
        # the insert is now sleeping in its trigger (pg_sleep: 3 s), seen from a direct connection
        deadline = asyncio.get_running_loop().time() + 10
        while not (await lr.afetch("eu", "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                                         "AND datname = current_database() AND query ILIKE '%insert%'")):
            assert not task.done(), "the insert ended before reaching its trigger"
            assert asyncio.get_running_loop().time() < deadline, "the insert never reached its trigger"
            await asyncio.sleep(0.02)
        assert not task.done()
        await asyncio.to_thread(lr.proxy("eu").reset_all)
        with pytest.raises(RegionUnavailable):
            await asyncio.wait_for(task, 10)
        # and the pool is usable again once the region answers
        w2 = WriteEvent(id=uuid.uuid4(), region="eu", table="slow", op="insert", key={"id": 2}, data={"v": "y"})
        res = await db.apply([w2], source="router")
        assert res.applied == 1
    finally:
        await db.close()


async def test_a_table_created_after_start_is_picked_up(regions) -> None:
    """An allow-listed table missing at start holds its writes (RegionNotReady) until the operator creates
    it -- then the next apply must see it, not hold them until the router is restarted."""
    from regionguard.core.errors import RegionNotReady

    lr = regions(["eu"], schema="CREATE TABLE other (id bigint PRIMARY KEY)")
    cfg = parse_config({"regions": {"eu": {"dsn": lr.dsn("eu")}},
                        "tables": {"other": {"key": ["id"]}, "late": {"key": ["id"]}}})
    db = RegionDB(cfg, "eu")
    try:
        w = WriteEvent(id=uuid.uuid4(), region="eu", table="late", op="upsert", key={"id": 1}, data={"v": "x"})
        with pytest.raises(RegionNotReady):
            await db.apply([w], source="router")
        await lr.aexecute("eu", "CREATE TABLE late (id bigint PRIMARY KEY, v text)")
        res = await db.apply([w], source="router")
        assert res.applied == 1
    finally:
        await db.close()
