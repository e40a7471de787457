"""A model-based test of a region's life on the real services (issue 25, part 2).

The rules of ``tests/unit/test_modes_model.py`` against a real router and
replayer (subprocesses) on the session's Kafka and PostgreSQL: writes of
every policy (hold, failover to ``us``, shed, expiring; a table only ``eu``
may hold), outages and heals of ``eu``'s database (its fault proxy refuses and
resets connections) with the region state the health service would publish
(the test kit's StatePublisher: ``open`` on an outage, ``closed`` once healed),
router restarts by SIGKILL and SIGTERM, replayer restarts, and the redrive of
dead letters (``regionguard dead-letters redrive``, a real subprocess). After each write it waits, bounded,
until every write has a place (applied, held, or dead-lettered); after
``settle`` (and at the end) until home is back, everything replayed and every
partition direct, then compares every row of both regions with the model:

* home: ``users`` (versioned) holds per key the highest version applied
  (last writer wins), ``orders`` (unversioned) the write of the last record
  applied (a redrive is a later record of an older write); every write not
  applied has a dead letter: never a hold or failover write, a ``shed`` one
  only with reason shed, an expiring one only with reason expired; no write is
  both applied and dead-lettered unless a redrive republished it;
* ``us``: only failover writes, never a home-only table, each also applied at
  home, each key at its last such write.

Short in the suite (three examples of at most 8 steps, and one scripted life); ``RG_MODEL_LONG=1`` runs more
and longer examples, shrinking a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import Phase, Verbosity, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test

from regionguard.core.kafka import router_group
from regionguard_testkit.testing import StatePublisher
from tests.harness import free_port
from tests.integration.helpers import (committed, ev_bytes, metric_value, produce_raw, read_to_end, wait_assigned,
                                      wait_metric, wait_until, write_event)

LONG = os.environ.get("RG_MODEL_LONG") == "1"
HOME, FB = "eu", "us"
KEYS = 3
TABLES = {"users": {"key": ["id"], "version": "version"},
          "orders": {"key": ["id"], "allowed_regions": [HOME]}}
POLICIES = ["hold", "failover", "shed"]
SETTLE_S = 90.0


class RealRegionLife(RuleBasedStateMachine):
    #: (regions, rg_config, services) fixtures, set by the test
    fixtures: tuple = ()

    @initialize()
    def start(self) -> None:
        regions, rg_config, self.services = self.fixtures
        self.lr = regions([HOME, FB])
        self.cfg = rg_config(self.lr, partitions=2, tables=TABLES)
        self.states = StatePublisher(self.cfg.load(), heartbeat_s=0.5).start()  # every region closed
        self.port, self.replayer_port = free_port(), free_port()
        self.procs: list = []
        self.router = self._start("router", self.port)
        self.replayer = self._start("replayer", self.replayer_port)
        wait_assigned(self.cfg, "router", HOME, timeout=60)
        self.writes: list[dict] = []          # produce order
        self.killed_after: set[str] = set()   # write ids produced before a router SIGKILL
        self.down = False

    def _start(self, service: str, port: int):
        """Start ``service`` and wait until it serves /metrics: its signal handlers are in place by then, so
        a SIGTERM right after is a clean stop, not a death during start-up."""
        proc = self.services(service, self.cfg.cli_args(service, "--metrics-port", str(port)))
        self.procs.append(proc)
        wait_until(lambda: metric_value(port, "regionguard_build_info") is not None or not proc.alive, timeout=60,
                   what=f"{service} serving /metrics")
        assert proc.alive, proc.log_tail()
        return proc

    # observations ---------------------------------------------------------------------------
    def applied(self, region: str) -> set[str]:
        """Write ids in ``region``'s inbox, read directly (the test's connection bypasses the fault proxy)."""
        try:
            return {r["id"] for r in self.lr.fetch(region, "SELECT write_id::text AS id FROM regionguard_applied")}
        except Exception:  # noqa: BLE001 - the router creates the inbox when it starts
            return set()

    def dead(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in read_to_end(self.cfg.bootstrap, self.cfg.topic("dead-letter")):
            d = json.loads(m.value())
            out.setdefault(d.get("write_id"), []).append(d["reason"])
        return out

    def held(self) -> set[str]:
        return {json.loads(m.value())["id"] for m in read_to_end(self.cfg.bootstrap, self.cfg.topic("held", HOME))
                if m.value() is not None}

    def unplaced(self) -> list[str]:
        """The writes not yet applied at home, held, or dead-lettered (as "seq policy table/key")."""
        seen = self.applied(HOME) | self.held() | set(self.dead())
        return [f"{w['seq']} {w['policy']} {w['table']}/{w['key']['id']}" for w in self.writes if w["id"] not in seen]

    def wait_placed(self) -> None:
        try:
            wait_until(lambda: not self.unplaced(), timeout=SETTLE_S, interval=0.3,
                       what="every write applied, held or dead-lettered")
        except AssertionError:
            raise AssertionError(f"writes nowhere after {SETTLE_S}s: {self.unplaced()}; outage: {self.down}\n"
                                 f"router log:\n{self.router.log_tail(30)}") from None

    # rules ----------------------------------------------------------------------------------
    @rule(items=st.lists(st.tuples(st.sampled_from(POLICIES), st.integers(0, KEYS - 1),
                                   st.sampled_from(sorted(TABLES)), st.none() | st.integers(1, 3)),
                         min_size=1, max_size=4))
    def produce(self, items) -> None:
        evs = []
        for policy, key, table, ttl in items:
            seq = len(self.writes) + 1
            data = {"name": f"w{seq}", "version": seq} if table == "users" else {"user_id": key, "amount": seq}
            extra: dict = {"policy": policy}
            if policy == "failover":
                extra["fallback_regions"] = [FB]
                ttl = None  # known bug (other branch): failover + expired is dead-lettered after the failover
            if ttl is not None:
                extra["expires_at"] = (datetime.now(timezone.utc) + timedelta(seconds=ttl)).isoformat()
            ev = write_event(HOME, table, "upsert", {"id": key}, data, **extra)
            ev["seq"] = seq  # the model's produce order (kept out of the event sent)
            evs.append(ev)
            self.writes.append(ev)
        produce_raw(self.cfg.bootstrap, self.cfg.topic("writes", HOME),
                    [ev_bytes({k: v for k, v in ev.items() if k != "seq"}) for ev in evs])
        self.wait_placed()

    @precondition(lambda m: not m.down)
    @rule()
    def outage(self) -> None:
        proxy = self.lr.proxy(HOME)
        proxy.set_mode("refuse")
        proxy.reset_all()
        self.states.set(HOME, "open", reason="model: outage")
        self.down = True

    @precondition(lambda m: m.down)
    @rule()
    def heal(self) -> None:
        self.lr.proxy(HOME).set_mode("pass")
        self.states.set(HOME, "closed", reason="model: healed")
        self.down = False

    @rule(kill=st.booleans())
    def router_restart(self, kill) -> None:
        if kill:
            self.router.kill()
            self.killed_after |= {w["id"] for w in self.writes}
        else:
            self.router.terminate()
            assert self.router.returncode == 0, self.router.log_tail()
        self.router = self._start("router", self.port)

    @rule(kill=st.booleans())
    def replayer_restart(self, kill) -> None:
        if kill:
            self.replayer.kill()
        else:
            self.replayer.terminate()
            assert self.replayer.returncode == 0, self.replayer.log_tail()
        self.replayer = self._start("replayer", self.replayer_port)

    @precondition(lambda m: not m.down)
    @rule(reason=st.sampled_from(["shed", "expired"]))
    def redrive(self, reason) -> None:
        """The operator redrives one reason's dead letters once the region is back."""
        proc = subprocess.run([sys.executable, "-m", "regionguard.cli", "dead-letters", "redrive", "--reason", reason,
                               "--config", str(self.cfg.path)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        self.wait_read()

    def wait_read(self) -> None:
        """Until the router has committed every record of the writes topic (so redriven ones were routed)."""
        group, topic = router_group(self.cfg.load(), HOME), self.cfg.topic("writes", HOME)

        def caught_up() -> bool:
            ends = {}
            for m in read_to_end(self.cfg.bootstrap, topic):
                ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
            done = committed(self.cfg.bootstrap, group, topic, 2)
            return all(done.get(p, -1) >= end for p, end in ends.items())

        wait_until(caught_up, timeout=SETTLE_S, interval=0.3, what="the router's commits at the writes' end")

    @rule()
    def settle(self) -> None:
        self.settle_and_compare()

    def teardown(self) -> None:
        try:
            if hasattr(self, "lr"):
                self.settle_and_compare()
        finally:
            self.stop()

    def stop(self) -> None:
        for proc in getattr(self, "procs", []):
            if proc.alive:
                proc.terminate()
        if hasattr(self, "states"):
            self.states.stop()

    # the reference model --------------------------------------------------------------------
    def settle_and_compare(self) -> None:
        if self.down:
            self.heal()
        ids = {w["id"] for w in self.writes}
        wait_until(lambda: ids <= self.applied(HOME) | set(self.dead()), timeout=SETTLE_S, interval=0.3,
                   what="every write applied at home or dead-lettered")
        wait_metric(self.port, "regionguard_held_partitions", lambda n: n == 0, region=HOME, timeout=SETTLE_S,
                    what="every partition of eu direct again")
        self.wait_read()
        home, fb, dead = self.applied(HOME), self.applied(FB), self.dead()
        last_record: dict[str, int] = {}      # write id -> offset of its last record (key-partitioned tables)
        redriven: set[str] = set()
        for m in read_to_end(self.cfg.bootstrap, self.cfg.topic("writes", HOME)):
            wid = json.loads(m.value())["id"]
            last_record[wid] = max(last_record.get(wid, -1), m.offset())
            if any(k == "rg-redrive-count" for k, _ in m.headers() or []):
                redriven.add(wid)
        for w in self.writes:
            wid, reasons = w["id"], dead.get(w["id"], [])
            where = f"write {w['seq']} ({w['policy']}, {w['table']}/{w['key']['id']}, expires {w.get('expires_at')})"
            if wid in home and reasons:
                assert wid in redriven or wid in self.killed_after, (
                    f"{where}: applied at home and dead-lettered {reasons}")
                continue  # redriven, or finding dead_letter_then_applied (tests/unit/test_modes_model.py)
            assert (wid in home) != bool(reasons), f"{where}: neither applied at home nor dead-lettered"
            for r in reasons:
                assert (r == "shed" and w["policy"] == "shed") or (r == "expired" and "expires_at" in w), (
                    f"{where}: dead letter {r}")
            if wid in fb:
                assert w["policy"] == "failover" and w["table"] != "orders", f"{where}: applied in {FB}"
                assert wid in home, f"{where}: applied in {FB} by failover, never synced home"
        for region, ids_there in ((HOME, home), (FB, fb)):
            want: dict[tuple[str, int], int] = {}
            newest: dict[tuple[str, int], tuple[int, int]] = {}
            for w in self.writes:
                if w["id"] in ids_there:
                    rank = w["seq"] if w["table"] == "users" else last_record[w["id"]]  # LWW, or record order
                    row = (w["table"], w["key"]["id"])
                    if rank > newest.get(row, (-1, -1))[0]:
                        newest[row] = (rank, w["seq"])
                        want[row] = w["seq"]
            got = {("users", r["id"]): r["version"] for r in self.lr.fetch(region, "SELECT id, version FROM users")}
            got |= {("orders", r["id"]): int(r["amount"])
                    for r in self.lr.fetch(region, "SELECT id, amount FROM orders")}
            assert got == want, f"{region}: rows (table, key) -> write seq differ from the model"


@pytest.mark.slow
def test_a_regions_life_against_the_model(regions, rg_config, services):
    RealRegionLife.fixtures = (regions, rg_config, services)
    try:
        run_state_machine_as_test(RealRegionLife, settings=settings(
            # hypothesis starts with its simplest example (a step or two): the short profile takes three
            max_examples=5 if LONG else 3, stateful_step_count=25 if LONG else 8, deadline=None,
            database=None, print_blob=True, verbosity=Verbosity.verbose,  # the steps, in the captured output
            phases=(Phase.explicit, Phase.generate, Phase.shrink) if LONG else (Phase.explicit, Phase.generate)))
    finally:
        RealRegionLife.fixtures = ()


@pytest.mark.slow
def test_a_scripted_life_outage_kill_heal(regions, rg_config, services):
    """The same rules in a fixed order, so the suite always covers the interesting path: writes of every
    policy held during an outage, the router killed meanwhile, then heal, replay, redrive and compare."""
    RealRegionLife.fixtures = (regions, rg_config, services)
    m = RealRegionLife()
    try:
        m.start()
        m.produce([("hold", 0, "users", None), ("hold", 1, "orders", None)])
        m.outage()
        m.produce([("hold", 0, "users", None), ("failover", 1, "users", None), ("failover", 2, "orders", None),
                   ("shed", 2, "users", None), ("hold", 1, "orders", 30)])
        m.router_restart(kill=True)
        m.produce([("failover", 0, "users", None), ("hold", 1, "orders", None)])
        m.heal()
        m.replayer_restart(kill=False)
        m.redrive("shed")  # the shed write comes back and applies now
        m.produce([("hold", 0, "users", None)])
        m.settle()
    finally:
        m.stop()
        RealRegionLife.fixtures = ()


@pytest.mark.slow
def test_router_restarted_in_an_unreported_outage_still_fails_over(regions, rg_config, services):
    """The real machine's first run, with ``--no-health`` (passive health only), shrunk by hand:
    outage, a write held, router SIGKILL and restart, then a failover write must reach ``us``.

    Model finding B (issue 25): the restarted router saw its held partition, fenced it and waited,
    paused, for a replayer that could not reach the database; it never tried the database itself,
    so new writes of that partition were neither held nor failed over until the heal. It now pings
    the region while it waits (router/region.py, the drain probe)."""
    lr = regions([HOME, FB])
    cfg = rg_config(lr, partitions=1, tables=TABLES)
    router = services("router", cfg.cli_args("router", "--no-health"))
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    wait_assigned(cfg, "router", HOME)
    lr.proxy(HOME).set_mode("refuse")
    lr.proxy(HOME).reset_all()
    held = write_event(HOME, "users", "upsert", {"id": 1}, {"name": "held", "version": 1})
    produce_raw(cfg.bootstrap, cfg.topic("writes", HOME), [ev_bytes(held)])
    wait_until(lambda: [m for m in read_to_end(cfg.bootstrap, cfg.topic("held", HOME)) if m.value()],
               timeout=60, what="the first write held (the router noticed the outage)")
    router.kill()
    services("router2", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", HOME, timeout=60)  # the killed router's members gone, the new one owns all
    fo = write_event(HOME, "users", "upsert", {"id": 2}, {"name": "fo", "version": 1}, policy="failover",
                     fallback_regions=[FB])
    produce_raw(cfg.bootstrap, cfg.topic("writes", HOME), [ev_bytes(fo)])
    wait_until(lambda: lr.fetch(FB, "SELECT name FROM users WHERE id = 2") == [{"name": "fo"}], timeout=15,
               what="the failover write applied in us during the outage")  # ~1 s when it works
