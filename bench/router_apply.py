"""Router apply throughput against a raw asyncpg baseline, measured in one run.

(a) raw: asyncpg batched dedup + upsert of N rows (inbox claim via unnest, counted
    from the command status as the router's fast path does, then
    ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE``), batches of
    ``router.batch_max``: the fastest way we know to do the same DB work.
(b) router: N write events pre-produced to ``rg.writes.<region>``, then a real
    ``regionguard router`` subprocess applies them; timed from the inbox's
    ``applied_at`` (each batch transaction's start), group join excluded: from
    the first batch applied after the region's consumer group is Stable with
    every lane assigned, to the last batch.

Why "settled" and not simply the first batch: on a broker with
``group.initial.rebalance.delay.ms=0`` (the test kit's) the lane whose join
reaches the coordinator first is given every partition, applies alone for
0.2-0.4 s, and the group then rebalances to split them. A broker with the
default delay (3 s) assigns both lanes at once. The rate from the first batch
is printed as well, with the writes applied before the group settled.

Prints both rates and the ratio router/raw. Target: ratio >= 0.7 at N=200k.

    python bench/router_apply.py --n 200000 [--lanes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import yaml
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regionguard.core.config import parse_config  # noqa: E402
from regionguard.core.kafka import ensure_topics, producer_conf, router_group  # noqa: E402
from regionguard.core.sql import INBOX_CLAIM_COUNT, INBOX_DDL  # noqa: E402
from tests.harness.broker import Broker  # noqa: E402
from tests.harness.services import ServiceProcess  # noqa: E402
from tests.integration.helpers import UNDESCRIBED, group_members  # noqa: E402

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "CREATE TABLE users (id bigint PRIMARY KEY, name text, email text, version bigint NOT NULL)"


async def fresh_db(name: str, schema: str = SCHEMA) -> str:
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    conn = await asyncpg.connect(dsn)
    await conn.execute(schema)
    await conn.execute(INBOX_DDL)
    await conn.close()
    return dsn


def exit_on_sigterm() -> None:
    """``timeout`` or a CI runner stops a bench with SIGTERM: unwind, so its services and databases go too."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


