"""Read-your-writes: how soon after a row's commit ``wait_applied`` confirms it, at a steady rate.

One real ``regionguard router`` subprocess applies writes the bench produces with
``WriteProducer`` at ``--rate`` writes/s; every write's token goes to one
:class:`~regionguard.client.ConsistencyWatcher`, which confirms it by polling the region's inbox
for all pending ids in one query every 5 ms (nothing is added to the router). The row carries its
send time and a deferred trigger stamps its commit (bench/steady.py), so per write:

- baseline: produce -> row committed (the pipeline's own latency, same run);
- confirmation lag: row committed -> ``wait_applied`` returned ``applied``.

Prints p50/p99/max of both and lag p99 / produce->commit p99. Goal (issue 17): lag p99 <= 50 ms at
1,000 writes/s. Last line: ``RYW rate=... lag_p50_ms=... lag_p99_ms=... e2e_p99_ms=... ratio_p99=...``

    RG_BROKER=apache python bench/ryw.py --rate 1000 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from steady import close_broker, drop_db, fetch_commits, fresh_db, summarise  # noqa: E402

from regionguard.client import ConsistencyWatcher  # noqa: E402
from regionguard.core.config import parse_config  # noqa: E402
from regionguard.core.kafka import ensure_topics  # noqa: E402
from regionguard_testkit.embedded import Broker, ServiceProcess  # noqa: E402
from regionguard.client import WriteProducer  # noqa: E402

GOAL_P99_MS = 50.0


async def load(cfg, rate: float, duration: float, warmup: float) -> tuple[dict[int, float], float, int]:
    """Produce at ``rate`` for ``warmup + duration`` s; returns ({id: confirmed at}, measuring from, timeouts).

    The producer runs in its own thread (as an application's request handlers would), handing each
    token to the watcher's event loop.
    """
    confirmed: dict[int, float] = {}
    timeouts = 0
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Future] = []

    async def confirm(i: int, token) -> None:
        nonlocal timeouts
        v = await watcher.wait_applied(token, timeout=30)
        if v.status == "applied":
            confirmed[i] = time.time()
        else:
            timeouts += 1

    def produce(t0: float) -> None:
        producer = WriteProducer(cfg, **{"linger.ms": 2})
        i = 0
        while time.time() - t0 < warmup + duration:
            due = int((time.time() - t0) * rate)
            while i < due:
                now = datetime.now(timezone.utc)
                tok = producer.write("eu", "users", "upsert", {"id": i},
                                     {"name": f"u{i}", "version": 1, "sent_at": now.isoformat()})
                loop.call_soon_threadsafe(lambda i=i, tok=tok: tasks.append(asyncio.ensure_future(confirm(i, tok))))
                i += 1
            producer._producer.poll(0)
            time.sleep(0.002)
        producer.flush(60)

    async with ConsistencyWatcher(cfg) as watcher:
        t0 = time.time()
        await asyncio.to_thread(produce, t0)
        await asyncio.sleep(0.1)  # the last hand-overs
        await asyncio.gather(*tasks)
    return confirmed, t0 + warmup, timeouts


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--partitions", type=int, default=12)
    args = ap.parse_args()
    logs = Path(tempfile.gettempdir()) / "regionguard-bench"
    logs.mkdir(exist_ok=True)
    broker = Broker.from_env()
    broker.start()
    env = {**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap}
    tag = uuid.uuid4().hex[:8]
    name = f"rg_bench_ryw_{tag}"
    router = None
    try:
        dsn = asyncio.run(fresh_db(name))
        doc = {"kafka": {"bootstrap": broker.bootstrap, "topic_prefix": f"ryw{tag}.", "partitions": args.partitions},
               "regions": {"eu": {"dsn": dsn}}, "tables": {"users": {"key": ["id"], "version": "version"}},
               "metrics": {"port": 0}}
        path = logs / f"ryw-{tag}.yaml"
        path.write_text(yaml.safe_dump(doc))
        cfg = parse_config(doc)
        ensure_topics(cfg)
        router = ServiceProcess("router", ["router", "--config", str(path), "--no-health", "--metrics-port", "0"],
                                env=env, log_dir=logs)
        router.start()
        router.wait_for_log("assigned partitions", 90)
        time.sleep(2)
        confirmed, since, timeouts = asyncio.run(load(cfg, args.rate, args.duration, args.warmup))
        commits, double = fetch_commits(dsn)
    finally:
        if router is not None:
            router.terminate(15)
        asyncio.run(drop_db(name))
        close_broker(broker)
    e2e = summarise([(c - s) * 1000 for i, (s, c) in commits.items() if s >= since])
    lag = summarise([(confirmed[i] - c) * 1000 for i, (s, c) in commits.items() if s >= since and i in confirmed])
    ratio = lag["p99"] / e2e["p99"]
    ok = lag["p99"] <= GOAL_P99_MS and not timeouts and not double
    print(f"produce -> row committed (baseline): p50 {e2e['p50']:.1f} ms  p99 {e2e['p99']:.1f} ms  "
          f"max {e2e['max']:.1f} ms  ({e2e['n']} writes)")
    print(f"row committed -> wait_applied confirmed: p50 {lag['p50']:.1f} ms  p99 {lag['p99']:.1f} ms  "
          f"max {lag['max']:.1f} ms  ({lag['n']} writes; {timeouts} not confirmed; {double} applied twice)")
    print(f"lag p99 / produce->commit p99 = {ratio:.2f}; goal lag p99 <= {GOAL_P99_MS:.0f} ms: "
          f"{'met' if ok else 'MISSED'} (load {os.getloadavg()[0]:.1f})")
    print(f"RYW rate={args.rate:.0f} lag_p50_ms={lag['p50']:.1f} lag_p99_ms={lag['p99']:.1f} "
          f"lag_max_ms={lag['max']:.1f} e2e_p50_ms={e2e['p50']:.1f} e2e_p99_ms={e2e['p99']:.1f} "
          f"ratio_p99={ratio:.2f} unconfirmed={timeouts} goal={'met' if ok else 'missed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
