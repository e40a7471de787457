"""Router apply throughput against the database's own baselines, measured in one run.

(a) baselines (``bench/apply_baselines.py`` says what each does): ``raw`` (one
    connection, serial, inbox claim + ``unnest`` upsert per batch, what the
    router's fast path sends), ``raw_lanes`` (the same on as many connections as
    the router has lanes), ``copy_upsert`` (binary COPY into staging + one
    upsert, no dedup: the database's ceiling for these rows) and ``copy_inbox``
    (the same plus the inbox claim). Each in its own fresh database.
(b) router: N write events pre-produced to ``rg.writes.<region>``, then a real
    ``regionguard router`` subprocess applies them; timed from the inbox's
    ``applied_at`` (each batch transaction's start), group join excluded: from
    the first batch applied after the region's consumer group is Stable with
    every lane assigned, to the last batch.

``--prefill 10000000`` runs every database (baselines and router) against an
inbox already holding that many random uuid4 ids, as production's does (made
once in a template database, then copied).

Why "settled" and not simply the first batch: on a broker with
``group.initial.rebalance.delay.ms=0`` (the test kit's) the lane whose join
reaches the coordinator first is given every partition, applies alone for
0.2-0.4 s, and the group then rebalances to split them. A broker with the
default delay (3 s) assigns both lanes at once. The rate from the first batch
is printed as well, with the writes applied before the group settled.

Prints every rate and the router against each baseline; appends one CSV row a
round to ``bench/results/router_apply.csv`` (``--csv``). Target: router/raw >= 0.7.

    python bench/router_apply.py --n 200000 [--lanes 3] [--prefill 10000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime
import json
import subprocess
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
from uuid6 import uuid7
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regionguard.core.config import parse_config  # noqa: E402
from regionguard.core.kafka import ensure_topics, producer_conf, router_group  # noqa: E402
from regionguard.core.sql import INBOX_DDL  # noqa: E402
from apply_baselines import BASELINES, prefill_inbox, run_baseline  # noqa: E402
from tests.harness.broker import Broker  # noqa: E402
from tests.harness.services import ServiceProcess  # noqa: E402
from tests.integration.helpers import UNDESCRIBED, group_members  # noqa: E402

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
SCHEMA = "CREATE TABLE users (id bigint PRIMARY KEY, name text, email text, version bigint NOT NULL)"


async def fresh_db(name: str, schema: str = SCHEMA, template: str | None = None) -> str:
    """A new database with the schema and the inbox, or a copy of ``template`` (made by this function)."""
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    await admin.close()
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    if template is None:
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


def user_upserts(n: int):
    """(Kafka key, value) of n single-row upserts of users 0..n-1, with UUIDv7 ids as the SDK makes them."""
    for i in range(n):
        ev = {"id": str(uuid7()), "region": "eu", "table": "users", "op": "upsert",
              "key": {"id": i}, "data": {"name": f"user{i}", "version": 1}}
        yield f"users/{i}".encode(), json.dumps(ev).encode()


def produce_all(p: Producer, topic: str, records) -> int:
    """Produce (key, value) pairs on ``p`` as fast as it takes them (a full queue is waited out); how many."""
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
    return n


def produce_records(bootstrap: str, topic: str, records) -> int:
    """Produce (key, value) pairs as fast as the client takes them; returns how many."""
    p = Producer(producer_conf(bootstrap, **{"linger.ms": 20}))
    n = produce_all(p, topic, records)
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

    Polling ``count(*)`` often would scan the table and steal the CPU the
    router's PostgreSQL work needs, so we poll twice a second (the users
    table: the inbox may hold a prefill) and take the
    timing from the inbox itself: ``applied_at`` is each batch transaction's
    start, so max - min spans the run (minus the last batch's few ms).
    """
    conn = await asyncpg.connect(dsn)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if await conn.fetchval("SELECT count(*) FROM users") >= n:
                first, last = await conn.fetchrow(
                    "SELECT extract(epoch FROM min(applied_at)), extract(epoch FROM max(applied_at)) "
                    "FROM regionguard_applied WHERE source <> 'prefill'")
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
            "WHERE applied_at >= to_timestamp($1) AND source <> 'prefill'", since)
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


