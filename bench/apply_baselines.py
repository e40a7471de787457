"""The database work of applying writes, done without regionguard: the baselines the router is held to.

Each baseline writes the same rows the router applies in ``bench/router_apply.py``
(users 0..n-1, one upsert each, batches of ``router.batch_max``) into its own
fresh database, and returns writes per second. From the weakest to the hardest
to beat:

- ``raw``: one connection, serial, per batch one transaction with the inbox
  claim (``unnest`` of the ids) and one ``INSERT ... SELECT FROM unnest(...) ON
  CONFLICT DO UPDATE``; what the router's fast path sends, without Kafka.
- ``raw_lanes``: the same on as many connections as the router has lanes, each
  with its own slice of the rows, all at once.
- ``copy_upsert``: binary ``COPY`` of a batch into a temporary staging table,
  then one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``; no deduplication at
  all. This is the database's ceiling for these rows: a router that beats it
  does less work than an upsert.
- ``copy_inbox``: ``copy_upsert`` plus the inbox claim, the ids copied into a
  second staging table and claimed with one ``INSERT ... SELECT ... ON CONFLICT
  DO NOTHING``: the ceiling of "exactly once per write id" done by the database.

The copy baselines run on ``lanes`` connections too (the router's PostgreSQL
work is spread over its lanes in the same way). ``prefill_inbox`` fills an inbox
with random uuid4 ids first, as a retention's worth of applied writes does in
production (the router's real inbox is never empty; a uuid4 primary key makes
every claim a random read of the index).

Written by hand because it *is* the measurement: no library states the
database's ceiling for our statements.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
from uuid6 import uuid7

from regionguard.core.sql import INBOX_CLAIM_COUNT

UPSERT_UNNEST = (
    "INSERT INTO users (id, name, version) SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[]) "
    "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version "
    "WHERE users.version < EXCLUDED.version")
STAGE_ROWS = "CREATE TEMP TABLE IF NOT EXISTS stage_users (id bigint, name text, version bigint) ON COMMIT DELETE ROWS"
STAGE_IDS = "CREATE TEMP TABLE IF NOT EXISTS stage_ids (write_id uuid, tbl text) ON COMMIT DELETE ROWS"
UPSERT_STAGED = (
    "INSERT INTO users (id, name, version) SELECT id, name, version FROM stage_users "
    "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version "
    "WHERE users.version < EXCLUDED.version")
CLAIM_STAGED = ("INSERT INTO regionguard_applied (write_id, tbl, source) SELECT write_id, tbl, 'copy' "
                "FROM stage_ids ON CONFLICT (write_id) DO NOTHING")

Batch = Callable[[asyncpg.Connection, range, list[uuid.UUID]], Awaitable[None]]


async def _raw_batch(conn: asyncpg.Connection, rows: range, ids: list[uuid.UUID]) -> None:
    async with conn.transaction():
        status = await conn.execute(INBOX_CLAIM_COUNT, ids, ["users"] * len(ids), "raw")
        if int(status.rsplit(" ", 1)[-1]) != len(ids):
            raise RuntimeError("raw baseline: a fresh id was already claimed")
        await conn.execute(UPSERT_UNNEST, list(rows), [f"user{i}" for i in rows], [1] * len(rows))


async def _copy_batch(conn: asyncpg.Connection, rows: range, ids: list[uuid.UUID]) -> None:
    async with conn.transaction():
        await conn.copy_records_to_table("stage_users", records=[(i, f"user{i}", 1) for i in rows])
        await conn.execute(UPSERT_STAGED)


async def _copy_inbox_batch(conn: asyncpg.Connection, rows: range, ids: list[uuid.UUID]) -> None:
    async with conn.transaction():
        await conn.copy_records_to_table("stage_ids", records=[(w, "users") for w in ids])
        status = await conn.execute(CLAIM_STAGED)
        if int(status.rsplit(" ", 1)[-1]) != len(ids):
            raise RuntimeError("copy baseline: a fresh id was already claimed")
        await conn.copy_records_to_table("stage_users", records=[(i, f"user{i}", 1) for i in rows])
        await conn.execute(UPSERT_STAGED)


BASELINES: dict[str, tuple[Batch, bool]] = {  # name: (one batch, on every lane?)
    "raw": (_raw_batch, False),
    "raw_lanes": (_raw_batch, True),
    "copy_upsert": (_copy_batch, True),
    "copy_inbox": (_copy_inbox_batch, True),
}


UNCLAIMED = frozenset({"copy_upsert"})  # baselines that claim no write ids: their inbox stays empty


async def run_baseline(name: str, dsn: str, n: int, batch: int, lanes: int) -> float:
    """Writes per second of baseline ``name`` for rows 0..n-1 (ids made before the clock starts)."""
    one_batch, spread = BASELINES[name]
    workers = lanes if spread else 1
    conns = [await asyncpg.connect(dsn) for _ in range(workers)]
    try:
        for conn in conns:
            await conn.execute(STAGE_ROWS)
            await conn.execute(STAGE_IDS)
        ids = [uuid7() for _ in range(n)]  # as the SDK makes them (bench/inbox_ids.py says why)
        starts = list(range(0, n, batch))

        async def lane(k: int) -> None:
            for s in starts[k::workers]:  # lane k takes every workers-th batch, as partitions spread keys
                rows = range(s, min(s + batch, n))
                await one_batch(conns[k], rows, ids[rows.start:rows.stop])

        t0 = time.perf_counter()
        await asyncio.gather(*(lane(k) for k in range(workers)))
        return n / (time.perf_counter() - t0)
    finally:
        for conn in conns:
            await conn.close()


async def applied_counts(dsn: str, n: int) -> dict[str, int]:
    """What the database holds after rows 0..n-1 (``user<i>``, version 1) were applied: the round's proof.

    ``rows``: the table's rows; ``at_last``: rows of keys 0..n-1 at their last value; ``inbox``:
    write ids claimed outside a prefill. ``inbox`` equals the writes only if each was applied once
    (the claim is the exactly-once record: a write applied twice is claimed twice or not at all).
    """
    conn = await asyncpg.connect(dsn)
    try:
        rows, at_last = await conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE id >= 0 AND id < $1 AND name = 'user' || id AND version = 1) "
            "FROM users", n)
        inbox = await conn.fetchval("SELECT count(*) FROM regionguard_applied WHERE source <> 'prefill'")
        return {"rows": rows, "at_last": at_last, "inbox": inbox}
    finally:
        await conn.close()


def shortfall(counts: dict[str, int], n: int, claims: bool = True) -> str | None:
    """Why a round's n writes were not all applied exactly once, or None if they were.

    Every count must be n, but the inbox's is 0 for a baseline that claims no ids (``claims``).
    """
    want = {k: (n if claims or k != "inbox" else 0) for k in counts}
    wrong = [f"{k}={v} (want {want[k]})" for k, v in counts.items() if v != want[k]]
    return "database count: " + ", ".join(wrong) if wrong else None


async def prefill_inbox(dsn: str, ids: int) -> float:
    """Fill the inbox with ``ids`` random uuid4 write ids (in chunks, so WAL and memory stay small);
    returns the seconds it took. ``gen_random_uuid()`` is PostgreSQL 13+'s uuid4."""
    conn = await asyncpg.connect(dsn)
    t0 = time.perf_counter()
    try:
        chunk = 1_000_000
        for done in range(0, ids, chunk):
            await conn.execute(
                "INSERT INTO regionguard_applied (write_id, tbl, source, applied_at) "
                "SELECT gen_random_uuid(), 'users', 'prefill', now() - interval '1 day' "
                "FROM generate_series(1, $1::int)", min(chunk, ids - done))
        await conn.execute("VACUUM ANALYZE regionguard_applied")
    finally:
        await conn.close()
    return time.perf_counter() - t0
