"""End-to-end latency, produce -> row committed, at a steady rate, against a raw pipeline in the same run.

Each round has two phases on the same broker, the same producer and the same
kind of database (bench/steady.py: the row carries the event's send time, a
deferred trigger stamps the commit):

(a) raw: the simplest low-latency pipeline we can write -- one consumer with
    the project's consumer settings (``make_consumer``) that blocks for the
    first record, takes whatever else is already fetched, and applies it in one
    asyncpg transaction (inbox claim + upsert, as bench/router_apply.py's
    baseline) -- run as its own process;
(b) router: a real ``regionguard router`` subprocess (default config, two
    lanes), with a real ``regionguard health`` leader publishing the region's
    state (health runs through both phases, so both see the same load).

Writes sent in the first ``--warmup`` seconds, and until every write older
than 0.5 s has committed (the pipeline keeps up), are not counted. Prints p50, p99
and max of both, and router/raw ratios. Goals (issue 11): router p50 <= 20 ms,
p99 <= 100 ms at 2,000 writes/s. Last line, machine-readable:
``RESULT bench=latency broker=... rate=... router_p50_ms=... raw_p50_ms=... ...``

    RG_BROKER=apache python bench/latency.py --rate 2000 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from steady import (SteadyLoad, close_broker, drop_db, fetch_commits, fresh_db, latencies,  # noqa: E402
                    summarise, wait_committed, wait_settled)

from regionguard.core.config import load_config, parse_config  # noqa: E402
from regionguard.core.kafka import ensure_topics, group_id, make_consumer  # noqa: E402
from regionguard.core.sql import INBOX_CLAIM_COUNT  # noqa: E402
from regionguard_testkit.embedded import Broker, ServiceProcess  # noqa: E402

GOAL_P50_MS, GOAL_P99_MS = 20.0, 100.0

UPSERT = ("INSERT INTO users (id, name, version, sent_at) "
          "SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[]::timestamptz[]) "
          "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, version = EXCLUDED.version, "
          "sent_at = EXCLUDED.sent_at WHERE users.version < EXCLUDED.version")


def raw_pipeline(cfg_path: str, dsn: str) -> int:
    """Phase (a), in its own process: consume -> one transaction per fetched run of records -> commit offsets."""
    import asyncpg
    import orjson

    cfg = load_config(cfg_path)
    consumer = make_consumer(cfg, group_id(cfg, "rawbench"))
    consumer.subscribe([cfg.topic("writes", "eu")],
                       on_assign=lambda c, ps: print(f"raw pipeline assigned {len(ps)} partitions", flush=True))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(dsn))

    async def apply(events: list[dict]) -> None:
        ids = [e["id"] for e in events]
        async with conn.transaction():
            status = await conn.execute(INBOX_CLAIM_COUNT, ids, ["users"] * len(ids), "raw")
            if int(status.rsplit(" ", 1)[-1]) != len(ids):
                return  # a redelivery after a rebalance: not part of a steady run
            await conn.execute(UPSERT, [e["key"]["id"] for e in events], [e["data"]["name"] for e in events],
                               [e["data"]["version"] for e in events], [e["data"]["sent_at"] for e in events])

    while not stop:
        first = consumer.poll(0.1)
        if first is None:
            continue
        msgs = [first, *consumer.consume(999, 0)]
        events = [orjson.loads(m.value()) for m in msgs if m.error() is None and m.value()]
        if events:
            loop.run_until_complete(apply(events))
            consumer.commit(asynchronous=True)
    consumer.close()
    loop.run_until_complete(conn.close())
    return 0


def phase(cfg, dsn: str, rate: float, duration: float, warmup: float) -> tuple[dict, SteadyLoad]:
    load = SteadyLoad(cfg, rate=rate)
    load.start()
    time.sleep(warmup)
    settled = wait_settled(dsn, load, timeout=60)
    if settled is None:
        print("  WARNING: not keeping up after 60 s; measuring anyway", flush=True)
        settled = time.time()
    time.sleep(duration)
    load.finish()
    got = wait_committed(dsn, load.sent, timeout=60)
    if got < load.sent:
        print(f"  WARNING: {load.sent - got} of {load.sent} writes not committed after 60 s", flush=True)
    full, extra = fetch_commits(dsn, with_start=True)
    commits = {i: (sent, committed) for i, (sent, _start, committed) in full.items()}
    s = summarise(latencies(commits, settled, load.t_end + 1))
    # where the time goes: sent -> its transaction started, and that transaction's length
    s["to_txn_p50"] = summarise([(t - sent) * 1000 for sent, t, _c in full.values() if settled <= sent])["p50"]
    s["in_txn_p50"] = summarise([(c - t) * 1000 for sent, t, c in full.values() if settled <= sent])["p50"]
    s.update(sent=load.sent, committed=got, double=extra, rate=load.sent / (load.t_end - load.t_start),
             behind=load.behind_max, errors=len(load.errors))
    return s, load


def one_round(broker, args, logs: Path, env: dict) -> dict:
    tag = uuid.uuid4().hex[:8]
    names = {"raw": f"rg_bench_lat_raw_{tag}", "router": f"rg_bench_lat_router_{tag}"}
    dsns = {k: asyncio.run(fresh_db(v)) for k, v in names.items()}
    docs, paths, cfgs = {}, {}, {}
    for k in names:
        docs[k] = {"kafka": {"bootstrap": broker.bootstrap, "topic_prefix": f"bl{k[:2]}{tag}.",
                             "partitions": args.partitions},
                   "regions": {"eu": {"dsn": dsns[k]}},
                   "tables": {"users": {"key": ["id"], "version": "version"}},
                   "metrics": {"port": 0}}
        paths[k] = logs / f"latency-{k}-{tag}.yaml"
        paths[k].write_text(yaml.safe_dump(docs[k]))
        cfgs[k] = parse_config(docs[k])
        ensure_topics(cfgs[k])
    procs: list = []
    raw = None
    try:
        health = ServiceProcess("health", ["health", "--config", str(paths["router"]), "--observer", "bench",
                                           "--metrics-port", "0"], env=env, log_dir=logs)
        procs.append(health)
        health.wait_for_log("is the leader", 90)

        raw_log = logs / f"raw-{tag}.log"
        with open(raw_log, "wb") as out:
            raw = subprocess.Popen([sys.executable, __file__, "--raw-pipeline", str(paths["raw"]), dsns["raw"]],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while "assigned" not in raw_log.read_text():  # in its group before the load starts
            if raw.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"raw pipeline did not join its group; see {raw_log}")
            time.sleep(0.1)
        time.sleep(1)
        print("  (a) raw pipeline ...", flush=True)
        a, _ = phase(cfgs["raw"], dsns["raw"], args.rate, args.duration, args.warmup)
        raw.send_signal(signal.SIGTERM)
        raw.wait(30)
        print(f"  (a) raw:    p50 {a['p50']:.1f} ms  p99 {a['p99']:.1f} ms  max {a['max']:.1f} ms  "
              f"(p50 {a['to_txn_p50']:.1f} ms to its transaction, {a['in_txn_p50']:.1f} ms in it; "
              f"{a['n']} writes, {a['rate']:.0f}/s sent; load {os.getloadavg()[0]:.1f})", flush=True)

        router = ServiceProcess("router", ["router", "--config", str(paths["router"]), "--metrics-port", "0"],
                                env=env, log_dir=logs)
        procs.append(router)
        router.wait_for_log("assigned partitions", 90)
        time.sleep(2)
        print("  (b) router ...", flush=True)
        b, _ = phase(cfgs["router"], dsns["router"], args.rate, args.duration, args.warmup)
        print(f"  (b) router: p50 {b['p50']:.1f} ms  p99 {b['p99']:.1f} ms  max {b['max']:.1f} ms  "
              f"(p50 {b['to_txn_p50']:.1f} ms to its transaction, {b['in_txn_p50']:.1f} ms in it; "
              f"{b['n']} writes, {b['rate']:.0f}/s sent, {b['double']} applied twice; "
              f"load {os.getloadavg()[0]:.1f})", flush=True)
        return {"raw": a, "router": b, "load1": os.getloadavg()[0]}
    finally:
        if raw is not None and raw.poll() is None:
            raw.kill()
            raw.wait(10)
        for p in reversed(procs):
            p.terminate(15)
        for name in names.values():
            asyncio.run(drop_db(name))


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--raw-pipeline":
        return raw_pipeline(sys.argv[2], sys.argv[3])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=2000.0, help="writes/s")
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds per phase")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds of load not counted (then also until every write older than 0.5 s committed)")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()

    logs = Path(tempfile.gettempdir()) / "regionguard-bench"
    logs.mkdir(exist_ok=True)
    broker = Broker.from_env()  # Apache Kafka: a fresh data folder, removed at the end
    t = time.monotonic()
    broker.start()
    print(f"broker {broker.bootstrap} ({broker.kind}) ready in {time.monotonic() - t:.1f}s; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; rate {args.rate:.0f}/s, "
          f"{args.duration:.0f}s measured after {args.warmup:.0f}s warm-up, {args.rounds} round(s)", flush=True)
    env = {**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap}
    try:
        rounds = []
        for r in range(args.rounds):
            print(f"round {r + 1}:", flush=True)
            rounds.append(one_round(broker, args, logs, env))
    finally:
        close_broker(broker)
    med = {f"{k}_{q}": statistics.median(x[k][q] for x in rounds) for k in ("raw", "router")
           for q in ("p50", "p99", "max")}
    ratio50 = [x["router"]["p50"] / x["raw"]["p50"] for x in rounds]
    ratio99 = [x["router"]["p99"] / x["raw"]["p99"] for x in rounds]
    ok = med["router_p50"] <= GOAL_P50_MS and med["router_p99"] <= GOAL_P99_MS
    print(f"\nmedian over {len(rounds)} round(s): router p50 {med['router_p50']:.1f} ms, p99 "
          f"{med['router_p99']:.1f} ms; raw p50 {med['raw_p50']:.1f} ms, p99 {med['raw_p99']:.1f} ms; "
          f"router/raw p50 [{', '.join(f'{x:.2f}' for x in ratio50)}], p99 [{', '.join(f'{x:.2f}' for x in ratio99)}]"
          f" -- goals p50 <= {GOAL_P50_MS:.0f} ms, p99 <= {GOAL_P99_MS:.0f} ms: {'met' if ok else 'MISSED'}")
    fields = {"bench": "latency", "broker": broker.kind, "rate": f"{args.rate:.0f}",
              "duration_s": f"{args.duration:.0f}",
              "rounds": len(rounds), "n": sum(x["router"]["n"] for x in rounds),
              **{f"{k}_ms": f"{v:.1f}" for k, v in med.items()},
              "ratio_p50": f"{statistics.median(ratio50):.2f}", "ratio_p99": f"{statistics.median(ratio99):.2f}",
              "unapplied": sum(x["router"]["sent"] - x["router"]["committed"] for x in rounds),
              "double": sum(x["router"]["double"] for x in rounds), "goals": "met" if ok else "missed"}
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
