"""Router takeover: two routers share a region under a steady load; one is SIGKILLed, later one is SIGTERMed.

One region, ``--partitions`` partitions, two ``regionguard router`` processes
(``r1``, ``r2``; default config, two lanes each, ``--no-health``: the region
counts as closed) in the region's consumer group, and a steady ``--rate``
writes/s (bench/steady.py: each row carries its send time, a deferred trigger
stamps its commit). Timeline:

1. steady state (both routers own partitions): the baseline, p50/p99 latency;
2. ``r1`` is SIGKILLed: its partitions stall until the group's session times
   out and they are assigned to ``r2``. Measured: the worst produce -> row
   latency of writes sent from 2 s before the kill on, and the longest time a
   partition went without a commit. Goal: worst <= session timeout + 2 s;
3. ``r3`` starts (a replacement joins; with an eager assignor every partition
   pauses for the rebalance): worst latency, for information;
4. ``r2`` gets SIGTERM (a clean handover: it leaves the group, ``r3`` takes its
   partitions at once). Goal: worst latency < 1 s.

Every write is checked: committed once (counts of writes not applied within
90 s of the end -- still in Kafka, but stuck -- and of writes applied twice).
Last line, machine-readable: ``RESULT bench=takeover broker=... kill_worst_s=... term_worst_s=... ...``

    RG_BROKER=apache python bench/takeover.py --rate 1000
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
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from steady import (SteadyLoad, close_broker, drop_db, fetch_commits, fresh_db, latencies,  # noqa: E402
                    summarise, wait_committed, wait_settled, worst_partition_gap)

from regionguard.core.config import parse_config  # noqa: E402
from regionguard.core.groupsession import read_fence_ms, session_ms  # noqa: E402
from regionguard.core.kafka import ensure_topics  # noqa: E402
from regionguard_testkit.embedded import Broker, ServiceProcess  # noqa: E402

TERM_GOAL_S = 1.0


def window(commits, partition, since: float, until: float) -> dict:
    s = summarise(latencies(commits, since, until))
    gap, where = worst_partition_gap(commits, partition, since, until)
    slow = sum(1 for x in latencies(commits, since, until) if x > 1000)
    return {"n": s["n"], "p50_ms": s["p50"], "p99_ms": s["p99"], "worst_s": s["max"] / 1000,
            "gap_s": gap, "gap_partition": where, "over_1s": slow}


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=1000.0, help="writes/s")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--steady", type=float, default=8.0,
                    help="seconds of steady state before the kill (after every write older than 0.5 s committed)")
    ap.add_argument("--after-kill", type=float, default=None, help="seconds to wait after the kill "
                    "(default: session timeout + 8)")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds after the replacement joined and the backlog cleared")
    ap.add_argument("--after-term", type=float, default=6.0)
    args = ap.parse_args()

    logs = Path(tempfile.gettempdir()) / "regionguard-bench"
    logs.mkdir(exist_ok=True)
    broker = Broker.from_env()  # Apache Kafka: a fresh data folder, removed at the end
    broker.start()
    env = {**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap}
    tag = uuid.uuid4().hex[:8]
    name = f"rg_bench_takeover_{tag}"
    dsn = asyncio.run(fresh_db(name))
    doc = {"kafka": {"bootstrap": broker.bootstrap, "topic_prefix": f"bt{tag}.", "partitions": args.partitions},
           "regions": {"eu": {"dsn": dsn}},
           "tables": {"users": {"key": ["id"], "version": "version"}},
           "metrics": {"port": 0}}
    cfg = parse_config(doc)
    # the routers' group session (core/groupsession.py): the brokers' fencing time plus a margin
    session_s = int(cfg.kafka.client.get("session.timeout.ms") or
                    session_ms(read_fence_ms(cfg), cfg.kafka.group_session_margin_s)) / 1000
    after_kill = args.after_kill if args.after_kill is not None else session_s + 8
    cfg_path = logs / f"takeover-{tag}.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    ensure_topics(cfg)
    print(f"broker {broker.bootstrap} ({broker.kind}); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"{args.rate:.0f} writes/s, {args.partitions} partitions, session timeout {session_s:g}s", flush=True)

    def router(inst: str) -> ServiceProcess:
        return ServiceProcess(f"takeover-{inst}", ["router", "--config", str(cfg_path), "--no-health",
                                                   "--instance", inst, "--metrics-port", "0"],
                              env=env, log_dir=logs)

    def settled(load: SteadyLoad, what: str) -> float:
        t = wait_settled(dsn, load, timeout=60)
        if t is None:
            print(f"  WARNING: not keeping up 60 s after {what}; going on", flush=True)
            return time.time()
        print(f"  settled at +{t - load.t_start:.1f}s", flush=True)
        return t

    procs: list[ServiceProcess] = []
    load = None
    try:
        r1 = router("r1")
        procs.append(r1)
        r1.wait_for_log("assigned partitions", 90)
        r2 = router("r2")
        procs.append(r2)
        r2.wait_for_log("assigned partitions", 90)
        time.sleep(2)  # the rebalance r2's join caused is over
        load = SteadyLoad(cfg, rate=args.rate)
        load.start()
        time.sleep(1)
        t_steady = settled(load, "the start")
        time.sleep(args.steady)
        t_kill = time.time()
        r1.kill()
        print(f"  SIGKILL r1 at +{t_kill - load.t_start:.1f}s", flush=True)
        time.sleep(after_kill)
        t_join = time.time()
        r3 = router("r3")
        procs.append(r3)
        r3.wait_for_log("assigned partitions", 90)
        print(f"  r3 joined at +{t_join - load.t_start:.1f}s", flush=True)
        time.sleep(2)
        settled(load, "r3 joined")
        time.sleep(args.settle)
        t_term = time.time()
        r2.terminate(30)
        exited = time.time() - t_term
        print(f"  SIGTERM r2 at +{t_term - load.t_start:.1f}s (exited after {exited:.1f}s)", flush=True)
        time.sleep(args.after_term)
        load.finish()
        got = wait_committed(dsn, load.sent, timeout=90)
        commits, double = fetch_commits(dsn)
    finally:
        if load is not None and load.is_alive():
            load.finish()
        for p in reversed(procs):
            p.terminate(15)
        asyncio.run(drop_db(name))
        close_broker(broker)

    part = load.partition
    res = {
        "steady": window(commits, part, t_steady, t_kill - 2),
        "kill": window(commits, part, t_kill - 2, t_join),
        "join": window(commits, part, t_join, t_term - 1),
        "term": window(commits, part, t_term - 1, load.t_end + 1),
    }
    for k, w in res.items():
        print(f"  {k:6s}: {w['n']:6d} writes  p50 {w['p50_ms']:7.1f} ms  p99 {w['p99_ms']:7.1f} ms  "
              f"worst {w['worst_s']:6.2f} s  longest partition gap {w['gap_s']:5.2f} s (p{w['gap_partition']})  "
              f">1 s: {w['over_1s']}")
    unapplied = load.sent - got  # still in Kafka, not applied within 90 s of the end
    kill_ok = res["kill"]["worst_s"] <= session_s + 2
    term_ok = res["term"]["worst_s"] < TERM_GOAL_S
    print(f"sent {load.sent} ({load.sent / (load.t_end - load.t_start):.0f}/s, at most {load.behind_max} behind "
          f"schedule), committed {got}, not applied within 90 s {unapplied}, applied twice {double}, "
          f"delivery errors {len(load.errors)}")
    print(f"SIGKILL: worst {res['kill']['worst_s']:.2f} s = {res['kill']['worst_s'] / session_s:.2f} x session "
          f"timeout ({session_s:g} s); goal <= {session_s + 2:g} s: {'met' if kill_ok else 'MISSED'}")
    print(f"SIGTERM: worst {res['term']['worst_s']:.2f} s (steady p99 {res['steady']['p99_ms']:.0f} ms); "
          f"goal < {TERM_GOAL_S:g} s: {'met' if term_ok else 'MISSED'}")
    fields = {"bench": "takeover", "broker": broker.kind, "rate": f"{args.rate:.0f}", "session_s": f"{session_s:g}",
              "steady_p50_ms": f"{res['steady']['p50_ms']:.1f}", "steady_p99_ms": f"{res['steady']['p99_ms']:.1f}",
              "kill_worst_s": f"{res['kill']['worst_s']:.2f}", "kill_gap_s": f"{res['kill']['gap_s']:.2f}",
              "join_worst_s": f"{res['join']['worst_s']:.2f}",
              "term_worst_s": f"{res['term']['worst_s']:.2f}", "term_gap_s": f"{res['term']['gap_s']:.2f}",
              "sent": load.sent, "unapplied": unapplied, "double": double,
              "goals": "met" if kill_ok and term_ok else "missed"}
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()))
    return 0 if kill_ok and term_ok and unapplied == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
