"""The chaos run: real services, real broker, real PostgreSQL, a fault schedule, and the checker.

``python -m tests.chaos.run --writes 100000 --faults 30`` (``make chaos``) runs
the long schedule and prints a table of faults and outcomes;
``tests/chaos/test_chaos.py`` runs a short one in the normal test command.

Set-up: 3 regions (``ap`` on a private PostgreSQL cluster so it can really
crash), each behind a fault proxy; routers ``router1`` (+ ``router2`` during
rebalance faults, one consumer group per region), ``replayer1``, ``health1``
and ``health2`` (leader election), all real processes. The load generator
(:class:`regionguard_testkit.verify.LoadGen`) produces throughout. Faults, one at a
time, spread over the load:

- regions: ``blackhole``, ``refuse`` (+ reset of live connections), ``reset``
  (a storm of connection resets), ``pg_crash`` (``pg_ctl stop -m immediate``
  of ``ap``'s cluster, restarted at the end of the fault);
- services: SIGKILL of a router, the replayer or the health leader (restarted
  at the end of the fault), and ``rebalance`` (start ``router2``, then stop it);
- brokers (``--broker-faults``: a private 3-node Apache Kafka cluster, topics at
  replication 3 and ``min.insync.replicas`` 2): ``broker_kill`` (SIGKILL of a
  node, restarted at the end of the fault), ``broker_restart`` (SIGTERM, a
  controlled shutdown, then start), ``leader_kill`` (SIGKILL of the node leading
  most partitions of the writes and held topics) and ``controller_kill``
  (SIGKILL of the active KRaft controller). After each, the run waits until
  every partition has its full ISR again before the next fault.

At the end every fault is healed, the run waits for quiescence (every
acknowledged write accounted for, held backlogs replayed, every partition
direct again) and the checker compares all regions with the model.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from regionguard_testkit.embedded.net import run_sync
from regionguard_testkit.verify import LoadGen, Model, check, wait_quiescent
from regionguard_testkit.verify.checker import CheckResult, DeadLetterReader, QuiesceResult, read_region
from regionguard_testkit.verify.stack import Stack, read_json_topic

REGIONS = ("eu", "us", "ap")
CRASHABLE = "ap"
REGION_KINDS = ("blackhole", "refuse", "reset", "pg_crash")
SERVICE_KINDS = ("kill_router", "kill_replayer", "kill_health", "rebalance")
ALL_KINDS = REGION_KINDS + SERVICE_KINDS
#: Need a broker with per-node faults (:class:`regionguard_testkit.embedded.kafka.ApacheKafka`, 3 nodes).
BROKER_KINDS = ("broker_kill", "broker_restart", "leader_kill", "controller_kill")
#: how long a downed node may take to lose its leaderships before it is started again anyway
LEADER_MOVE_TIMEOUT_S = 120.0


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

    @property
    def is_broker(self) -> bool:
        return self.kind in BROKER_KINDS


def make_schedule(n: int, seed: int, *, regions: tuple[str, ...] = REGIONS, crashable: str = CRASHABLE,
                  min_s: float = 2.5, max_s: float = 6.0, kinds: tuple[str, ...] = ALL_KINDS, nodes: int = 3,
                  broker_min_s: float = 8.0, broker_max_s: float = 14.0) -> list[Fault]:
    """``n`` faults of ``kinds``; every kind appears once before any repeats (for ``n`` >= ``len(kinds)``).

    A broker node stays down ``broker_min_s`` to ``broker_max_s``: long enough
    for the controller to fence a killed node (``broker.session.timeout.ms``, 9 s)
    and move its leaderships, so the load runs on the survivors for a while.
    """
    rng = random.Random(seed)
    order: list[str] = []
    while len(order) < n:
        batch = list(kinds)
        rng.shuffle(batch)
        order += batch
    out = []
    for kind in order[:n]:
        if kind in BROKER_KINDS:
            if kind in ("broker_kill", "broker_restart"):
                target = f"node{rng.randint(1, nodes)}"
            else:
                target = "leader" if kind == "leader_kill" else "controller"
            # a clean restart is a rolling restart's step: start again at once
            lo, hi = (1.0, 3.0) if kind == "broker_restart" else (broker_min_s, broker_max_s)
            out.append(Fault(kind, target, round(rng.uniform(lo, hi), 1)))
            continue
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

    @property
    def brokers(self) -> bool:
        """Broker faults in the schedule: the table gets the broker columns."""
        return any(f.is_broker for f in self.faults)

    @property
    def headers(self) -> list[str]:
        return self.BROKER_HEADERS if self.brokers else self.HEADERS

    def rows(self) -> list[list[str]]:
        if self.brokers:
            return self.broker_rows()
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

    BROKER_HEADERS = ["#", "t (s)", "fault", "target", "load avg", "down (s)", "leaders moved after (s)",
                      "restart (s)", "ISR full after restart (s)", "writes acked fault→full ISR",
                      "worst produce→ack (s)", "worst ack→applied (s)", "all applied after restart",
                      "lost / twice", "note"]

    def broker_rows(self) -> list[list[str]]:
        def sec(v: Any) -> str:
            return f"{v:.1f}" if isinstance(v, (int, float)) else str(v if v is not None else "-")

        rows = []
        for i, f in enumerate(self.faults, 1):
            o = f.outcome
            rows.append([
                str(i), f"{o.get('at', 0):.1f}", f.kind, f.target, sec(o.get("loadavg")), f"{f.end - f.start:.1f}",
                sec(o.get("leaders_moved")), sec(o.get("restart_s")), sec(o.get("isr_s")),
                str(o.get("acked", 0)), sec(o.get("worst_produce")), sec(o.get("worst_apply")),
                o.get("caught_up", "-"), o.get("result", "-"), f.note,
            ])
        return rows

    def rest_summary(self) -> str:
        """One line on the broker faults: worst times to full ISR, to catch up, and worst latencies."""
        bf = [f for f in self.faults if f.is_broker]
        if not bf:
            return ""

        def worst(key: str) -> str:
            vals = [f.outcome[key] for f in bf if isinstance(f.outcome.get(key), (int, float))]
            return f"{max(vals):.1f} s" if vals else "-"

        loads = [f.outcome["loadavg"] for f in bf if "loadavg" in f.outcome]
        load = f" (machine load average {min(loads):.0f}-{max(loads):.0f} on 2 cores)" if loads else ""
        return (f"{len(bf)} broker faults{load}: leaders moved within {worst('leaders_moved')}, full ISR within "
                f"{worst('isr_s')} of a restart, worst produce→ack {worst('worst_produce')}, "
                f"worst ack→applied {worst('worst_apply')}")

    def summary(self) -> str:
        c = self.check
        return (f"{self.writes} writes requested, {c.acknowledged} acknowledged, {len(self.faults)} faults, "
                f"run {self.seconds:.0f} s (load {self.load_seconds:.0f} s, quiescence {self.quiesce.seconds:.0f} s): "
                f"lost={c.lost} duplicates={c.duplicates} stale_rows={c.stale_rows} missing_rows={c.missing_rows} "
                f"extra_rows={c.extra_rows} unexplained_dead_letters={c.unexplained_dead_letters} "
                f"groups={c.groups} partial_groups={c.partial_groups} split_groups={c.split_groups} -> "
                f"{'PASS' if self.ok else 'FAIL'}")

    def markdown(self) -> str:
        out = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        out += ["| " + " | ".join(r) + " |" for r in self.rows()]
        return "\n".join(out)

    def print_rich(self) -> None:
        from rich.console import Console
        from rich.table import Table

        t = Table(title="chaos: faults and outcomes", title_justify="left")
        for h in self.headers:
            t.add_column(h, justify="right" if h in ("#", "t (s)", "for (s)") else "left")
        for r in self.rows():
            t.add_row(*r, style=None if r[-2] == "0/0" else "red")
        con = Console(width=200)
        con.print(t)
        con.print(self.check.report())
        if self.brokers:
            con.print(self.rest_summary())
        con.print(self.summary(), style="bold green" if self.ok else "bold red")


class ChaosRun:
    """One run; ``kinds`` picks the fault kinds of the schedule.

    With any of :data:`BROKER_KINDS` the run needs a broker with per-node faults:
    without ``broker`` it starts its own :class:`~regionguard_testkit.embedded.kafka.ApacheKafka`
    of ``nodes`` nodes (3 by default) and closes it at the end; topics get
    replication ``min(3, nodes)`` and ``min.insync.replicas`` ``min(2, nodes)``.
    """

    def __init__(self, *, writes: int, faults: int, rate: float, seed: int, workdir: Path, partitions: int = 6,
                 log: Callable[[str], None] | None = None, broker: Any = None,
                 kinds: tuple[str, ...] = ALL_KINDS, nodes: int | None = None) -> None:
        self.writes, self.n_faults, self.rate, self.seed = writes, faults, rate, seed
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.partitions = partitions
        self.kinds = tuple(kinds)
        self.t0 = time.monotonic()
        self._log = log or (lambda s: print(s, flush=True))
        self.kafka: Any = None          # the broker the broker faults act on
        self._own_kafka = False
        overrides: dict[str, Any] = {}
        if any(k in BROKER_KINDS for k in self.kinds):
            if broker is None:
                from regionguard_testkit.embedded.kafka import ApacheKafka

                broker = ApacheKafka(nodes or 3, workdir=workdir / "kafka")
                self._own_kafka = True
            if not hasattr(broker, "kill_node") or len(getattr(broker, "nodes", ())) < 3:
                raise ValueError("broker faults need an ApacheKafka cluster of at least 3 nodes")
            self.kafka = broker
            n = len(broker.nodes)
            overrides = {"kafka": {"replication_factor": min(3, n), "min_insync_replicas": min(2, n)}}
        self.stack = Stack(workdir, regions=REGIONS, crashable=CRASHABLE, partitions=partitions, log=self.log,
                           broker=broker, overrides=overrides)

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
        if self.kafka is not None:
            for node in self.kafka.nodes:
                if not node.running():
                    self.log(f"starting Kafka node {node.node_id} (found down)")
                    self.kafka.start_node(node.node_id, timeout=300)

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
        elif f.kind in BROKER_KINDS:
            self._broker_fault(f)
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

    # ------------------------------------------------------------------ broker faults
    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.kafka.bootstrap, "socket.timeout.ms": 3000,
                            "log_level": 0})

    def _leaders(self, admin: Any, topics: set[str] | None = None) -> dict[tuple[str, int], tuple[int, int, int]]:
        """(topic, partition) -> (leader, replicas, in-sync replicas), for ``topics`` or every topic."""
        md = admin.list_topics(timeout=5)
        out = {}
        for name, t in md.topics.items():
            if topics is not None and name not in topics:
                continue
            for pid, part in t.partitions.items():
                out[(name, pid)] = (part.leader, len(part.replicas), len(part.isrs))
        return out

    def _data_topics(self) -> set[str]:
        cfg = self.stack.cfg
        assert cfg is not None
        return {cfg.topic(kind, r) for r in cfg.regions for kind in ("writes", "held")}

    def _busiest_leader(self, admin: Any) -> tuple[int, dict[int, int]]:
        """The node leading most partitions of the writes and held topics, and the count per node."""
        counts: dict[int, int] = {n.node_id: 0 for n in self.kafka.nodes}
        for leader, _r, _i in self._leaders(admin, self._data_topics()).values():
            if leader in counts:
                counts[leader] += 1
        node = max(sorted(counts), key=lambda k: counts[k])
        return node, counts

    def _wait_leaders_moved(self, admin: Any, node: int, until: float) -> float | None:
        """Poll until no partition is led by ``node`` (or has no leader); unix time, or None (stragglers logged)."""
        stuck: list[str] = []
        while time.time() < until:
            try:
                leaders = self._leaders(admin)
                stuck = [f"{t}[{p}] leader {ld} isr {i}/{r}" for (t, p), (ld, r, i) in sorted(leaders.items())
                         if ld in (node, -1)]
                if leaders and not stuck:
                    return time.time()
            except Exception:  # noqa: BLE001 - metadata may time out while the node is gone
                pass
            time.sleep(0.25)
        if stuck:
            self.log(f"still led by node {node} or leaderless: {len(stuck)} partitions, e.g. {'; '.join(stuck[:4])}")
        return None

    def _log_replication(self) -> None:
        """Name any topic with fewer replicas than the cluster has nodes (a node fault would take it offline)."""
        admin = self._admin()
        want = min(3, len(self.kafka.nodes))
        short = sorted({t for (t, _p), (_ld, r, _i) in self._leaders(admin).items() if r < want})
        self.log(f"topics with replication below {want}: {', '.join(short) if short else 'none'}")

    def _wait_in_sync(self, admin: Any, timeout: float = 180.0) -> float | None:
        """Wait until every partition of the cluster has a leader and its full ISR; unix time, or None."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                leaders = self._leaders(admin)
                if leaders and all(ld >= 0 and i == r for ld, r, i in leaders.values()):
                    return time.time()
            except Exception:  # noqa: BLE001 - retried
                pass
            time.sleep(0.25)
        return None

    def _broker_fault(self, f: Fault) -> None:
        """Take one node down for ``f.duration`` (SIGKILL, or SIGTERM for ``broker_restart``), start it again,
        and wait until every partition is fully in sync (recorded in ``f.outcome``)."""
        kafka, o = self.kafka, f.outcome
        admin = self._admin()
        if f.kind == "leader_kill":
            node, counts = self._busiest_leader(admin)
            total = sum(counts.values())
            f.note = (f"SIGKILL of the busiest leader ({counts[node]} of {total} writes/held partitions; "
                      "by node " + ", ".join(f"{k}:{v}" for k, v in sorted(counts.items())) + "), restarted")
        elif f.kind == "controller_kill":
            node = self._active_controller()
            f.note = f"SIGKILL of the active KRaft controller (node {node}), restarted"
        else:
            node = int(f.target.removeprefix("node"))
            f.note = ("SIGTERM (controlled shutdown), then started" if f.kind == "broker_restart"
                      else "SIGKILL, restarted")
        f.target = f"node {node}"
        o["loadavg"] = os.getloadavg()[0]  # the machine's 1-minute load when the fault began (2 cores)
        led = sum(1 for ld, _r, _i in self._leaders(admin, self._data_topics()).values() if ld == node)
        o["led"] = led
        f.start = time.time()
        if f.kind == "broker_restart":
            kafka.stop_node(node)
            o["stop_s"] = time.time() - f.start
            f.note = f"SIGTERM (controlled shutdown, {o['stop_s']:.1f} s), then started"
        else:
            kafka.kill_node(node)
        # the node stays down at least until the survivors lead every partition it led (a SIGKILLed
        # node is fenced after broker.session.timeout.ms, 9 s; after a controller loss the new
        # controller is elected first), so the fault always exercises the failover
        moved = self._wait_leaders_moved(admin, node, f.start + max(f.duration, LEADER_MOVE_TIMEOUT_S))
        o["leaders_moved"] = (moved - f.start) if moved is not None else f"> {LEADER_MOVE_TIMEOUT_S:g}"
        rest = f.start + f.duration - time.time()
        if rest > 0:
            self._sleep(rest)
        f.end = time.time()
        kafka.start_node(node, timeout=300)  # a JVM start: minutes, not seconds, on a crowded 2-core machine
        o["restart_s"] = time.time() - f.end
        in_sync = self._wait_in_sync(admin)
        o["isr_s"] = (in_sync - f.end) if in_sync is not None else "> 180"
        o["rest_at"] = in_sync or time.time()

    def _active_controller(self, tries: int = 3) -> int:
        """:meth:`ApacheKafka.active_controller` (a JVM tool: slow on a busy machine), retried."""
        for attempt in range(tries):
            try:
                return self.kafka.active_controller(timeout=90)
            except Exception as exc:  # noqa: BLE001 - a timeout or no leader yet
                if attempt == tries - 1:
                    raise
                self.log(f"active controller lookup failed ({type(exc).__name__}); again")
                time.sleep(1)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ the run
    def run(self, *, keep_data: bool = False) -> ChaosReport:
        st = self.stack
        ok = False
        try:
            if self._own_kafka and not self.kafka.is_running():
                self.kafka.start(timeout=300)  # 3 JVMs: far beyond the 12 s of a quiet machine when it is busy
            st.start_infra()
            self.log(f"infra up: broker {st.broker.bootstrap}, regions {st.direct_dsns}")
            for name in ("health1", "health2", "router1", "replayer1"):
                st.start_service(name)
            st.wait_router_ready("router1")
            leader = st.wait_health_leader()
            self.log(f"services up; health leader {leader}")
            if self.kafka is not None:
                self._log_replication()
            model = Model(self.workdir / "model.jsonl")
            gen = LoadGen(st.cfg, model, rate=self.rate, seed=self.seed, batch=50)
            self.gen = gen
            faults = make_schedule(self.n_faults, self.seed, kinds=self.kinds,
                                   nodes=len(self.kafka.nodes) if self.kafka is not None else 3)
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
                from regionguard_testkit.verify.checker import locate
                from regionguard_testkit.verify.checker import _pending, _gather_inboxes

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
            if self._own_kafka:
                self.kafka.close()

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
        flushes = list(self.gen.stats.flushes) if getattr(self, "gen", None) is not None else []
        for f in faults:
            o = f.outcome
            o["at"] = f.start - wall0
            if f.is_broker:
                # the disturbed period: from the fault until every partition was fully in sync again
                rest_at = o.get("rest_at", f.end)
                lat = [s for t, s in flushes if f.start <= t <= rest_at + 1.0]
                o["worst_produce"] = max(lat) if lat else "-"
                apply_lat = []
                for r in recs:
                    if f.start <= r.t <= rest_at and r.expect == "apply":
                        t = snaps[r.region].applied_times.get(r.id)
                        if t is not None and snaps[r.region].inbox.get(r.id) == "router":
                            apply_lat.append(t - r.t)
                o["worst_apply"] = max(apply_lat) if apply_lat else "-"
            # a broker fault disturbs the load until the cluster is at rest again (full ISR), and a
            # write produced while a leader is gone is acknowledged only after the failover
            until = o.get("rest_at", f.end) if f.is_broker else f.end
            during = [r for r in recs if f.start <= r.t <= until and (not f.is_region or r.region == f.target)]
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
    p.add_argument("--broker-faults", action="store_true",
                   help="broker faults only (" + ", ".join(BROKER_KINDS) + ") on a private Apache Kafka cluster")
    p.add_argument("--nodes", type=int, default=3, help="Kafka nodes of that cluster (at least 3)")
    p.add_argument("--kinds", default=None,
                   help="comma-separated fault kinds (default: every region and service kind, or the broker "
                        "kinds with --broker-faults); may mix broker kinds with the others")
    args = p.parse_args(argv)
    if args.kinds:
        kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
        unknown = [k for k in kinds if k not in ALL_KINDS + BROKER_KINDS]
        if unknown:
            p.error(f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(ALL_KINDS + BROKER_KINDS)}")
    else:
        kinds = BROKER_KINDS if args.broker_faults else ALL_KINDS
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rg-chaos-"))
    run = ChaosRun(writes=args.writes, faults=args.faults, rate=args.rate, seed=args.seed, workdir=workdir,
                   kinds=kinds, nodes=args.nodes)
    report = run.run(keep_data=args.keep)
    report.print_rich()
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        brokers = any(k in BROKER_KINDS for k in kinds)
        cmd = (f"python -m tests.chaos.run --writes {args.writes} --faults {args.faults} --rate {args.rate:g} "
               f"--seed {args.seed}")
        if brokers:
            cmd += (" --broker-faults" if kinds == BROKER_KINDS else f" --kinds {','.join(kinds)}")
            cmd += f" --nodes {args.nodes}"
        make = "make chaos-brokers" if brokers else "make chaos"
        setup = (f", Apache Kafka {run.kafka.version} with {len(run.kafka.nodes)} KRaft nodes (replication "
                 f"{min(3, len(run.kafka.nodes))}, min.insync.replicas {min(2, len(run.kafka.nodes))})"
                 if brokers else "")
        rest = f"\n{report.rest_summary()}.\n" if brokers else ""
        run_md = (
            f"Command: `{cmd}` (`{make}`), code at {_revision()}, {time.strftime('%Y-%m-%d')}, on this 2-core "
            f"machine{setup}.\n\n{report.markdown()}\n\nChecker:\n\n```\n{report.check.report()}\n```\n{rest}\n"
            f"**{report.summary()}**\n")
        heading = BROKER_HEADING if brokers else LONG_RUN_HEADING
        args.markdown.write_text(replace_section(args.markdown, heading, run_md))
    return 0 if report.ok else 1


LONG_RUN_HEADING = "## The long run\n"
BROKER_HEADING = "## Broker faults: the long run\n"


def replace_section(path: Path, heading: str, body: str) -> str:
    """The file's text with the section under ``heading`` (up to the next ``## `` heading) replaced by ``body``.

    Everything else -- the hand-written parts and the other run's section -- is
    kept; a missing section is appended.
    """
    text = path.read_text() if path.exists() else ""
    if heading not in text:
        return (text.rstrip("\n") + "\n\n" if text else "") + heading + "\n" + body
    before, after = text.split(heading, 1)
    nxt = after.find("\n## ")
    tail = after[nxt + 1:] if nxt >= 0 else ""
    return before + heading + "\n" + body + ("\n" + tail if tail else "")


if __name__ == "__main__":
    sys.exit(main())
