"""The chaos run: real services, real broker, real PostgreSQL, a fault schedule, and the checker.

``python -m tests.chaos.run --writes 100000 --faults 30`` (``make chaos``) runs
the long schedule and prints a table of faults and outcomes;
``tests/chaos/test_chaos.py`` runs a short one in the normal test command.

Set-up: 3 regions (``ap`` on a private PostgreSQL cluster so it can really
crash), each behind a fault proxy; routers ``router1`` (+ ``router2`` during
rebalance faults, one consumer group per region), ``replayer1``, ``health1``
and ``health2`` (leader election), all real processes. The load generator
(:class:`regionguard.verify.LoadGen`) produces throughout. Faults, one at a
time, spread over the load:

- regions: ``blackhole``, ``refuse`` (+ reset of live connections), ``reset``
  (a storm of connection resets), ``pg_crash`` (``pg_ctl stop -m immediate``
  of ``ap``'s cluster, restarted at the end of the fault);
- services: SIGKILL of a router, the replayer or the health leader (restarted
  at the end of the fault), and ``rebalance`` (start ``router2``, then stop it).

At the end every fault is healed, the run waits for quiescence (every
acknowledged write accounted for, held backlogs replayed, every partition
direct again) and the checker compares all regions with the model.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from regionguard.embedded.net import run_sync
from regionguard.verify import LoadGen, Model, check, wait_quiescent
from regionguard.verify.checker import CheckResult, DeadLetterReader, QuiesceResult, read_region
from regionguard.verify.stack import Stack, read_json_topic

REGIONS = ("eu", "us", "ap")
CRASHABLE = "ap"
REGION_KINDS = ("blackhole", "refuse", "reset", "pg_crash")
SERVICE_KINDS = ("kill_router", "kill_replayer", "kill_health", "rebalance")
ALL_KINDS = REGION_KINDS + SERVICE_KINDS


@dataclass
class Fault:
    kind: str
    target: str
    duration: float
    start: float = 0.0        # unix time injected
    end: float = 0.0          # unix time healed / restarted
    note: str = ""
    outcome: dict[str, Any] = field(default_factory=dict)

    @property
    def is_region(self) -> bool:
        return self.kind in REGION_KINDS


def make_schedule(n: int, seed: int, *, regions: tuple[str, ...] = REGIONS, crashable: str = CRASHABLE,
                  min_s: float = 2.5, max_s: float = 6.0) -> list[Fault]:
    """``n`` faults; every kind appears once before any repeats (for ``n`` >= 8)."""
    rng = random.Random(seed)
    kinds: list[str] = []
    while len(kinds) < n:
        batch = list(ALL_KINDS)
        rng.shuffle(batch)
        kinds += batch
    out = []
    for kind in kinds[:n]:
        if kind == "pg_crash":
            target = crashable
        elif kind in REGION_KINDS:
            target = rng.choice(regions)
        elif kind == "kill_router":
            target = "router1"
        elif kind == "kill_replayer":
            target = "replayer1"
        elif kind == "kill_health":
            target = "leader"
        else:
            target = "router2"
        out.append(Fault(kind, target, round(rng.uniform(min_s, max_s), 1)))
    return out


@dataclass
class ChaosReport:
    faults: list[Fault]
    quiesce: QuiesceResult
    check: CheckResult
    seconds: float
    writes: int
    load_seconds: float
    workdir: Path

    @property
    def ok(self) -> bool:
        return self.quiesce.ok and self.check.ok

    def rows(self) -> list[list[str]]:
        rows = []
        for i, f in enumerate(self.faults, 1):
            o = f.outcome
            rows.append([
                str(i), f"{o.get('at', 0):.1f}", f.kind, f.target, f"{f.end - f.start:.1f}",
                str(o.get("acked", 0)), str(o.get("held_replayed", 0)), str(o.get("failover", 0)),
                str(o.get("dead", 0)), o.get("breaker", "-"), o.get("caught_up", "-"), o.get("result", "-"),
                f.note,
            ])
        return rows

    HEADERS = ["#", "t (s)", "fault", "target", "for (s)", "writes acked during", "held→replayed",
               "failover applied", "dead-lettered", "breaker", "caught up after heal", "lost / twice", "note"]

    def summary(self) -> str:
        c = self.check
        return (f"{self.writes} writes requested, {c.acknowledged} acknowledged, {len(self.faults)} faults, "
                f"run {self.seconds:.0f} s (load {self.load_seconds:.0f} s, quiescence {self.quiesce.seconds:.0f} s): "
                f"lost={c.lost} duplicates={c.duplicates} stale_rows={c.stale_rows} missing_rows={c.missing_rows} "
                f"extra_rows={c.extra_rows} unexplained_dead_letters={c.unexplained_dead_letters} -> "
                f"{'PASS' if self.ok else 'FAIL'}")

    def markdown(self) -> str:
        out = ["| " + " | ".join(self.HEADERS) + " |", "|" + "---|" * len(self.HEADERS)]
        out += ["| " + " | ".join(r) + " |" for r in self.rows()]
        return "\n".join(out)

    def print_rich(self) -> None:
        from rich.console import Console
        from rich.table import Table

        t = Table(title="chaos: faults and outcomes", title_justify="left")
        for h in self.HEADERS:
            t.add_column(h, justify="right" if h in ("#", "t (s)", "for (s)") else "left")
        for r in self.rows():
            t.add_row(*r, style=None if r[-2] == "0/0" else "red")
        con = Console(width=200)
        con.print(t)
        con.print(self.check.report())
        con.print(self.summary(), style="bold green" if self.ok else "bold red")


class ChaosRun:
    def __init__(self, *, writes: int, faults: int, rate: float, seed: int, workdir: Path, partitions: int = 6,
                 log: Callable[[str], None] | None = None, broker: Any = None) -> None:
        self.writes, self.n_faults, self.rate, self.seed = writes, faults, rate, seed
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.partitions = partitions
        self.t0 = time.monotonic()
        self._log = log or (lambda s: print(s, flush=True))
        self.stack = Stack(workdir, regions=REGIONS, crashable=CRASHABLE, partitions=partitions, log=self.log,
                           broker=broker)

    def log(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s {time.strftime('%H:%M:%S')}] {msg}"
        self._log(line)
        with open(self.workdir / "chaos.log", "a") as fh:
            fh.write(line + "\n")

    # ------------------------------------------------------------------ services
    def _leader(self) -> str:
        try:
            return self.stack.wait_health_leader(timeout=1.0)
        except Exception:  # noqa: BLE001 - no leader right now (a handover): kill any health instance
            return "health1"

    def _ensure_running(self) -> None:
        for name in ("health1", "health2", "router1", "replayer1"):
            if not self.stack.procs[name].alive:
                self.log(f"restarting {name} (found dead)")
                self.stack.restart(name)

    # ------------------------------------------------------------------ one fault
    def _inject(self, f: Fault) -> None:
        st = self.stack
        f.start = time.time()
        if f.kind in ("blackhole", "refuse", "pg_crash"):
            st.fault(f.target, f.kind)
            self._sleep(f.duration)
            f.end = time.time()
            st.heal(f.target)
            f.note = {"blackhole": "every packet dropped both ways, then released",
                      "refuse": "connects refused, live connections reset",
                      "pg_crash": "pg_ctl stop -m immediate, then started (crash recovery)"}[f.kind]
        elif f.kind == "reset":
            end = time.monotonic() + f.duration
            n = 0
            while time.monotonic() < end:
                st.fault(f.target, "reset")
                n += 1
                self._sleep(0.5)
            f.end = time.time()
            f.note = f"{n} connection resets, 0.5 s apart"
        elif f.kind in ("kill_router", "kill_replayer", "kill_health"):
            target = self._leader() if f.kind == "kill_health" else f.target
            f.target = target
            st.kill(target)
            self._sleep(f.duration)
            f.end = time.time()
            st.restart(target)
            f.note = "SIGKILL, restarted" + (" (the health leader)" if f.kind == "kill_health" else "")
        elif f.kind == "rebalance":
            st.start_service("router2")
            try:
                st.wait_router_ready("router2", timeout=max(f.duration, 20))
            except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
                f.note = f"router2 not assigned: {exc}"[:80]
            self._sleep(f.duration)
            # alternate a clean leave and a crash of the second router
            if int(f.start) % 2:
                st.stop_service("router2")
                f.note = f.note or "router2 joined the groups, then left (SIGTERM)"
            else:
                st.kill("router2")
                f.note = f.note or "router2 joined the groups, then SIGKILL"
            f.end = time.time()
        self.log(f"fault {f.kind} on {f.target} for {f.end - f.start:.1f}s done {f.note}")

    @staticmethod
    def _sleep(s: float) -> None:
        time.sleep(s)  # fault durations are the schedule itself, not waits for a condition

    # ------------------------------------------------------------------ the run
    def run(self, *, keep_data: bool = False) -> ChaosReport:
        st = self.stack
        ok = False
        try:
            st.start_infra()
            self.log(f"infra up: broker {st.broker.bootstrap}, regions {st.direct_dsns}")
            for name in ("health1", "health2", "router1", "replayer1"):
                st.start_service(name)
            st.wait_router_ready("router1")
            leader = st.wait_health_leader()
            self.log(f"services up; health leader {leader}")
            model = Model(self.workdir / "model.jsonl")
            gen = LoadGen(st.cfg, model, rate=self.rate, seed=self.seed, batch=50)
            faults = make_schedule(self.n_faults, self.seed)
            load_s = self.writes / self.rate
            slot = load_s / max(1, len(faults))
            t_load = time.monotonic()
            wall0 = time.time()
            gen.start()  # runs until the schedule is over and at least `writes` writes were produced
            for i, f in enumerate(faults):
                due = t_load + i * slot + min(2.0, slot * 0.2)
                while time.monotonic() < due:
                    time.sleep(0.1)
                self.log(f"fault {i + 1}/{len(faults)}: {f.kind} on {f.target} for {f.duration}s "
                         f"(acked so far {gen.stats.acked})")
                self._inject(f)
                self._ensure_running()
            while gen.running and gen.stats.produced < self.writes:
                time.sleep(0.2)
            gen.stop()
            load_seconds = time.monotonic() - t_load
            self.log(f"load done: {gen.stats.acked} acked, {gen.stats.unconfirmed} unconfirmed "
                     f"in {load_seconds:.0f}s")
            gen.close()
            st.heal_all()
            self._ensure_running()
            q = wait_quiescent(st.cfg, model, st.direct_dsns, timeout=240, on_wait=self._throttled_log())
            self.log(f"quiescence: {q}")
            if not q.ok:
                from regionguard.verify.checker import locate
                from regionguard.verify.checker import _pending, _gather_inboxes

                dead = DeadLetterReader(st.cfg)
                dead.catch_up(0.5)
                pend = _pending(model, run_sync(_gather_inboxes(st.direct_dsns)), dead)
                dead.close()
                for wid, where in sorted(locate(st.cfg, model, [r.id for r in pend[:30]]).items()):
                    r = model.get(wid)
                    self.log(f"pending {r.region} {r.table} {r.op} key={r.key} seq={r.seq} "
                             f"acked at {time.strftime('%H:%M:%S', time.localtime(r.t))}{r.t % 1:.3f}: {where}")
            res = check(st.cfg, model, st.direct_dsns)
            self._outcomes(faults, model, wall0)
            report = ChaosReport(faults, q, res, time.monotonic() - self.t0, self.writes, load_seconds, self.workdir)
            ok = report.ok
            return report
        finally:
            st.close(keep_data=keep_data and not ok)

    def _throttled_log(self) -> Callable[[str], None]:
        last = [0.0]

        def say(msg: str) -> None:
            if time.monotonic() - last[0] > 5:
                last[0] = time.monotonic()
                self.log(f"waiting for quiescence: {msg}")
        return say

    # ------------------------------------------------------------------ per-fault outcomes
    def _outcomes(self, faults: list[Fault], model: Model, wall0: float) -> None:
        st = self.stack
        snaps = {r: run_sync(read_region(r, d, with_times=True)) for r, d in st.direct_dsns.items()}
        events = read_json_topic(st.cfg, "failover-events")
        opens: dict[str, list[float]] = {}
        for e in events:
            if e.get("kind") == "transition" and e.get("detail", {}).get("to") == "open":
                opens.setdefault(e["region"], []).append(datetime.fromisoformat(e["at"]).timestamp())
        dead = DeadLetterReader(st.cfg)
        dead.catch_up(0.5)
        dead.close()
        recs = [r for r in model if r.acked]
        for f in faults:
            o = f.outcome
            o["at"] = f.start - wall0
            during = [r for r in recs if f.start <= r.t <= f.end and (not f.is_region or r.region == f.target)]
            o["acked"] = len(during)
            held = failover = dl = 0
            last_apply = 0.0
            lost = twice = 0
            for r in during:
                home = snaps[r.region]
                src = home.inbox.get(r.id)
                if src == "replay":
                    held += 1
                if r.id in dead.by_id:
                    dl += 1
                if src is None and r.id not in dead.by_id:
                    lost += 1
                if r.id in home.effects:
                    twice += 1
                t = home.applied_times.get(r.id)
                if t is not None:
                    last_apply = max(last_apply, t)
                if r.policy == "failover" and any(r.id in snaps[fb].inbox for fb in r.fallbacks if fb in snaps):
                    failover += 1
            o["held_replayed"], o["failover"], o["dead"] = held, failover, dl
            o["caught_up"] = f"{max(0.0, last_apply - f.end):.1f} s" if last_apply else "-"
            if f.is_region:
                t_open = [t for t in opens.get(f.target, []) if f.start <= t <= f.end + 1.0]
                o["breaker"] = f"open after {t_open[0] - f.start:.1f} s" if t_open else "stayed closed"
            else:
                o["breaker"] = "-"
            o["result"] = f"{lost}/{twice}"


def _revision() -> str:
    import os
    import subprocess

    if os.environ.get("RG_CHAOS_REVISION"):  # set when running a snapshot outside the checkout
        return os.environ["RG_CHAOS_REVISION"]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "unknown revision"
    except (OSError, subprocess.SubprocessError):
        return "unknown revision"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.splitlines()[0])
    p.add_argument("--writes", type=int, default=100_000)
    p.add_argument("--faults", type=int, default=30)
    p.add_argument("--rate", type=float, default=400.0, help="writes per second over all regions")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None, help="also write the table and summary here")
    p.add_argument("--keep", action="store_true", help="keep the databases when the check fails")
    args = p.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rg-chaos-"))
    run = ChaosRun(writes=args.writes, faults=args.faults, rate=args.rate, seed=args.seed, workdir=workdir)
    report = run.run(keep_data=args.keep)
    report.print_rich()
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        run_md = (
            f"Command: `python -m tests.chaos.run --writes {args.writes} --faults {args.faults} "
            f"--rate {args.rate:g} --seed {args.seed}` (`make chaos`), code at {_revision()}, "
            f"{time.strftime('%Y-%m-%d')}, on this 2-core machine.\n\n{report.markdown()}\n\n"
            f"Checker:\n\n```\n{report.check.report()}\n```\n\n**{report.summary()}**\n")
        args.markdown.write_text(_keep_intro(args.markdown) + run_md)
    return 0 if report.ok else 1


def _keep_intro(path: Path) -> str:
    """The hand-written part of the file, up to its ``## The long run`` heading: only the run is rewritten."""
    heading = "## The long run\n"
    text = path.read_text() if path.exists() else ""
    return text.split(heading, 1)[0] + heading + "\n" if heading in text else ""


if __name__ == "__main__":
    sys.exit(main())
