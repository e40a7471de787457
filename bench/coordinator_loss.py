"""A router loses its group coordinator: produce -> row latency in the 30 s after the kill against the 30 s before.

Three Apache Kafka nodes (racks r0, r1, r2; RF 3, ``min.insync.replicas`` 2),
one region ``r1`` served by one real ``regionguard router`` subprocess
(``--no-health``: the region counts as closed, so every write goes direct), a
steady ``--rate`` writes/s (bench/steady.py: each row carries its send time,
a deferred trigger stamps its commit). The victim node is chosen before the
group exists (testkit ``embedded/coordinator.py``):

- ``--kill coordinator``: the node that coordinates the router's group, not the active controller;
- ``--kill controller``: the active KRaft controller, not the group's coordinator;
- ``--kill both``: one node that is both.

Every partition of ``rg.writes.r1`` has the victim as a replica but never as
its leader, so the router's partitions never move: what stalls is the group
(and, until the victim leaves the ISR, the high watermark). The victim is
SIGKILLed ``--before`` s after the pipeline settled, stays down ``--down`` s,
then comes back. Reported: p50/p99/worst of writes sent in the ``--window`` s
before the kill and in the ``--window`` s after it, their ratio, the longest
time no write was applied, the router's revocations, and every write checked
in the database (0 lost, 0 applied twice).

Broker and consumer settings are the knobs under study: ``--broker k=v``
(every node), ``--client k=v`` (``kafka.client``, every librdkafka client of the router).
Last line, machine-readable: ``RESULT bench=coordinator_loss kill=... after_p99_ms=... ...``

    python bench/coordinator_loss.py --kill coordinator --broker broker.session.timeout.ms=3000
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

from steady import (SteadyLoad, drop_db, fetch_commits, fresh_db, latencies, summarise,  # noqa: E402
                    wait_committed, wait_settled)

from confluent_kafka.admin import AdminClient  # noqa: E402

from regionguard.core.config import parse_config  # noqa: E402
from regionguard.core.kafka import ensure_topics, router_group, topic_configs  # noqa: E402
from regionguard_testkit.embedded import ServiceProcess  # noqa: E402
from regionguard_testkit.embedded import coordinator as co  # noqa: E402
from regionguard_testkit.embedded.kafka import ApacheKafka  # noqa: E402

REGION = "r1"
RACKS = ["r0", "r1", "r2"]


def settings(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"not key=value: {pair!r}")
        out[key.strip()] = value.strip()
    return out


def longest_quiet(commits: dict, since: float, until: float) -> float:
    """Longest time (s) in [since, until) in which no write at all was applied (writes sent in that span)."""
    ts = sorted(c for s, c in commits.values() if since <= s < until)
    ts = [since] + ts
    return max((b - a for a, b in zip(ts, ts[1:])), default=0.0)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kill", choices=["coordinator", "controller", "both"], default="coordinator")
    ap.add_argument("--rate", type=float, default=300.0, help="writes/s")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--window", type=float, default=30.0, help="seconds measured before and after the kill")
    ap.add_argument("--down", type=float, default=35.0, help="seconds the victim stays down")
    ap.add_argument("--broker", action="append", default=[], metavar="K=V", help="broker setting, every node")
    ap.add_argument("--client", action="append", default=[], metavar="K=V", help="kafka.client setting")
    ap.add_argument("--label", default="", help="a name for this run in the RESULT line")
    args = ap.parse_args()

    logs = Path(tempfile.gettempdir()) / "regionguard-bench"
    logs.mkdir(exist_ok=True)
    broker_conf = settings(args.broker)
    client_conf = settings(args.client)
    cluster = ApacheKafka(3, racks=RACKS, broker_config=broker_conf)
    cluster.start(timeout=300)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    nodes = [n.node_id for n in cluster.nodes]
    controller = cluster.active_controller(timeout=180)
    want = {"coordinator": lambda n: n != controller, "controller": lambda n: n != controller,
            "both": lambda n: n == controller}[args.kill]

    def doc_for(prefix: str, dsn: str = "postgresql://x@127.0.0.1/x") -> dict:
        return {"kafka": {"bootstrap": cluster.bootstrap, "topic_prefix": prefix, "partitions": args.partitions,
                          "replication_factor": 3, "min_insync_replicas": 2, "client": client_conf},
                "regions": {REGION: {"dsn": dsn}},
                "tables": {"users": {"key": ["id"], "version": "version"}},
                "metrics": {"port": 0}}

    prefix, coord = co.pick_prefix(admin, lambda p: router_group(parse_config(doc_for(p)), REGION), want)
    victim = controller if args.kill == "controller" else coord
    name = f"rg_bench_coordloss_{uuid.uuid4().hex[:8]}"
    dsn = asyncio.run(fresh_db(name))
    doc = doc_for(prefix, dsn)
    cfg = parse_config(doc)
    group = router_group(cfg, REGION)
    writes = cfg.topic("writes", REGION)
    co.create_led_away(admin, writes, args.partitions, nodes, victim, config=topic_configs(cfg)[writes])
    ensure_topics(cfg)
    cfg_path = logs / f"coordloss-{prefix.strip('.')}.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    print(f"Apache Kafka x3 {cluster.bootstrap}; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"{args.rate:.0f} writes/s, {args.partitions} partitions led by {sorted(set(co.leaders(admin, writes).values()))}; "
          f"controller {controller}, group {group} coordinator (predicted) {coord}; victim node {victim} ({args.kill})",
          flush=True)
    print(f"  broker: {broker_conf or 'defaults'}; client: {client_conf or 'defaults'}", flush=True)

    env = {**os.environ, "KAFKA_BOOTSTRAP": cluster.bootstrap}
    router = ServiceProcess("coordloss-router", ["router", "--config", str(cfg_path), "--no-health",
                                                 "--instance", "a", "--metrics-port", "0"], env=env, log_dir=logs)
    load = None
    t_kill = t_back = 0.0
    try:
        router.start()
        router.wait_for_log("assigned partitions", 90)
        actual = co.coordinator(admin, group)
        if actual != coord:
            raise SystemExit(f"the group's coordinator is node {actual}, not {coord} as predicted")
        load = SteadyLoad(cfg, region=REGION, rate=args.rate)
        load.start()
        t_settled = wait_settled(dsn, load, timeout=90)
        if t_settled is None:
            print("  WARNING: not keeping up 90 s after the start; going on", flush=True)
        time.sleep(args.window)
        t_kill = time.time()
        cluster.kill_node(victim)
        print(f"  SIGKILL node {victim} at +{t_kill - load.t_start:.1f}s", flush=True)
        time.sleep(args.down)
        t_back = time.time()
        cluster.start_node(victim)
        print(f"  node {victim} back at +{t_back - load.t_start:.1f}s "
              f"(came back after {time.time() - t_back:.1f}s)", flush=True)
        time.sleep(5)
        load.finish()
        got = wait_committed(dsn, load.sent, timeout=90)
        commits, double = fetch_commits(dsn)
    finally:
        if load is not None and load.is_alive():
            load.finish()
        router.terminate(15)
        asyncio.run(drop_db(name))
        cluster.close()

    before = summarise(latencies(commits, t_kill - args.window, t_kill))
    after = summarise(latencies(commits, t_kill, t_kill + args.window))
    quiet = longest_quiet(commits, t_kill, t_kill + args.window)
    text = router.log_text()
    revoked = text.count("revoked partitions")
    lost = load.sent - got
    for label, s in (("before", before), ("after", after)):
        print(f"  {label:6s}: {s['n']:6d} writes  p50 {s['p50']:8.1f} ms  p99 {s['p99']:8.1f} ms  "
              f"worst {s['max'] / 1000:6.2f} s", flush=True)
    ratio = after["p99"] / before["p99"] if before["p99"] else float("nan")
    print(f"after/before p99 {ratio:.1f}x; no write applied for {quiet:.2f} s after the kill; "
          f"router revocations {revoked}; sent {load.sent}, lost {lost}, applied twice {double}, "
          f"delivery errors {len(load.errors)}")
    fields = {"bench": "coordinator_loss", "label": args.label or "-", "kill": args.kill, "victim": victim,
              "rate": f"{args.rate:.0f}", "before_p50_ms": f"{before['p50']:.0f}", "before_p99_ms": f"{before['p99']:.0f}",
              "after_p50_ms": f"{after['p50']:.0f}", "after_p99_ms": f"{after['p99']:.0f}",
              "after_worst_ms": f"{after['max']:.0f}", "p99_ratio": f"{ratio:.1f}", "quiet_s": f"{quiet:.2f}",
              "revocations": revoked, "sent": load.sent, "lost": lost, "double": double}
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
    return 0 if lost == 0 and double == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
