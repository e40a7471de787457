"""Isolating the bad rows of a failing statement: halves down to 32 rows, then one by one (core/apply.py
``_apply_group``), against one by one throughout (before), interleaved in the same run on the local
PostgreSQL (127.0.0.1:5432, a scratch database). 1,000 upserts per batch, 1/10/100/300 of them
breaking a CHECK constraint; prints the median of 5 alternated rounds each and the ratio new/old.

    python bench/isolate.py
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid

import asyncpg
from regionguard.core import apply as dbmod
from regionguard.core.db import ensure_inbox, load_schemas
from regionguard.core.config import parse_config
from regionguard.core.models import WriteEvent
from regionguard.core.errors import BadWrite, PoisonWrite, classify_db_error

new_group = dbmod._apply_group

async def old_group(  # the isolation before: one by one throughout
        conn, schema, op, cols, rows, res, want_rows=False):
    stmt = dbmod._statement(schema, op, cols, want_rows)
    try:
        async with conn.transaction():
            changed = await dbmod._run(conn, stmt, dbmod._payload(schema, op, cols, rows), None, schema.name, op)
    except Exception as exc:
        err = classify_db_error(schema.name, exc)
        if not isinstance(err, (BadWrite, PoisonWrite)):
            raise
        if len(rows) == 1:
            res.failed.append((rows[0][0], err)); return
        for row in rows:
            await old_group(conn, schema, op, cols, [row], res, want_rows)
        return
    res.applied += changed
    res.stale += len(rows) - changed

async def main():
    admin = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"rg_isobench_{uuid.uuid4().hex[:6]}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
        await conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, amount numeric CHECK (amount >= 0), status text)")
        await ensure_inbox(conn)
        cfg = parse_config({"regions": {"eu": {"dsn": "x"}}, "tables": {"orders": {"key": ["id"]}}})
        schemas = await load_schemas(conn, cfg)
        base = [0]
        async def once(impl, bad_n):
            dbmod._apply_group = impl
            bad = set(random.sample(range(1000), bad_n))
            ws = [WriteEvent(id=uuid.uuid4(), region="eu", table="orders", op="upsert", key={"id": base[0]+i},
                             data={"amount": -1 if i in bad else 1, "status": "x"}) for i in range(1000)]
            base[0] += 1000
            t0 = time.perf_counter()
            res = await dbmod.apply_writes(conn, schemas, ws, source="bench", region="eu")
            dt = time.perf_counter() - t0
            assert len(res.failed) == bad_n and res.applied == 1000 - bad_n
            return dt
        for bad_n in (1, 10, 100, 300):
            o, n = [], []
            for _ in range(5):
                o.append(await once(old_group, bad_n)); n.append(await once(new_group, bad_n))
            print(f"bad={bad_n:4d} row-by-row median {statistics.median(o):.3f}s  halves {statistics.median(n):.3f}s  ratio new/old {statistics.median(n)/statistics.median(o):.2f}")
        await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()
if __name__ == "__main__":
    asyncio.run(main())
