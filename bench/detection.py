"""Outage detection time and flapping of the health service, with its default config.

A real ``regionguard health`` subprocess (default health/breaker settings)
watches two regions: ``px``, a database on the local PostgreSQL behind a
fault proxy, and ``pgc``, a private PostgreSQL cluster that can really crash.
This process follows ``<prefix>region-state`` with a RegionStateView and
times, per trial:

- detection: fault injected -> ``open`` record received here;
- recovery: fault healed -> ``closed`` record received here (this includes
  what is left of the breaker's open wait, ``breaker.open_wait_s``).

Faults: ``blackhole`` (proxy accepts TCP, never answers), ``refuse`` (proxy
stops listening: new connections refused, live ones keep working),
``crash`` (``pg_ctl stop -m immediate`` of the private cluster; healed when
``pg_ctl start`` returns after crash recovery).

Flapping: the proxy delays 10% of server->client chunks by 2 s (``flaky``,
longer than the probe timeout, i.e. lost probes) for ``--duration`` seconds;
every ``open`` record is a false open. Target 0.

Targets (default config): detection median <= 1.0 s, p99 <= 1.5 s; 0 false opens.
Exit code 1 when a target is missed.

    python bench/detection.py                   # 20 trials per fault + 60 s flapping
    python bench/detection.py --trials 5 --duration 0 --faults blackhole
    make detection-long                         # 600 s flapping run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from regionguard.core.config import load_config
from regionguard.core.stateview import RegionStateView
from regionguard.embedded import Broker, LocalRegions, PgCluster, ServiceProcess, regions_config

TARGET_MEDIAN, TARGET_P99 = 1.0, 1.5


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


class Watch:
    """Region-state changes as seen by a consumer, with local receive times."""

    def __init__(self, cfg):
        self.cond = threading.Condition()
        self.changes: list[tuple[float, str, str, str]] = []  # (t, region, state, reason)
        self.view = RegionStateView(cfg, on_change=self._on_change)

    def _on_change(self, old, new):
        with self.cond:
            self.changes.append((time.monotonic(), new.region, new.state.value, new.reason))
            self.cond.notify_all()

    def wait_for(self, region: str, state: str, after: float, timeout: float) -> float | None:
        """Receive time of the first ``state`` record of ``region`` after ``after``."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, r, s, _ in self.changes:
                    if t >= after and r == region and s == state:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def current(self, region: str) -> str:
        st = self.view.state(region)
        return st.state.value if st else "closed"

    def count(self, region: str, state: str, since: float, until: float) -> int:
        with self.cond:
            return sum(1 for t, r, s, _ in self.changes if r == region and s == state and since <= t <= until)


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def run_trials(fault: str, n: int, watch: Watch, lr: LocalRegions, cluster: PgCluster) -> dict:
    region = "pgc" if fault == "crash" else "px"
    detect, recover, heal_cost = [], [], []
    for i in range(n):
        if watch.current(region) != "closed" and watch.wait_for(region, "closed", 0, 60) is None:
            raise SystemExit(f"{fault}: region {region} not closed before trial {i + 1}")
        time.sleep(random.uniform(0.3, 0.8))  # random phase against the probe schedule
        t0 = time.monotonic()
        if fault == "crash":
            cluster.crash()
        else:
            lr.proxy(region).set_mode(fault)
        t_open = watch.wait_for(region, "open", t0, 15)
        if t_open is None:
            raise SystemExit(f"{fault}: no open record within 15 s (trial {i + 1})")
        detect.append(t_open - t0)
        time.sleep(random.uniform(0.1, 0.4))
        h0 = time.monotonic()
        if fault == "crash":
            cluster.start()
        else:
            lr.proxy(region).set_mode("pass")
        t1 = time.monotonic()
        heal_cost.append(t1 - h0)
        t_closed = watch.wait_for(region, "closed", t1, 60)
        if t_closed is None:
            raise SystemExit(f"{fault}: no closed record within 60 s after heal (trial {i + 1})")
        recover.append(t_closed - t1)
        print(f"  {fault:9s} trial {i + 1:2d}: open after {detect[-1]:.3f}s, closed {recover[-1]:.3f}s after heal",
              flush=True)
    return {"fault": fault, "detect": detect, "recover": recover, "heal_cost": heal_cost}


