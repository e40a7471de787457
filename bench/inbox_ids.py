"""Inbox claims with random (UUIDv4) against time-ordered (UUIDv7) write ids, on an inbox already holding many.

The inbox's primary key is the write id. With random ids every claim lands on a random
page of an index that, after a retention's worth of writes, is far bigger than
shared_buffers; with time-ordered ids (what the Python SDK makes since issue 29) new ids
go to the index's right edge. This fills an inbox with ``--prefill`` random ids, then
claims ``--n`` fresh ids in batches of 1,000 (the router's claim statement, one
transaction a batch), alternating uuid4 and uuid7 rounds, and prints claims/s of each and
their ratio per round (the machine is shared: ratios, not absolute rates).

    python bench/inbox_ids.py --prefill 10000000 --n 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg
from uuid6 import uuid7

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from apply_baselines import prefill_inbox  # noqa: E402
from router_apply import drop_db, exit_on_sigterm, fresh_db  # noqa: E402
from regionguard.core.sql import INBOX_CLAIM_COUNT  # noqa: E402


async def claims_per_s(dsn: str, ids: list[uuid.UUID]) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        t0 = time.perf_counter()
        for s in range(0, len(ids), 1000):
            chunk = ids[s:s + 1000]
            async with conn.transaction():
                await conn.execute(INBOX_CLAIM_COUNT, chunk, ["users"] * len(chunk), "bench")
        return len(ids) / (time.perf_counter() - t0)
    finally:
        await conn.close()


async def main(args: argparse.Namespace) -> None:
    name = f"rg_bench_ids_{uuid.uuid4().hex[:8]}"
    dsn = await fresh_db(name)
    try:
        print(f"inbox prefilled with {args.prefill:,} random ids in {await prefill_inbox(dsn, args.prefill):.0f} s",
              flush=True)
        ratios = []
        for r in range(args.rounds):
            v4 = await claims_per_s(dsn, [uuid.uuid4() for _ in range(args.n)])
            v7 = await claims_per_s(dsn, [uuid7() for _ in range(args.n)])
            ratios.append(v7 / v4)
            print(f"round {r + 1}: uuid4 {v4:,.0f} claims/s, uuid7 {v7:,.0f} claims/s, uuid7/uuid4 {v7 / v4:.2f}",
                  flush=True)
        print(f"INBOX_IDS prefill={args.prefill} n={args.n} uuid7/uuid4 median {statistics.median(ratios):.2f} "
              f"[{', '.join(f'{x:.2f}' for x in ratios)}]")
    finally:
        await drop_db(name)


if __name__ == "__main__":
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefill", type=int, default=10_000_000)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(ap.parse_args()))
