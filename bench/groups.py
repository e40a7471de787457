"""Atomic write groups against single-row writes, in rows per second, measured in one run.

Both runs go through a real ``regionguard router`` subprocess on the same broker and
PostgreSQL, pre-produced to ``rg.writes.<region>`` and timed from the first applied batch to
the last (the inbox's ``applied_at``, as ``router_apply.py`` does):

(a) singles: N rows as N single-row upserts (``users``, keyed by row);
(b) groups: the same N rows as N/10 groups of 10 -- an order and 9 line items inserted in one
    transaction, ordering key ``customer/<c>`` over many customers.

Prints rows/s of both and the ratio groups/singles. Target (issue 16): ratio >= 0.7.

    python bench/groups.py --n 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import asyncpg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from regionguard.core.config import parse_config  # noqa: E402
from regionguard.core.kafka import ensure_topics  # noqa: E402
from router_apply import (drop_db, exit_on_sigterm, fresh_db, produce_records, user_upserts,  # noqa: E402
                          wait_applied)
from tests.harness.broker import Broker  # noqa: E402
from tests.harness.services import ServiceProcess  # noqa: E402

SCHEMA = """
CREATE TABLE users (id bigint PRIMARY KEY, name text, email text, version bigint NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, amount numeric NOT NULL);
CREATE TABLE order_items (order_id bigint NOT NULL REFERENCES orders(id), line int NOT NULL, sku text NOT NULL,
                          qty int NOT NULL CHECK (qty > 0), PRIMARY KEY (order_id, line));
"""
TABLES = {"users": {"key": ["id"], "version": "version"}, "orders": {"key": ["id"]},
          "order_items": {"key": ["order_id", "line"]}}
GROUP_ROWS = 10
CUSTOMERS = 20_000


def groups(n_groups: int):
    for g in range(n_groups):
        customer = g % CUSTOMERS
        ops = [{"table": "orders", "op": "insert", "key": {"id": g}, "data": {"customer_id": customer, "amount": 90}}]
        ops += [{"table": "order_items", "op": "insert", "key": {"order_id": g, "line": line},
                 "data": {"sku": f"sku{line}", "qty": line}} for line in range(1, GROUP_ROWS)]
        ev = {"id": str(uuid.uuid4()), "region": "eu", "ordering_key": f"customer/{customer}", "ops": ops}
        yield f"customer/{customer}".encode(), json.dumps(ev).encode()


def run_router(broker: Broker, kind: str, n_rows: int, partitions: int, tag: str) -> float:
    """Rows per second of one router run over ``kind`` (singles | groups)."""
    name = f"rg_bench_{kind}_{tag}"
    try:
        dsn = asyncio.run(fresh_db(name, SCHEMA))
        cfg_doc = {
            "kafka": {"bootstrap": broker.bootstrap, "topic_prefix": f"bench{kind}{tag}.", "partitions": partitions},
            "regions": {"eu": {"dsn": dsn}},
            "tables": TABLES,
            "metrics": {"enabled": False},
        }
        cfg = parse_config(cfg_doc)
        ensure_topics(cfg)
        events = produce_records(broker.bootstrap, cfg.topic("writes", "eu"),
                                 user_upserts(n_rows) if kind == "singles" else groups(n_rows // GROUP_ROWS))
        logs = Path(tempfile.gettempdir()) / "regionguard-bench"
        logs.mkdir(exist_ok=True)
        cfg_path = logs / f"router-{kind}-{tag}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg_doc))
        router = ServiceProcess("router", ["router", "--config", str(cfg_path), "--no-health"],
                                env={**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap}, log_dir=logs)
        router.start()
        try:
            first, last = asyncio.run(wait_applied(dsn, events, timeout=600))  # the inbox holds one id per event
        finally:
            router.terminate()
        rows = asyncio.run(_rows(dsn))
        if rows != n_rows - (n_rows % GROUP_ROWS if kind == "groups" else 0):
            raise SystemExit(f"{kind}: {rows} rows applied, expected {n_rows}")
        return rows / (last - first)
    finally:
        asyncio.run(drop_db(name))


async def _rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM orders) "
                                   "+ (SELECT count(*) FROM order_items)")
    finally:
        await conn.close()


def main() -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="rows per run")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2, help="singles/groups pairs; the machine's load varies")
    ap.add_argument("--target", type=float, default=0.7)
    args = ap.parse_args()
    broker = Broker.from_env()
    if not broker.is_running():
        broker.start()
    try:
        print(f"N={args.n} rows, groups of {GROUP_ROWS} (an order + {GROUP_ROWS - 1} items), "
              f"partitions={args.partitions} rounds={args.rounds}", flush=True)
        ratios = []
        for r in range(args.rounds):
            tag = uuid.uuid4().hex[:8]
            s = run_router(broker, "singles", args.n, args.partitions, tag)
            print(f"round {r + 1}: (a) single-row writes: {s:,.0f} rows/s", flush=True)
            g = run_router(broker, "groups", args.n, args.partitions, tag)
            print(f"round {r + 1}: (b) groups of {GROUP_ROWS}: {g:,.0f} rows/s ({g / GROUP_ROWS:,.0f} groups/s); "
                  f"ratio {g / s:.2f}", flush=True)
            ratios.append(g / s)
        med = statistics.median(ratios)
        verdict = "meets" if med >= args.target else "MISSES"
        print(f"GROUPS median ratio groups/singles (rows/s) = {med:.2f} over {len(ratios)} round(s) "
              f"[{', '.join(f'{x:.2f}' for x in ratios)}] ({verdict} target {args.target})")
        return 0
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
