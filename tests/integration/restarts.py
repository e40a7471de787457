"""Restart a region's router again and again after outages, and time how long each takes to resume.

Shared by ``test_router_restart.py`` (a few restarts, both brokers) and the
chaos suite's long loop (``tests/chaos/test_restart_loop.py``). Time to resume
is measured from starting the new router process to the last of a fresh batch
of writes applied in *every* region, so it includes the process start and the
consumer group join on the broker under test. Everything is observed from
outside: rows and inbox rows in PostgreSQL, the held topic, and the routers'
/metrics -- never their logs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tests.harness import free_port
from tests.integration.helpers import ev_bytes, metric_value, produce_raw, read_topic, wait_until, write_event


def applied(lr: Any, region: str) -> int:
    try:
        return lr.count(region, "regionguard_applied")
    except Exception:  # noqa: BLE001 - the router creates the inbox when it starts
        return 0


@dataclass
class RestartLoop:
    """One router (plus a replayer that can be stopped and started) over ``regions``; ``home`` has outages."""

    lr: Any
    cfg: Any
    services: Callable[..., Any]
    regions: list[str]
    home: str
    batch: int = 40
    next_id: int = 0
    produced: dict[str, int] = field(default_factory=dict)
    times: list[tuple[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.router_args = self.cfg.cli_args("router", "--no-health", "--metrics-port", str(self.port))
        self.router = self.services("router", self.router_args)
        self.replayer = None
        self.produced = {r: 0 for r in self.regions}

    # writes ----------------------------------------------------------------------------------
    def _produce(self, region: str, n: int, version: int = 1) -> None:
        evs = [write_event(region, "users", "upsert", {"id": i}, {"name": f"v{version}", "version": version})
               for i in range(self.next_id, self.next_id + n)]
        self.next_id += n
        produce_raw(self.cfg.bootstrap, self.cfg.topic("writes", region), [ev_bytes(e) for e in evs])
        self.produced[region] += n

    def write_everywhere(self) -> None:
        for r in self.regions:
            self._produce(r, self.batch)

    def all_applied(self) -> bool:
        return all(applied(self.lr, r) >= self.produced[r] for r in self.regions)

    def held_partitions(self) -> float | None:
        return metric_value(self.port, "regionguard_held_partitions", region=self.home)

    # replayer --------------------------------------------------------------------------------
    def start_replayer(self) -> None:
        if self.replayer is None or not self.replayer.alive:
            self.replayer = self.services("replayer", self.cfg.cli_args("replayer", "--no-health"))

    def stop_replayer(self) -> None:
        if self.replayer is not None and self.replayer.alive:
            self.replayer.terminate()
            assert self.replayer.returncode == 0, self.replayer.log_tail()

    # faults ----------------------------------------------------------------------------------
    def outage(self, n: int = 30) -> None:
        """Hold writes of ``home`` during an outage, heal, and wait until they are replayed and every
        partition of the region is direct again (needs the replayer running)."""
        self.start_replayer()
        held_before = len([m for m in read_topic(self.cfg.bootstrap, self.cfg.topic("held", self.home), idle=0.3)
                           if m.value() is not None])
        proxy = self.lr.proxy(self.home)
        proxy.set_mode("refuse")
        proxy.reset_all()
        self._produce(self.home, n)
        wait_until(lambda: len([m for m in read_topic(self.cfg.bootstrap, self.cfg.topic("held", self.home),
                                                      idle=0.3) if m.value() is not None]) >= held_before + n,
                   timeout=60, what="writes diverted to the held topic")
        proxy.set_mode("pass")
        wait_until(self.all_applied, timeout=90, what="held writes replayed")
        wait_until(lambda: self.held_partitions() == 0, timeout=90, what="every partition direct again")

    def restart(self, *, kill: bool = False, bound_s: float = 30.0) -> float:
        """Stop the router (SIGKILL or SIGTERM), start a new one, write to every region; seconds until all
        of it is applied. Fails when that takes longer than ``bound_s`` (plus slack to report it)."""
        if kill:
            self.router.kill()
        else:
            self.router.terminate()
            assert self.router.returncode == 0, self.router.log_tail()
        t0 = time.monotonic()
        self.router = self.services("router", self.router_args)
        self.write_everywhere()
        wait_until(self.all_applied, timeout=bound_s + 30,
                   what=f"writes applied in {self.regions} after a router {'SIGKILL' if kill else 'SIGTERM'}")
        dt = time.monotonic() - t0
        self.times.append(("kill" if kill else "term", dt))
        return dt

    # results ----------------------------------------------------------------------------------
    def summary(self) -> str:
        out = []
        for kind in ("term", "kill"):
            ts = [t for k, t in self.times if k == kind]
            if ts:
                out.append(f"{kind}: n={len(ts)} median {statistics.median(ts):.1f} s, max {max(ts):.1f} s")
        return "; ".join(out)

    def check_none_lost(self) -> None:
        """Every write produced is applied: one inbox row each (the inbox's key allows no second), and
        one row each in ``users`` (every write has its own row id)."""
        for r in self.regions:
            assert applied(self.lr, r) == self.produced[r], (r, applied(self.lr, r), self.produced[r])
            assert self.lr.count(r, "users") == self.produced[r], (r, self.lr.count(r, "users"), self.produced[r])