def flapping(duration: float, watch: Watch, lr: LocalRegions, metrics_port: int, p: float) -> dict:
    before = scrape(metrics_port)
    t0 = time.monotonic()
    lr.proxy("px").set_mode("flaky", p=p, delay_s=2.0)
    next_report = t0 + 60
    while time.monotonic() < t0 + duration:
        time.sleep(0.5)
        if time.monotonic() >= next_report:
            next_report += 60
            print(f"  flapping: {time.monotonic() - t0:.0f}s, false opens so far "
                  f"{watch.count('px', 'open', t0, time.monotonic())}", flush=True)
    t1 = time.monotonic()
    lr.proxy("px").set_mode("pass")
    after = scrape(metrics_port)
    probes = after['regionguard_probe_latency_seconds_count{region="px"}'] - \
        before['regionguard_probe_latency_seconds_count{region="px"}']
    failed = sum(v - before.get(k, 0.0) for k, v in after.items()
                 if k.startswith("regionguard_probe_failures_total{") and 'region="px"' in k)
    return {"duration_s": round(t1 - t0, 1), "p": p, "probes": int(probes), "failed_probes": int(failed),
            "false_opens": watch.count("px", "open", t0, t1 + 1.0),
            "half_opens": watch.count("px", "half_open", t0, t1 + 1.0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--faults", default="blackhole,refuse,crash", help="comma list; 'none' for flapping only")
    ap.add_argument("--duration", type=float, default=60.0, help="flapping run in seconds (0: skip)")
    ap.add_argument("--loss", type=float, default=0.1, help="probability of a lost (2 s delayed) reply chunk")
    ap.add_argument("--json", metavar="PATH", help="also write raw samples as JSON")
    args = ap.parse_args()
    faults = [f for f in args.faults.split(",") if f and f != "none"]

    work = Path(tempfile.mkdtemp(prefix="rg-bench-detection-"))
    broker = Broker.from_env(log_path=work / "tansu.log")
    broker.start()
    lr = LocalRegions(["px"], prefix=f"bd{uuid.uuid4().hex[:6]}")
    cluster = PgCluster("bench-detect")
    health = None
    watch = None
    try:
        lr.create()
        cluster.start()
        cfg_path = work / "regionguard.yaml"
        regions_config({"px": lr.dsn("px"), "pgc": cluster.dsn}, broker.bootstrap, cfg_path,
                       topic_prefix=f"bd{uuid.uuid4().hex[:8]}.", overrides={"metrics": {"port": 0}})
        cfg = load_config(cfg_path)
        h, b = cfg.health, cfg.breaker
        print(f"health defaults: interval {h.interval_s}s, timeout {h.timeout_s}s, fresh connection every "
              f"{h.fresh_connection_every}; breaker: {b.consecutive_failures} consecutive failures, "
              f"window {b.window}/min {b.min_calls} at {b.failure_rate:.0%}, open wait {b.open_wait_s}s "
              f"(x{b.open_wait_multiplier}, max {b.open_wait_max_s}s), {b.half_open_calls} half-open calls")
        print(f"broker {broker.bootstrap} ({broker.kind}), "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", flush=True)
        health = ServiceProcess("health-bench", ["health", "--config", str(cfg_path), "--observer", "bench",
                                                 "--metrics-port", "0"], log_dir=work)
        metrics_port = int(health.wait_for_log(r"metrics port (\d+)", 30).group(1))
        health.wait_for_log("is the leader", 60)
        watch = Watch(cfg)
        watch.view.start()
        watch.view.wait_ready(10)
        for region in ("px", "pgc"):
            if watch.wait_for(region, "closed", 0, 30) is None and watch.current(region) != "closed":
                raise SystemExit(f"region {region} never reported closed; see {health.log_path}")

        results = [run_trials(f, args.trials, watch, lr, cluster) for f in faults]
        flap = flapping(args.duration, watch, lr, metrics_port, args.loss) if args.duration > 0 else None

        ok = True
        print("\nfault      trials | detect median   p99    max | heal->closed median   p99   (heal step)")
        for r in results:
            d, c = r["detect"], r["recover"]
            good = statistics.median(d) <= TARGET_MEDIAN and pct(d, 99) <= TARGET_P99
            ok &= good
            print(f"{r['fault']:10s} {len(d):6d} | {statistics.median(d):13.3f} {pct(d, 99):6.3f} {max(d):6.3f} |"
                  f" {statistics.median(c):19.3f} {pct(c, 99):6.3f}   ({statistics.median(r['heal_cost']):.3f}s)"
                  f"  {'ok' if good else 'MISSED'}")
        if flap:
            ok &= flap["false_opens"] == 0
            loss = flap["failed_probes"] / flap["probes"] if flap["probes"] else 0.0
            print(f"flapping: {flap['duration_s']:.0f}s with {flap['p']:.0%} lost reply chunks: "
                  f"{flap['failed_probes']} of {flap['probes']} probes failed ({loss:.1%}); "
                  f"false opens: {flap['false_opens']}  {'ok' if flap['false_opens'] == 0 else 'MISSED'}")
        print(f"targets: detection median <= {TARGET_MEDIAN}s, p99 <= {TARGET_P99}s, 0 false opens: "
              f"{'met' if ok else 'MISSED'}")
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results, "flapping": flap}, indent=1))
        return 0 if ok else 1
    finally:
        if watch is not None:
            watch.view.stop()
        if health is not None:
            health.terminate(10)
        cluster.destroy()
        lr.drop()
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
