"""The regional chaos run (issue 26): three regions, whole-region faults under load from all three.

``python -m tests.chaos.regional`` (``make chaos-regional``) starts the bed
(:class:`regionguard_testkit.regional.bed.RegionalBed`: r0, r1, r2 on 127.0.1.1-3, one Kafka node,
database and set of services per region, producers in every region writing for every region's
users), lets the load settle, then runs its events one after the other:

- ``full``: a full regional event -- the region's broker node, services and producers SIGKILLed and
  its database blackholed at one instant, everything brought back after ``--down`` seconds;
- ``partition``: nftables drops all traffic between the region and the other two, both ways, for
  ``--partition`` seconds (every process keeps running), then heals;
- ``oneway``: the same, but only what the region sends is dropped;
- ``flap``: the partition cut and healed every 2 s for ``--partition`` seconds;
- ``controller``: Kafka's own failover -- a full regional event of whichever region's node is the
  active KRaft controller at that moment (the region named in the schedule is replaced);

and after each waits until the region has converged (:mod:`regionguard_testkit.regional.converge`).
Then the producers stop, the run waits for quiescence and the checker compares every region with
the producers' journals. The report ends with one line::

    REGIONAL events=<n> lost=<n> duplicates=<n> stale=<n> survivors_p99_ms=<n> survivors_worst_ms=<n> converge_s=<n>

``survivors_*``: produce-to-apply latency of the writes for the other regions sent during an event
(the worst event's figure); ``converge_s``: the slowest convergence.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from regionguard_testkit.embedded.net import run_sync
from regionguard_testkit.regional.bed import RegionalBed
from regionguard_testkit.regional.converge import Convergence, wait_applied, wait_converged, wait_in_sync
from regionguard_testkit.verify import check, wait_quiescent
from regionguard_testkit.verify.checker import CheckResult, QuiesceResult, percentile, produce_to_apply, read_region

EVENT_KINDS = ("full", "partition", "oneway", "flap", "controller")
FLAP_S = 2.0


@dataclass
class Event:
    kind: str
    region: str
    down_s: float
    start: float = 0.0                 # unix time of the fault
    end: float = 0.0                   # unix time of the return / heal
    converge: Convergence | None = None
    in_sync_s: float | None = None     # from the return until every partition had its full ISR again
    survivors: dict[str, list[float]] = field(default_factory=dict)   # region -> latencies (s)
    watch: Path | None = None          # the watcher's timeline (--watch)
    story: str = ""                    # where the seconds went, per second (regional_story.py)

    def p99_ms(self) -> int:
        return round(1000 * max((percentile(v, 0.99) for v in self.survivors.values()), default=0.0))

    def worst_ms(self) -> int:
        return round(1000 * max((max(v) for v in self.survivors.values() if v), default=0.0))

    def row(self) -> str:
        c = self.converge
        conv = (f"converged {c.seconds:.1f} s (writes {c.applied_s and round(c.applied_s, 1)} s, held replayed "
                f"{c.replayed_s and round(c.replayed_s, 1)} s, all direct {c.direct_s and round(c.direct_s, 1)} s; "
                f"{c.waited_writes} writes waited)" if c and c.ok else f"NOT converged: {c.left if c else '-'}")
        lat = ", ".join(f"{r} p50 {1000 * percentile(v, 0.5):.0f} p99 {1000 * percentile(v, 0.99):.0f} worst "
                        f"{1000 * max(v, default=0):.0f} ms ({len(v)} writes)" for r, v in sorted(self.survivors.items()))
        isr = f"{self.in_sync_s:.1f} s" if self.in_sync_s is not None else "not within the wait"
        return (f"{self.kind} {self.region} for {self.end - self.start:.1f} s: survivors {lat}; {conv}; "
                f"Kafka fully in sync {isr} after the return")


@dataclass
class RegionalReport:
    events: list[Event]
    quiesce: QuiesceResult
    check: CheckResult
    seconds: float

    @property
    def converge_s(self) -> float:
        return max((e.converge.seconds for e in self.events if e.converge), default=0.0)

    @property
    def converged(self) -> bool:
        return all(e.converge is not None and e.converge.ok for e in self.events)

    @property
    def ok(self) -> bool:
        return self.quiesce.ok and self.check.ok and self.converged

    def line(self) -> str:
        c = self.check
        return (f"REGIONAL events={len(self.events)} lost={c.lost} duplicates={c.duplicates} stale={c.stale_rows} "
                f"survivors_p99_ms={max((e.p99_ms() for e in self.events), default=0)} "
                f"survivors_worst_ms={max((e.worst_ms() for e in self.events), default=0)} "
                f"converge_s={self.converge_s:.1f}")

    def text(self) -> str:
        out = ["regional run: events"]
        out += [f"  {i}. {e.row()}" + (f"\n{e.story}" if e.story else "") for i, e in enumerate(self.events, 1)]
        out += [f"quiescence: {'ok' if self.quiesce.ok else 'NOT reached: ' + self.quiesce.detail} "
                f"after {self.quiesce.seconds:.0f} s", self.check.report(),
                f"run {self.seconds:.0f} s -> {'PASS' if self.ok else 'FAIL'}", self.line()]
        return "\n".join(out)


class RegionalRun:
    def __init__(self, workdir: Path, events: list[Event], *, rate: float = 100.0, warmup_s: float = 8.0,
                 settle_s: float = 5.0, partitions: int = 6, seed: int = 1, converge_timeout: float = 240.0,
                 log: Callable[[str], None] | None = None, broker_config: dict[str, str] | None = None,
                 client: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.events = events
        self.warmup_s, self.settle_s, self.converge_timeout = warmup_s, settle_s, converge_timeout
        self.t0 = time.monotonic()
        self._log = log or (lambda s: print(s, flush=True))
        cut = any(e.kind not in ("full", "controller") for e in events)
        self.bed = RegionalBed(workdir, rate=rate, partitions=partitions, seed=seed, log=self.log, partitions_cut=cut,
                               broker_config=broker_config, client=client)
        self._stop = threading.Event()
        self.png: Path | None = None       # draw the timeline there at the end (--png)
        self.watch = False                 # record leaders, ISRs, coordinators, router modes per event (--watch)

    def log(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s {time.strftime('%H:%M:%S')}] {msg}"
        self._log(line)
        with open(self.workdir / "regional.log", "a") as fh:
            fh.write(line + "\n")

    def _hold(self, seconds: float) -> None:
        """A fault's duration (or the load's warm-up): time passes under load, nothing is awaited."""
        self._stop.wait(seconds)

    def _event(self, e: Event) -> None:
        bed = self.bed
        if e.kind == "controller":
            assert bed.kafka is not None
            e.region = bed.names[bed.kafka.active_controller() - 1]
            self.log(f"the active controller is {e.region}'s node")
        self.log(f"preferred leaders: {bed.prefer_leaders()} partitions moved back")
        watcher = None
        if self.watch:
            e.watch = self.workdir / f"watch-{len([x for x in self.events if x.watch])}-{e.kind}-{e.region}.jsonl"
            watcher = bed.watch(next(r for r in bed.names if r != e.region), e.watch)
            self._hold(2.0)   # its first full picture before the fault
        if e.kind in ("full", "controller"):
            e.start = bed.kill_region(e.region)
            self.log(f"full regional event: {e.region}'s broker node, services and producer SIGKILLed, "
                     f"database blackholed")
            self._hold(e.down_s)
            e.end = bed.restore_region(e.region)
            self.log(f"{e.region} back: database reachable, node, services and a new producer started")
        elif e.kind in ("partition", "oneway"):
            e.start = bed.cut(e.region, direction="both" if e.kind == "partition" else "out")
            self.log(f"{e.kind}: {e.region} cut off from the others"
                     f"{'' if e.kind == 'partition' else ' (only what it sends is dropped)'}")
            self._hold(e.down_s)
            e.end = bed.heal_partition()
            self.log(f"{e.region}: partition healed")
        elif e.kind == "flap":
            e.start = time.time()
            cuts = 0
            while time.time() - e.start < e.down_s:
                bed.cut(e.region)
                cuts += 1
                self._hold(FLAP_S)
                bed.heal_partition()
                self._hold(FLAP_S)
            e.end = time.time()
            self.log(f"{e.region}: flapped {cuts} times ({FLAP_S:g} s cut, {FLAP_S:g} s healed)")
        else:
            raise ValueError(f"unknown event kind {e.kind!r}")
        e.converge = wait_converged(bed, e.region, e.end, timeout=self.converge_timeout)
        self.log(f"{e.region}: {'converged' if e.converge.ok else 'NOT converged'} {e.converge}")
        # the next event only on a cluster at rest: every partition with its full ISR
        in_sync = wait_in_sync(bed, timeout=self.converge_timeout)
        e.in_sync_s = in_sync - e.end if in_sync is not None else None
        self.log(f"Kafka fully in sync: {e.in_sync_s}")
        if watcher is not None:
            watcher.terminate(10)
        self._hold(self.settle_s)

    def run(self, *, keep: bool = False) -> RegionalReport:
        bed = self.bed
        ok = False
        try:
            self.log(f"starting the bed in {self.workdir}")
            bed.start()
            self.log(f"Kafka {bed.kafka.bootstrap}; services and producers started")
            self.log(f"ready after {bed.wait_ready():.1f} s")
            self._hold(self.warmup_s)
            for e in self.events:
                self._event(e)
            bed.stop_producers()
            model = bed.model()
            self.log(f"producers stopped: {model.counts()}; waiting for every acknowledged write")
            left = wait_applied(bed, model, timeout=180)
            self.log(f"{left} acknowledged writes not applied; waiting for quiescence")
            q = wait_quiescent(bed.cfg, model, bed.direct_dsns, timeout=180)
            self.log(f"quiescence: {q}")
            res = check(bed.cfg, model, bed.direct_dsns)
            snaps = {r: run_sync(read_region(r, d, with_times=True)) for r, d in bed.direct_dsns.items()}
            for e in self.events:
                survivors = [r for r in bed.names if r != e.region]
                e.survivors = produce_to_apply(model, snaps, survivors, e.start, e.end)
                if e.watch is not None:
                    from regionguard_testkit.regional.watch import load

                    from .regional_story import story

                    e.story = story(load(e.watch), bed.journals, {r: s.applied_times for r, s in snaps.items()},
                                    bed.node_of(e.region), e.start, e.end)
            report = RegionalReport(self.events, q, res, time.monotonic() - self.t0)
            if self.png is not None:
                from .regional_timeline import draw

                self.log(f"timeline: {draw(self.png, model, snaps, self.events)}")
            ok = report.ok
            return report
        finally:
            if not ok:
                self.log(bed.logs_tail(15))
            bed.close(keep=keep and not ok)


def default_events(down_s: float, partition_s: float, kinds: tuple[str, ...] = ("full", "partition")) -> list[Event]:
    """One event of each of ``kinds``, each on another region (r0, r1, r2, r0, ...); ``kind:rX`` names it."""
    regions = ("r0", "r1", "r2")
    out = []
    for i, spec in enumerate(kinds):
        k, _, region = spec.partition(":")
        out.append(Event(k, region or regions[i % 3], down_s if k in ("full", "controller") else partition_s))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.regional", description=__doc__.splitlines()[0])
    p.add_argument("--down", type=float, default=30.0, help="seconds a region stays down in a full event")
    p.add_argument("--partition", type=float, default=20.0, help="seconds a partition lasts")
    p.add_argument("--rate", type=float, default=100.0, help="writes per second per region's producer")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="keep the databases when the run fails")
    p.add_argument("--png", type=Path, default=None, help="draw the timeline of every write's latency there")
    p.add_argument("--watch", action="store_true",
                   help="record Kafka's leaders and ISRs, coordinators and routers' modes; print each event per second")
    p.add_argument("--broker", action="append", default=[], metavar="KEY=VALUE",
                   help="a broker setting over the bed's (docs/topology.md), e.g. replica.lag.time.max.ms=5000")
    p.add_argument("--client", action="append", default=[], metavar="KEY=VALUE",
                   help="a librdkafka setting in every region's kafka.client (services and producers)")
    p.add_argument("--events", default="full,partition",
                   help=f"comma-separated event kinds, in order ({', '.join(EVENT_KINDS)})")
    args = p.parse_args(argv)
    kinds = tuple(k.strip() for k in args.events.split(",") if k.strip())
    unknown = [k for k in kinds if k.partition(":")[0] not in EVENT_KINDS
               or k.partition(":")[2] not in ("", "r0", "r1", "r2")]
    if unknown or not kinds:
        p.error(f"unknown event kind(s) {', '.join(unknown) or '(none)'}; known: {', '.join(EVENT_KINDS)}")
    # a SIGTERM (make interrupted, a CI timeout) still tears the bed down: brokers, services, cgroups, nft table
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rg-regional-"))
    pairs = lambda items: dict(i.split("=", 1) for i in items)  # noqa: E731
    bad = [i for i in args.broker + args.client if "=" not in i]
    if bad:
        p.error(f"not KEY=VALUE: {', '.join(bad)}")
    run = RegionalRun(workdir, default_events(args.down, args.partition, kinds), rate=args.rate, seed=args.seed,
                      broker_config=pairs(args.broker), client=pairs(args.client))
    run.png = args.png
    run.watch = args.watch
    report = run.run(keep=args.keep)
    print(report.text(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
