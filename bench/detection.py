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

Heal -> closed after outages of several lengths (``--outages``, default 5, 30
and 120 s; ``--long`` adds 600 s): ``--heal-regions`` regions (default 4, each a
database behind its own proxy) go down together, half of them ``blackhole``,
half ``refuse`` (new connections refused while live ones keep answering: the
hard case for a false close), and are healed one by one at random offsets
(0-2 s) after the outage length. Two health services watch them at the same
time, on separate topic prefixes: the default config, and a *baseline* with
``breaker.recovery_probes: 0`` (only the open wait, which doubles on every
failed half-open trial, up to ``open_wait_max_s``: the behaviour before issue
12). Per outage length: heal -> ``closed`` record received here, median and
p99 (nearest rank; with few samples that is the max) for both, the ratio of
the medians (both measured in the same run, on the same faults, so machine
noise hits both), and false closes (a ``closed`` record of a region between
its fault and its heal).

Targets (default config): detection median <= 1.0 s, p99 <= 1.5 s; 0 false opens;
heal -> closed median <= 2 s, p99 <= 5 s, 0 false closes, for every outage length.
Exit code 1 when a target is missed.

    python bench/detection.py                   # 20 trials per fault + 60 s flapping + heal after 5/30/120 s
    python bench/detection.py --trials 5 --duration 0 --faults blackhole --outages none
    python bench/detection.py --faults none --duration 0 --outages 5,30,120 --long   # heal only, + 600 s
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
from regionguard_testkit.embedded import Broker, LocalRegions, PgCluster, ServiceProcess, regions_config

TARGET_MEDIAN, TARGET_P99 = 1.0, 1.5
HEAL_MEDIAN, HEAL_P99 = 2.0, 5.0  # heal -> closed, any outage length (issue 12)


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


def outage_trials(length: float, override: int | None) -> int:
    """Trials per outage length: about a minute of outages for short ones, one for long ones."""
    return override if override else max(1, min(4, round(60 / length)))