async def raw_baseline(dsn: str, n: int, batch: int) -> float:
    """The serial raw baseline alone (``bench/replay.py`` compares the replayer with it)."""
    return await run_baseline("raw", dsn, n, batch, 1)


def one_round(broker: Broker, n: int, partitions: int, lanes: int | None = None,
              template: str | None = None) -> dict[str, float]:
    """Rates of one round: every baseline, ``router`` (group settled) and ``router_from_first``."""
    tag = uuid.uuid4().hex[:8]
    names = [f"rg_bench_{b}_{tag}" for b in BASELINES] + [f"rg_bench_router_{tag}"]
    try:
        return _one_round(broker, n, partitions, tag, lanes, template)
    finally:
        for name in names:
            asyncio.run(drop_db(name))


def _one_round(broker: Broker, n: int, partitions: int, tag: str,
               lanes: int | None, template: str | None) -> dict[str, float]:
    router_dsn = asyncio.run(fresh_db(f"rg_bench_router_{tag}", template=template))
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
    rates: dict[str, float] = {}
    for name in BASELINES:
        dsn = asyncio.run(fresh_db(f"rg_bench_{name}_{tag}", template=template))
        rates[name] = asyncio.run(run_baseline(name, dsn, n, cfg.router.batch_max, cfg.router.lanes))
        print(f"  (a) {name:<12} {rates[name]:>9,.0f} writes/s", flush=True)
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
    rates["router"], rates["router_from_first"] = steady_n / (last - steady_first), n / (last - first)
    print(f"  (b) router end to end (Kafka -> PostgreSQL), group settled: {rates['router']:,.0f} writes/s "
          f"({steady_n:,} writes in {last - steady_first:.2f} s; from its first batch: "
          f"{rates['router_from_first']:,.0f} writes/s, {n - steady_n:,} applied before the group settled)",
          flush=True)
    print("  router against " + ", ".join(f"{b} {rates['router'] / rates[b]:.2f}" for b in BASELINES), flush=True)
    return rates


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_csv(path: Path, row: dict) -> None:
    """One row a round, so every figure in docs/benchmarks.md can be traced to a run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def main() -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2, help="baseline/router rounds; the machine's load varies")
    ap.add_argument("--target", type=float, default=0.7, help="router/raw")
    ap.add_argument("--lanes", type=int, default=None, help="router.lanes (default: the config default)")
    ap.add_argument("--prefill", type=int, default=0, help="random ids already in every inbox")
    ap.add_argument("--csv", type=Path, default=ROOT / "bench" / "results" / "router_apply.csv")
    args = ap.parse_args()

    broker = Broker.from_env()
    if not broker.is_running():
        broker.start()
    template = f"rg_bench_tpl_{uuid.uuid4().hex[:8]}" if args.prefill else None
    try:
        if template:
            dsn = asyncio.run(fresh_db(template))
            took = asyncio.run(prefill_inbox(dsn, args.prefill))
            print(f"inbox prefilled with {args.prefill:,} random ids in {took:.0f} s", flush=True)
        print(f"N={args.n} partitions={args.partitions} batch_max=1000 rounds={args.rounds} "
              f"prefill={args.prefill}", flush=True)
        rounds = []
        for r in range(args.rounds):
            print(f"round {r + 1}:", flush=True)
            rates = one_round(broker, args.n, args.partitions, args.lanes, template)
            rounds.append(rates)
            append_csv(args.csv, {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "commit": commit(), "broker": os.environ.get("RG_BROKER", "apache"), "n": args.n,
                "lanes": args.lanes or "", "prefill": args.prefill, "round": r + 1,
                **{k: round(v) for k, v in rates.items()}})
        for b in BASELINES:
            ratios = [x["router"] / x[b] for x in rounds]
            print(f"router/{b} median {statistics.median(ratios):.2f} [{', '.join(f'{x:.2f}' for x in ratios)}]; "
                  f"{b} median {statistics.median(x[b] for x in rounds):,.0f} writes/s")
        med = statistics.median(x["router"] / x["raw"] for x in rounds)
        verdict = "meets" if med >= args.target else "MISSES"
        print(f"median ratio router/raw = {med:.2f} over {len(rounds)} round(s) ({verdict} target {args.target}); "
              f"router median {statistics.median(x['router'] for x in rounds):,.0f} writes/s")
        return 0
    finally:
        if template:
            asyncio.run(drop_db(template))
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
