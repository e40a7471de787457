"""Replay drain rate and memory, against a raw asyncpg baseline measured in the same run.

For each backlog size (default 10k and 100k):
1. region ``eu`` turns open: the bench publishes the ``rg.region-state``
   record the health leader would (the contract the router and replayer
   follow), and PostgreSQL refuses the region's database (``ALLOW_CONNECTIONS
   false``, its sessions terminated), so it is really gone; a real router
   diverts N writes into ``rg.held.eu``;
2. the region heals and turns closed (connections allowed, ``closed``
   record); we time from the ``closed`` record until every partition is back
   in direct mode (router metric ``regionguard_held_partitions`` = 0). That
   is the issue's definition; how fast health notices a heal is measured by
   ``bench/detection.py``, so it is not counted twice here;
3. peak RSS (VmHWM) of the router and the replayer processes.

The outage is made in PostgreSQL, not with the test suite's TCP fault proxy:
that proxy is Python relaying every byte, and measured here it cuts raw
asyncpg throughput by ~45% (21k against 35-39k writes/s), which would be a
benchmark of the proxy.

The raw baseline is asyncpg batched dedup+upsert of N rows, as in
``bench/router_apply.py``, in batches of the replayer's size
(``replay.batch_max``, 4,000 by default; raw measured 3-7% faster with them
than with 1,000). Target: drain/raw >= 0.6 with ``replay.max_rate: 0``.

    python bench/replay.py --n 10000 --n 100000
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from router_apply import ADMIN_DSN, drop_db, exit_on_sigterm, fresh_db, produce, raw_baseline  # noqa: E402

from regionguard.core.config import ReplayConfig, parse_config  # noqa: E402
from regionguard.core.kafka import ensure_topics, make_producer  # noqa: E402
from regionguard.core.models import RegionState, State  # noqa: E402
import asyncpg  # noqa: E402

from regionguard_testkit.embedded import Broker, ServiceProcess, free_port  # noqa: E402
from tests.integration.helpers import read_json  # noqa: E402


def scrape(port: int, name: str) -> float | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    total, seen = 0.0, False
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise TimeoutError(what)


def set_state(cfg, producer, state: State, seq: int) -> None:
    """What the health leader publishes when a breaker changes state."""
    rec = RegionState(region="eu", state=state, since=datetime.now(timezone.utc), seq=seq, reason="bench",
                      observer="bench")
    producer.produce(cfg.topic("region-state"), key=b"eu", value=rec.model_dump_json().encode())
    producer.flush(10)


async def allow_connections(name: str, allow: bool) -> None:
    """A real outage of one database: new sessions refused, live ones terminated."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
        if not allow:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await admin.close()


def one_run(broker: Broker, n: int, partitions: int, logs: Path) -> dict:
    tag = uuid.uuid4().hex[:8]
    name = f"rg_bench_replay_{tag}"
    dsn = asyncio.run(fresh_db(name))
    doc = {"kafka": {"bootstrap": broker.bootstrap, "topic_prefix": f"rb{tag}.", "partitions": partitions},
           "regions": {"eu": {"dsn": dsn}},
           "tables": {"users": {"key": ["id"], "version": "version"}},
           "replay": {"max_rate": 0}}
    cfg = parse_config(doc)
    ensure_topics(cfg)
    cfg_path = logs / f"replay-{tag}.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap}
    rport, pport = free_port(), free_port()
    states = make_producer(cfg)
    set_state(cfg, states, State.closed, 1)
    router = ServiceProcess("router", ["router", "--config", str(cfg_path), "--metrics-port", str(rport)],
                            env=env, log_dir=logs)
    replayer = ServiceProcess("replayer", ["replayer", "--config", str(cfg_path),
                                           "--metrics-port", str(pport)], env=env, log_dir=logs)
    try:
        router.wait_for_log(r"assigned partitions", timeout=60)
        set_state(cfg, states, State.open, 2)
        asyncio.run(allow_connections(name, False))
        t0 = time.perf_counter()
        produce(broker.bootstrap, cfg.topic("writes", "eu"), n)
        wait(lambda: (scrape(rport, "regionguard_writes_held_total") or 0) >= n, 600, "held backlog")
        hold_rate = n / (time.perf_counter() - t0)
        asyncio.run(allow_connections(name, True))
        set_state(cfg, states, State.closed, 3)
        healed = time.perf_counter()
        wait(lambda: scrape(rport, "regionguard_held_partitions") == 0
             and (scrape(rport, "regionguard_writes_applied_total") is not None
                  or (scrape(pport, "regionguard_writes_replayed_total") or 0) >= n), 900, "direct mode again")
        switch_s = time.perf_counter() - healed
        events = read_json(broker.bootstrap, cfg.topic("failover-events"), idle=1.0)
        fin = [e["detail"] for e in events if e["kind"] == "replay_finished"]
        done = sum(d["applied"] + d["duplicates"] + d["stale"] for d in fin)
        # the drain rate as the issue defines it: held writes / (heal -> every partition direct)
        return {"n": n, "hold_rate": hold_rate, "switch_s": switch_s, "drain_rate": n / switch_s,
                "replayed": done, "router_rss": peak_rss_mb(router.pid), "replayer_rss": peak_rss_mb(replayer.pid)}
    finally:
        replayer.terminate()
        router.terminate()
        asyncio.run(allow_connections(name, True))
        asyncio.run(drop_db(name))


def main() -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, action="append", help="backlog sizes (default 10000 and 100000)")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--target", type=float, default=0.6)
    args = ap.parse_args()
    sizes = args.n or [10_000, 100_000]
    broker = Broker.from_env()
    if not broker.is_running():
        broker.start()
    logs = Path(tempfile.gettempdir()) / "regionguard-bench"
    logs.mkdir(exist_ok=True)
    try:
        raw_name = f"rg_bench_raw_{uuid.uuid4().hex[:8]}"
        raw_dsn = asyncio.run(fresh_db(raw_name))
        batch = ReplayConfig(max_rate=0).batch_size  # what one_run's replayer uses
        raw = asyncio.run(raw_baseline(raw_dsn, max(sizes), batch))
        asyncio.run(drop_db(raw_name))
        print(f"raw asyncpg batched dedup+upsert (batches of {batch}): {raw:,.0f} writes/s", flush=True)
        rows = []
        for n in sizes:
            r = one_run(broker, n, args.partitions, logs)
            rows.append(r)
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
        print()
        print("| held writes | hold rate (w/s) | closed -> all partitions direct (s) | drain rate (w/s) | drain/raw | router peak RSS (MB) | replayer peak RSS (MB) |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['n']:,} | {r['hold_rate']:,.0f} | {r['switch_s']:.1f} | {r['drain_rate']:,.0f} | "
                  f"{r['drain_rate'] / raw:.2f} | {r['router_rss']:.0f} | {r['replayer_rss']:.0f} |")
        worst = min(r["drain_rate"] / raw for r in rows)
        print(f"\nraw baseline {raw:,.0f} writes/s; worst drain/raw = {worst:.2f} "
              f"({'meets' if worst >= args.target else 'MISSES'} target {args.target})")
        return 0
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