def heal_after_outages(lengths: list[float], trials: int | None, n_regions: int, broker, work: Path) -> dict:
    """Heal -> closed per outage length, the default config against ``recovery_probes: 0`` in the same run."""
    names = [f"h{i}" for i in range(n_regions)]
    lr = LocalRegions(names, prefix=f"bh{uuid.uuid4().hex[:6]}")
    variants = {"new": {}, "baseline": {"recovery_probes": 0}}
    procs: dict[str, ServiceProcess] = {}
    watches: dict[str, Watch] = {}
    out: dict = {"regions": n_regions, "lengths": []}
    try:
        lr.create()
        for v, breaker in variants.items():
            path = work / f"heal-{v}.yaml"
            regions_config(lr, broker.bootstrap, path, topic_prefix=f"bh{v[0]}{uuid.uuid4().hex[:8]}.",
                           overrides={"metrics": {"port": 0}, "breaker": breaker})
            cfg = load_config(path)
            if v == "new":
                b = cfg.breaker
                print(f"heal bench: {n_regions} regions; new: recovery_probes {b.recovery_probes}, half_open_calls "
                      f"{b.half_open_calls}, open wait {b.open_wait_s}s x{b.open_wait_multiplier} up to "
                      f"{b.open_wait_max_s}s; baseline: recovery_probes 0", flush=True)
            procs[v] = ServiceProcess(f"health-heal-{v}", ["health", "--config", str(path), "--observer",
                                                           f"bench-{v}", "--metrics-port", "0"], log_dir=work)
            watches[v] = Watch(cfg)
        for v, proc in procs.items():
            proc.wait_for_log("is the leader", 60)
            watches[v].view.start()
            watches[v].view.wait_ready(10)

        def all_closed(timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if all(w.current(r) == "closed" and w.view.state(r) is not None for w in watches.values()
                       for r in names):
                    return True
                time.sleep(0.1)
            return False

        if not all_closed(60):
            raise SystemExit(f"heal bench: regions never all closed; see {work}")
        for length in lengths:
            res = {"outage_s": length, "new": [], "baseline": [], "false_closes": {"new": 0, "baseline": 0},
                   "load": [round(os.getloadavg()[0], 2)]}
            for trial in range(outage_trials(length, trials)):
                if not all_closed(90):
                    raise SystemExit(f"heal bench: regions not closed before a {length:g}s trial; see {work}")
                time.sleep(random.uniform(0.3, 1.0))  # random phase against the probe schedule
                t0 = time.monotonic()
                for i, r in enumerate(names):
                    lr.proxy(r).set_mode("blackhole" if (i + trial) % 2 == 0 else "refuse")
                healed: dict[str, float] = {}
                for at, r in sorted((t0 + length + random.uniform(0.0, 2.0), r) for r in names):
                    time.sleep(max(0.0, at - time.monotonic()))
                    lr.proxy(r).set_mode("pass")
                    healed[r] = time.monotonic()
                for v, w in watches.items():
                    for r in names:
                        if w.wait_for(r, "open", t0, 0) is None:
                            raise SystemExit(f"heal bench ({v}): {r} never opened during a {length:g}s outage")
                        res["false_closes"][v] += w.count(r, "closed", t0, healed[r])
                        t_closed = w.wait_for(r, "closed", healed[r], 90)
                        if t_closed is None:
                            raise SystemExit(f"heal bench ({v}): {r} not closed 90 s after its heal")
                        res[v].append(t_closed - healed[r])
                n, b = res["new"][-n_regions:], res["baseline"][-n_regions:]
                print(f"  outage {length:5g}s trial {trial + 1}: heal -> closed new "
                      f"{' '.join(f'{x:.2f}' for x in n)} | baseline {' '.join(f'{x:.2f}' for x in b)}", flush=True)
            res["load"].append(round(os.getloadavg()[0], 2))
            out["lengths"].append(res)
        return out
    finally:
        for w in watches.values():
            w.view.stop()
        for proc in procs.values():
            proc.terminate(10)
        lr.drop()


def print_heal(heal: dict) -> bool:
    ok = True
    print(f"\nheal -> closed ({heal['regions']} regions per trial; baseline = breaker.recovery_probes 0, same run)")
    print("outage  samples |  new median    p99    max | baseline median    p99    max | ratio | false closes "
          "new/base | load")
    for r in heal["lengths"]:
        n, b = r["new"], r["baseline"]
        good = statistics.median(n) <= HEAL_MEDIAN and pct(n, 99) <= HEAL_P99 and r["false_closes"]["new"] == 0
        ok &= good
        print(f"{r['outage_s']:5g}s {len(n):8d} | {statistics.median(n):11.3f} {pct(n, 99):6.3f} {max(n):6.3f} |"
              f" {statistics.median(b):15.3f} {pct(b, 99):6.3f} {max(b):6.3f} |"
              f" {statistics.median(n) / statistics.median(b):5.2f} | {r['false_closes']['new']:8d}/"
              f"{r['false_closes']['baseline']:<8d} | {r['load'][0]:.1f}-{r['load'][1]:.1f}"
              f"  {'ok' if good else 'MISSED'}")
    print(f"targets: heal -> closed median <= {HEAL_MEDIAN}s, p99 <= {HEAL_P99}s, 0 false closes: "
          f"{'met' if ok else 'MISSED'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--faults", default="blackhole,refuse,crash", help="comma list; 'none' for flapping only")
    ap.add_argument("--duration", type=float, default=60.0, help="flapping run in seconds (0: skip)")
    ap.add_argument("--loss", type=float, default=0.1, help="probability of a lost (2 s delayed) reply chunk")
    ap.add_argument("--outages", default="5,30,120",
                    help="heal -> closed after outages of these lengths in seconds, comma list ('none': skip)")
    ap.add_argument("--long", action="store_true", help="also a 600 s outage (about 11 minutes more)")
    ap.add_argument("--outage-trials", type=int, default=None,
                    help="trials per outage length (default: 4 for 5 s, 2 for 30 s, 1 for 120 s and longer)")
    ap.add_argument("--heal-regions", type=int, default=4, help="regions taken down together per outage trial")
    ap.add_argument("--json", metavar="PATH", help="also write raw samples as JSON")
    args = ap.parse_args()
    faults = [f for f in args.faults.split(",") if f and f != "none"]
    lengths = [float(x) for x in args.outages.split(",") if x and x != "none"] + ([600.0] if args.long else [])

    work = Path(tempfile.mkdtemp(prefix="rg-bench-detection-"))
    broker = Broker.from_env(log_path=work / "tansu.log")
    broker.start()
    if not faults and args.duration <= 0:  # heal -> closed only
        print(f"broker {broker.bootstrap} ({broker.kind}), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
              flush=True)
        try:
            heal = heal_after_outages(lengths, args.outage_trials, args.heal_regions, broker, work) if lengths \
                else None
            ok = print_heal(heal) if heal else True
            if args.json:
                Path(args.json).write_text(json.dumps({"heal": heal}, indent=1))
            return 0 if ok else 1
        finally:
            broker.stop()
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
        heal = heal_after_outages(lengths, args.outage_trials, args.heal_regions, broker, work) if lengths else None

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
        if heal:
            ok &= print_heal(heal)
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results, "flapping": flap, "heal": heal}, indent=1))
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
