"""A local setup to drill against: ``regionguard drill`` and ``regionguard status`` need one running.

Starts, all real and local: the embedded Kafka-protocol broker (or
``$KAFKA_BOOTSTRAP``), three databases (eu, us, ap) on the local PostgreSQL
(127.0.0.1:5432, user postgres) each behind a fault proxy, the health, router,
replayer and features services as processes, a drill control server for the
proxies, and a small steady write load. Then it prints the commands to run in
another terminal and waits for Ctrl-C::

    python examples/drill_setup.py [--out DIR] [--rate 50]

    # another terminal
    regionguard status --config DIR/config.yaml
    regionguard drill  --config DIR/config.yaml --region eu --fault blackhole --for 30s

Everything is removed on exit (databases dropped, processes stopped).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from regionguard.core.kafka import producer_conf
from regionguard_testkit.embedded import Broker, LocalRegions, ServiceProcess, make_config
from regionguard_testkit.embedded.drillctl import ControlServer


def traffic(bootstrap: str, prefix: str, regions: list[str], rate: float, stop: threading.Event) -> None:
    """``rate`` upserts per second per region, keyed so each row's versions stay in order."""
    p = Producer(producer_conf(bootstrap, **{"linger.ms": 5}))
    version = 0
    while not stop.is_set():
        version += 1
        for region in regions:
            for i in range(max(1, int(rate // 10))):
                uid = (version * 7 + i) % 500
                ev = {"id": str(uuid.uuid4()), "region": region, "table": "users", "op": "upsert",
                      "key": {"id": uid}, "data": {"name": f"user {uid}", "version": version}}
                try:
                    p.produce(f"{prefix}writes.{region}", key=f"users/{uid}".encode(), value=json.dumps(ev).encode())
                except BufferError:
                    p.poll(0.1)
        p.poll(0)
        stop.wait(0.1)
    p.flush(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="directory for config.yaml and service logs")
    ap.add_argument("--rate", type=float, default=50.0, help="writes per second per region (0: none)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="regionguard-drill-"))
    out.mkdir(parents=True, exist_ok=True)

    broker = Broker.from_env(log_path=out / "broker.log").start()
    regions = LocalRegions(("eu", "us", "ap")).create()
    procs: list[ServiceProcess] = []
    ctl = None
    stop = threading.Event()
    try:
        regions.setup_schema()
        cf = make_config(regions, broker.bootstrap, out / "config.yaml", partitions=6,
                         overrides={"features": {"recommendations": {"off_when": ["open", "half_open", "stale"]},
                                                 "checkout": {"critical": True}},
                                    "health": {"leader_session_timeout_s": 6.0}})  # Kafka's minimum
        cfg = cf.load()
        ctl = ControlServer({r: regions.proxy(r) for r in regions.names}, cfg=cfg).start()
        for svc in ("health", "router", "replayer", "features"):
            procs.append(ServiceProcess(svc, cf.cli_args(svc), log_dir=out))
        procs[0].wait_for_log("is the leader", 60)
        if args.rate > 0:
            threading.Thread(target=traffic, args=(cf.bootstrap, cf.prefix, list(regions.names), args.rate, stop),
                             daemon=True).start()
        print(f"local setup ready (broker {broker.bootstrap}, regions {', '.join(regions.names)}, "
              f"{args.rate:g} writes/s per region)")
        print(f"  config:  {cf.path}\n  logs:    {out}\n  control: {ctl.url} (state file {ctl.state_file})")
        print("in another terminal:")
        print(f"  regionguard status --config {cf.path}")
        print(f"  regionguard drill --config {cf.path} --region eu --fault blackhole --for 30s")
        print("Ctrl-C stops everything.", flush=True)
        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # SIGINT explicitly: a background job may ignore it
            signal.signal(sig, lambda *_: done.set())
        try:
            while not done.is_set() and all(p.alive for p in procs):
                done.wait(1.0)
        except KeyboardInterrupt:
            pass
        dead = [p for p in procs if not p.alive]
        if dead:
            print(f"{dead[0].name} exited; log tail:\n{dead[0].log_tail()}", file=sys.stderr)
            return 1
        return 0
    finally:
        stop.set()
        for p in reversed(procs):
            p.terminate()
        if ctl is not None:
            ctl.stop()
        regions.drop()
        broker.stop()
        time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