async def drop_db(name: str) -> None:
    """Benchmarks leave nothing behind: each run's databases hold 30-60 MB of rows."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def raw_baseline(dsn: str, n: int, batch: int) -> float:
    conn = await asyncpg.connect(dsn)
    ids = [uuid.uuid4() for _ in range(n)]
    upsert = (
        "INSERT INTO users (id, name, version) SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[]) "
        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version "
        "WHERE users.version < EXCLUDED.version"
    )
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        chunk = ids[s:s + batch]
        async with conn.transaction():
            status = await conn.execute(INBOX_CLAIM_COUNT, chunk, ["users"] * len(chunk), "raw")
            keep = range(s, s + int(status.rsplit(" ", 1)[-1]))
            await conn.execute(upsert, list(keep), [f"user{i}" for i in keep], [1] * len(keep))
    elapsed = time.perf_counter() - t0
    await conn.close()
    return n / elapsed


def user_upserts(n: int):
    """(Kafka key, value) of n single-row upserts of users 0..n-1."""
    for i in range(n):
        ev = {"id": str(uuid.uuid4()), "region": "eu", "table": "users", "op": "upsert",
              "key": {"id": i}, "data": {"name": f"user{i}", "version": 1}}
        yield f"users/{i}".encode(), json.dumps(ev).encode()


def produce_records(bootstrap: str, topic: str, records) -> int:
    """Produce (key, value) pairs as fast as the client takes them; returns how many."""
    p = Producer(producer_conf(bootstrap, **{"linger.ms": 20}))
    n = 0
    for key, value in records:
        while True:
            try:
                p.produce(topic, key=key, value=value)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        n += 1
    if p.flush(60):
        raise RuntimeError(f"could not deliver every record to {topic}")
    return n


def produce(bootstrap: str, topic: str, n: int) -> None:
    produce_records(bootstrap, topic, user_upserts(n))


async def count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM regionguard_applied")
    finally:
        await conn.close()


async def wait_applied(dsn: str, n: int, timeout: float) -> tuple[float, float]:
    """Wait until n writes are applied; return (first, last) batch start times.

    Polling ``count(*)`` often would scan the inbox and steal the CPU the
    router's PostgreSQL work needs, so we poll twice a second and take the
    timing from the inbox itself: ``applied_at`` is each batch transaction's
    start, so max - min spans the run (minus the last batch's few ms).
    """
    conn = await asyncpg.connect(dsn)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if await conn.fetchval("SELECT count(*) FROM regionguard_applied") >= n:
                first, last = await conn.fetchrow(
                    "SELECT extract(epoch FROM min(applied_at)), extract(epoch FROM max(applied_at)) "
                    "FROM regionguard_applied")
                return float(first), float(last)
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    raise TimeoutError(f"router applied fewer than {n} writes in {timeout}s")


async def applied_since(dsn: str, since: float) -> tuple[int, float]:
    """(writes, first batch start) of the batches that started at or after ``since`` (epoch seconds)."""
    conn = await asyncpg.connect(dsn)
    try:
        n, first = await conn.fetchrow(
            "SELECT count(*), extract(epoch FROM min(applied_at)) FROM regionguard_applied "
            "WHERE applied_at >= to_timestamp($1)", since)
        return int(n), float(first)
    finally:
        await conn.close()


def wait_settled(bootstrap: str, group: str, lanes: int, partitions: int, timeout: float) -> float:
    """Epoch time at which ``group`` was first seen Stable with ``lanes`` members owning every partition.

    Polled every 20 ms, so the time is at most that (plus one describe) late: a late time only
    leaves batches out of the measured window. On a broker that does not list members (tansu)
    the first Stable state counts.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = group_members(bootstrap, group)
        if members == UNDESCRIBED:
            return time.time()
        if members and len(members) == lanes and all(members.values()) \
                and sum(len(ps) for ps in members.values()) == partitions:
            return time.time()
        time.sleep(0.02)
    raise TimeoutError(f"consumer group {group} did not settle with {lanes} lanes in {timeout}s")


def one_round(broker: Broker, n: int, partitions: int, lanes: int | None = None) -> tuple[float, float, float]:
    """(raw rate, router rate once its group settled, router rate from its first batch)."""
    tag = uuid.uuid4().hex[:8]
    try:
        return _one_round(broker, n, partitions, tag, lanes)
    finally:
        for name in (f"rg_bench_raw_{tag}", f"rg_bench_router_{tag}"):
            asyncio.run(drop_db(name))


def _one_round(broker: Broker, n: int, partitions: int, tag: str,
               lanes: int | None = None) -> tuple[float, float, float]:
    raw_dsn = asyncio.run(fresh_db(f"rg_bench_raw_{tag}"))
    router_dsn = asyncio.run(fresh_db(f"rg_bench_router_{tag}"))
    cfg_doc = {
        "kafka": {"bootstrap": broker.bootstrap, "topic_prefix": f"bench{tag}.", "partitions": partitions},
        "regions": {"eu": {"dsn": router_dsn}},
        "tables": {"users": {"key": ["id"], "version": "version"}},
        "metrics": {"enabled": False},
    }
    if lanes is not None:
        cfg_doc["router"] = {"lanes": lanes, "pool_size": max(4, lanes)}
    cfg = parse_config(cfg_doc)
    ensure_topics(cfg)
    raw_rate = asyncio.run(raw_baseline(raw_dsn, n, cfg.router.batch_max))
    print(f"  (a) raw asyncpg batched dedup+upsert: {raw_rate:,.0f} writes/s", flush=True)
    produce(broker.bootstrap, cfg.topic("writes", "eu"), n)
    logs = Path(tempfile.gettempdir()) / "regionguard-bench"
    cfg_path = logs / f"router-{tag}.yaml"
    logs.mkdir(exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(cfg_doc))
    router = ServiceProcess("router", ["router", "--config", str(cfg_path), "--no-health"],
                            env={**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap}, log_dir=logs)
    router.start()

    async def watch() -> tuple[float, tuple[float, float]]:
        settled = asyncio.to_thread(wait_settled, broker.bootstrap, router_group(cfg, "eu"), cfg.router.lanes,
                                    partitions, 120)
        return await asyncio.gather(settled, wait_applied(router_dsn, n, timeout=600))

    try:
        settled, (first, last) = asyncio.run(watch())
    finally:
        router.terminate()
    steady_n, steady_first = asyncio.run(applied_since(router_dsn, settled))
    router_rate, from_first = steady_n / (last - steady_first), n / (last - first)
    print(f"  (b) router end to end (Kafka -> PostgreSQL), group settled: {router_rate:,.0f} writes/s "
          f"({steady_n:,} writes in {last - steady_first:.2f} s; from its first batch: "
          f"{from_first:,.0f} writes/s, {n - steady_n:,} applied before the group settled)", flush=True)
    return raw_rate, router_rate, from_first


def main() -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2, help="raw/router pairs; the machine's load varies between them")
    ap.add_argument("--target", type=float, default=0.7)
    ap.add_argument("--lanes", type=int, default=None, help="router.lanes (default: the config default)")
    args = ap.parse_args()

    broker = Broker.from_env()
    if not broker.is_running():
        broker.start()
    try:
        print(f"N={args.n} partitions={args.partitions} batch_max=1000 rounds={args.rounds}", flush=True)
        ratios, from_first = [], []
        for r in range(args.rounds):
            print(f"round {r + 1}:", flush=True)
            raw, router, first = one_round(broker, args.n, args.partitions, args.lanes)
            ratios.append(router / raw)
            from_first.append(first / raw)
            print(f"  ratio router/raw = {router / raw:.2f} (from the first batch: {first / raw:.2f})", flush=True)
        med = statistics.median(ratios)
        verdict = "meets" if med >= args.target else "MISSES"
        print(f"median ratio router/raw = {med:.2f} over {len(ratios)} round(s) "
              f"[{', '.join(f'{x:.2f}' for x in ratios)}] ({verdict} target {args.target}); "
              f"from the first batch: median {statistics.median(from_first):.2f} "
              f"[{', '.join(f'{x:.2f}' for x in from_first)}]")
        return 0
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
