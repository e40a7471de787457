"""Three regions on one machine, each on its own loopback address, for the regional chaos run (issue 26).

Region ``rX`` (index i) lives on ``127.0.1.<i+1>``: one Apache Kafka node (combined broker and
controller, ``broker.rack`` = ``rX``), its database on the shared PostgreSQL server behind a
:class:`~regionguard_testkit.embedded.proxy.FaultProxy` bound to that address (in a process of its
own, :mod:`.dbproxy`), its own regionguard
services as real processes (``router --regions rX``, ``replayer --regions rX``, ``health --observer
rX``, from a config with ``kafka.client_rack: rX`` and ``/metrics`` on the region's address), and its
application producers (:mod:`.producer`), which write for every region's users.

Topics: replication 3, ``min.insync.replicas`` 2; brokers with unclean leader election off and the
failover settings docs/topology.md recommends (:data:`BROKER_CONFIG`).

With ``partitions=True`` (root, nftables, cgroup v2) every process of a region is started inside the
region's cgroup (:class:`~regionguard_testkit.embedded.partition.RegionCgroups`: clients here cannot
bind a source address, every connection leaves from 127.0.0.1, and only the cgroup tells whose it
is), and :meth:`RegionalBed.cut` / :meth:`RegionalBed.heal_partition` cut a region off the others
(:class:`~regionguard_testkit.embedded.partition.Partition`; the database proxies count by address).
``wrap(region, argv)`` is the same hook for any other launcher.

Written here because it is ours: the assembly of the kit's launchers into regions.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable

from prometheus_client.parser import text_string_to_metric_families

from ..embedded.config import ConfigFile, make_config
from ..embedded.kafka import ApacheKafka
from ..embedded.net import free_port
from ..embedded.procs import ServiceProcess
from ..embedded.regions import LocalRegions
from ..verify.loadgen import VERIFY_SCHEMA, Model, verify_tables
from .dbproxy import RegionProxy

__all__ = ["BROKER_CONFIG", "RegionalBed", "BedError", "region_address"]

#: Health probes for a shared 2-core host running three brokers and twelve services: at the defaults
#: (every 0.05 s, 0.3 s deadline) three observers' probes timed out under load, every timed-out probe
#: reconnected, and the abandoned connects forked 900+ PostgreSQL backends (every region opened, the
#: server refused clients). A slower probe with a longer deadline keeps the bed out of that spiral.
HEALTH_CONFIG = {"interval_s": 0.1, "timeout_s": 1.0}

#: docs/topology.md: fence a dead broker in 3 s instead of 9 s; never elect an out-of-sync replica.
BROKER_CONFIG = {
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    "unclean.leader.election.enable": "false",
    "min.insync.replicas": "2",
    "default.replication.factor": "3",
}

SERVICES = ("router", "replayer", "health")


class BedError(RuntimeError):
    pass


def region_address(index: int) -> str:
    return f"127.0.1.{index + 1}"


class RegionalBed:
    """Start with :meth:`start`; :meth:`kill_region` and :meth:`restore_region` are the full regional event."""

    def __init__(self, workdir: str | Path, *, regions: tuple[str, ...] = ("r0", "r1", "r2"), partitions: int = 6,
                 rate: float = 100.0, heap: str = "384m", seed: int = 1,
                 wrap: Callable[[str, list[str]], list[str]] | None = None, partitions_cut: bool = False,
                 broker_config: dict[str, str] | None = None, log: Callable[[str], None] | None = None,
                 client: dict[str, Any] | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logdir = self.workdir / "logs"
        self.names = tuple(regions)
        self.addr = {r: region_address(i) for i, r in enumerate(self.names)}
        self.partitions, self.rate, self.heap, self.seed = partitions, rate, heap, seed
        self.wrap = wrap
        self.broker_config = {**BROKER_CONFIG, **(broker_config or {})}
        self.log = log or (lambda _s: None)
        self.client = dict(client or {})                 # kafka.client of every region's config
        self.prefix = f"rg{uuid.uuid4().hex[:8]}"
        self.kafka: ApacheKafka | None = None
        self.regions: LocalRegions | None = None
        self.configs: dict[str, ConfigFile] = {}
        self.procs: dict[str, ServiceProcess] = {}       # "<kind>-<region>" -> process
        self.ports: dict[str, int] = {}                  # service -> its /metrics port (kept across restarts)
        self.journals: list[Path] = []                   # every producer incarnation's model journal
        self.generation = {r: 0 for r in self.names}     # producer incarnations per region (lanes)
        self.down: set[str] = set()
        self.partitions_cut = partitions_cut
        self.proxies: dict[str, RegionProxy] = {}
        self.cgroups: Any = None
        self.partition: Any = None

    # ------------------------------------------------------------------ start
    def start(self, timeout: float = 300.0) -> "RegionalBed":
        if self.partitions_cut:
            from ..embedded.partition import Partition, RegionCgroups

            self.cgroups = RegionCgroups(self.names)
            self.partition = Partition(self.cgroups, self.addr).start()
            self.wrap = self.cgroups.argv_in
        self.kafka = ApacheKafka(len(self.names), workdir=self.workdir / "kafka", heap=self.heap,
                                 hosts=[self.addr[r] for r in self.names], racks=list(self.names),
                                 broker_config=self.broker_config)
        if self.wrap is not None:
            for r, node in zip(self.names, self.kafka.nodes):
                node.wrap = (lambda argv, r=r: self.wrap(r, argv))  # type: ignore[misc]
        self.kafka.start(timeout=timeout)
        self.regions = LocalRegions(self.names, prefix=self.prefix)
        self.regions.create()
        for r in self.names:   # the databases only: each region's proxy runs in a process of its own
            self.regions.proxy(r).stop()
        self.regions.setup_schema(VERIFY_SCHEMA)
        self.proxy_ports = {r: free_port(self.addr[r]) for r in self.names}
        for r in self.names:
            self._start_proxy(r)
        # no TLS on loopback: fresh probe connections, each with a TLS handshake, are CPU this
        # 2-core machine does not have
        self.dsns = {r: f"postgresql://{self.regions.user}@{self.addr[r]}:{self.proxy_ports[r]}/"
                        f"{self.regions.databases[r]}?sslmode=disable" for r in self.names}
        for i, r in enumerate(self.names):
            overrides: dict[str, Any] = {
                "kafka": {"replication_factor": 3, "min_insync_replicas": 2, "client_rack": r,
                          **({"client": self.client} if self.client else {})},
                "metrics": {"host": self.addr[r], "port": 0},
                "health": HEALTH_CONFIG,
            }
            self.configs[r] = make_config(self.dsns, self.kafka.bootstrap, self.workdir / f"regionguard-{r}.yaml",
                                          partitions=self.partitions, tables=verify_tables(self.names),
                                          topic_prefix=f"{self.prefix}.", overrides=overrides,
                                          create_topics=i == 0)
        self.cfg = self.configs[self.names[0]].load()
        for r in self.names:
            self._start_services(r)
        return self

    # ------------------------------------------------------------------ database proxies
    def _start_proxy(self, region: str) -> None:
        assert self.regions is not None
        proxy = RegionProxy(region, self.addr[region], self.proxy_ports[region],
                            (self.regions.host, self.regions.port), self.workdir, self.logdir)
        self.proxies[region] = proxy
        self.procs[f"dbproxy-{region}"] = proxy.proc

    def proxy_mode(self, region: str, mode: str) -> None:
        """``blackhole`` or ``pass``; returns once the proxy says the mode is in effect."""
        self.proxies[region].set_mode(mode)

    def node_of(self, region: str) -> int:
        return self.names.index(region) + 1

    def _service(self, name: str, region: str, argv: list[str], module: str = "regionguard.cli") -> ServiceProcess:
        proc = self.procs.get(name)
        if proc is None:
            proc = ServiceProcess(name, argv, log_dir=self.logdir, cwd=self.workdir, start=False, module=module)
            if self.wrap is not None:
                proc.argv = self.wrap(region, proc.argv)
            self.procs[name] = proc
        proc.start()
        return proc

    def _start_services(self, region: str) -> None:
        cf = self.configs[region]
        for kind in SERVICES:
            name = f"{kind}-{region}"
            port = self.ports.setdefault(name, free_port(self.addr[region]))
            extra = ["--observer", region] if kind == "health" else ["--regions", region, "--instance", name]
            self._service(name, region, cf.cli_args(kind, *extra) + ["--metrics-port", str(port)])
        self._start_producer(region)

    def _start_producer(self, region: str) -> None:
        gen = self.generation[region]
        self.generation[region] = gen + 1
        lane = gen * len(self.names) + self.names.index(region)
        journal = self.workdir / f"model-{region}-{gen}.jsonl"
        self.journals.append(journal)
        name = f"producer-{region}"
        argv = ["--config", str(self.configs[region].path), "--home", region, "--lane", str(lane),
                "--rate", str(self.rate), "--journal", str(journal), "--seed", str(self.seed * 100 + lane)]
        old = self.procs.pop(name, None)
        if old is not None and old.alive:
            old.terminate(30)
        self._service(name, region, argv, module="regionguard_testkit.regional.producer")

    # ------------------------------------------------------------------ observing
    def metric(self, name: str, sample: str, **labels: str) -> float | None:
        """Sum of ``sample`` with ``labels`` on service ``name``'s /metrics; None while it doesn't answer."""
        proc, port = self.procs.get(name), self.ports.get(name)
        if proc is None or port is None or not proc.alive:
            return None
        region = name.rsplit("-", 1)[1]
        try:
            text = urllib.request.urlopen(f"http://{self.addr[region]}:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                   if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    def direct(self, region: str) -> tuple[float, float] | None:
        """(direct, held) partitions of ``region`` as its router reports them."""
        d = self.metric(f"router-{region}", "regionguard_direct_partitions", region=region)
        h = self.metric(f"router-{region}", "regionguard_held_partitions", region=region)
        return None if d is None or h is None else (d, h)

    def wait_ready(self, timeout: float = 300.0) -> float:
        """Every router owns all its region's partitions in direct mode, and a health leader exists."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            for name, proc in self.procs.items():
                if not proc.alive and name.rsplit("-", 1)[1] not in self.down:
                    raise BedError(f"{name} exited (rc={proc.returncode}):\n{proc.log_tail()}")
            ready = all(self.direct(r) == (self.partitions, 0) for r in self.names)
            leader = any(self.metric(f"health-{r}", "regionguard_health_leader") == 1 for r in self.names)
            if ready and leader:
                return time.monotonic() - t0
            time.sleep(0.25)
        raise BedError(f"bed not ready after {timeout}s: {[(r, self.direct(r)) for r in self.names]}")

    def model(self) -> Model:
        """Every producer incarnation's journal merged (what was sent, and what was acknowledged)."""
        m = Model()
        for j in self.journals:
            if j.exists():
                Model.load(j, into=m)
        return m

    @property
    def direct_dsns(self) -> dict[str, str]:
        assert self.regions is not None
        return {r: d + "?sslmode=disable" for r, d in self.regions.direct_dsns().items()}

    # ------------------------------------------------------------------ the full regional event
    def region_procs(self, region: str) -> list[ServiceProcess]:
        return [p for n, p in self.procs.items() if n.rsplit("-", 1)[1] == region and not n.startswith("dbproxy-")]

    def kill_region(self, region: str) -> float:
        """At one instant: blackhole the region's database, SIGKILL its broker node, services and
        producers. Returns the unix time of the event."""
        assert self.kafka is not None and self.regions is not None
        node = self.kafka.node(self.node_of(region))
        self.proxy_mode(region, "blackhole")
        at = time.time()
        pids = [p.pid for p in self.region_procs(region) if p.alive]
        if node.proc is not None:
            node.proc.send_signal(signal.SIGKILL)
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # reap after every signal went out: nothing of the region runs on while another is waited for
        node.signal(signal.SIGKILL, 10)
        for p in self.region_procs(region):
            p.kill()
        self.down.add(region)
        return at

    def restore_region(self, region: str) -> float:
        """Bring the region back at once: database reachable, broker node, services and a new producer
        started (not waited for). Returns the unix time of the return."""
        assert self.kafka is not None and self.regions is not None
        at = time.time()
        self.proxy_mode(region, "pass")
        self.kafka.start_node(self.node_of(region), wait=False)
        self._start_services(region)
        self.down.discard(region)
        return at

    # ------------------------------------------------------------------ partitions
    def cut(self, region: str, others: list[str] | None = None, *, direction: str = "both") -> float:
        """Drop traffic between ``region`` and ``others`` (default: all); returns the unix time."""
        if self.partition is None:
            raise BedError("this bed was started without partitions_cut=True")
        self.partition.cut(region, others, direction=direction)  # type: ignore[arg-type]
        return time.time()

    def heal_partition(self) -> float:
        if self.partition is not None:
            self.partition.heal()
        return time.time()

    def prefer_leaders(self, timeout: float = 30.0) -> int:
        """Every partition led by its preferred replica again, as Kafka's own leader rebalance does
        after a while (``leader.imbalance.check.interval.seconds``, 300 s): a broker fenced once under
        load leads nothing until then, and an event of its region would cost nothing. So every event
        starts with the failed region leading its share. Returns how many partitions were off their
        preferred replica (best effort: after ``timeout`` the event starts anyway, with a warning)."""
        from confluent_kafka import ElectionType, TopicPartition
        from confluent_kafka.admin import AdminClient

        assert self.kafka is not None
        admin = AdminClient({"bootstrap.servers": self.kafka.bootstrap})
        deadline = time.monotonic() + timeout
        moved = -1
        while time.monotonic() < deadline:
            md = admin.list_topics(timeout=10)
            off = [TopicPartition(t, p.id) for t, tm in md.topics.items()
                   if t.startswith(self.prefix) or t == "__consumer_offsets"
                   for p in tm.partitions.values() if p.replicas and p.leader != p.replicas[0]]
            if moved < 0:
                moved = len(off)
            if not off:
                return moved
            try:
                # no request_timeout: confluent-kafka 2.16 refuses it ("more argument specifiers than keyword list")
                admin.elect_leaders(ElectionType.PREFERRED, off).result(timeout=15)
            except Exception as exc:  # noqa: BLE001 - a replica still catching up: asked again below
                self.log(f"preferred leader election: {exc}")
            time.sleep(0.5)
        # best effort: an event on an unbalanced cluster is still an event (the report says so)
        self.log(f"warning: partitions not all led by their preferred replicas after {timeout}s")
        return moved

    def watch(self, region: str, out: Path, interval: float = 0.2) -> ServiceProcess:
        """Start :mod:`.watch` inside ``region``'s network (so a node cut off from it never answers):
        leaders, ISRs, the routers' group coordinators and /metrics, appended to ``out``."""
        assert self.kafka is not None
        argv = ["--bootstrap", self.kafka.bootstrap, "--prefix", self.prefix, "--out", str(out),
                "--interval", str(interval)]
        for r in self.names:
            argv += ["--metrics", f"router-{r}=http://{self.addr[r]}:{self.ports[f'router-{r}']}/metrics"]
        name = f"watch-{region}"
        self.procs.pop(name, None)
        return self._service(name, region, argv, module="regionguard_testkit.regional.watch")

    # ------------------------------------------------------------------ teardown
    def stop_producers(self, timeout: float = 90.0) -> None:
        """SIGTERM every producer (each flushes its last batch), then wait."""
        for name, p in self.procs.items():
            if name.startswith("producer-") and p.alive:
                p._signal_group(signal.SIGTERM)
        for name, p in self.procs.items():
            if name.startswith("producer-"):
                p.terminate(timeout)

    def close(self, *, keep: bool = False) -> None:
        for p in reversed(list(self.procs.values())):
            try:
                p.terminate(10)
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        if self.regions is not None:
            try:
                if keep:
                    self.log(f"kept databases {self.regions.direct_dsns()}")
                else:
                    self.regions.drop()
            except Exception as exc:  # noqa: BLE001
                self.log(f"warning: dropping region databases failed: {exc}")
        if self.kafka is not None:
            self.kafka.close()
        for owner in (self.partition, self.cgroups):   # rules first, then the groups they name
            if owner is not None:
                try:
                    owner.close()
                except Exception as exc:  # noqa: BLE001 - teardown goes on; sweep_stale() finds leftovers
                    self.log(f"warning: partition cleanup failed: {exc}")

    def logs_tail(self, n: int = 20) -> str:
        return "\n".join(f"--- {name} ---\n{p.log_tail(n)}" for name, p in self.procs.items())

    def __enter__(self) -> "RegionalBed":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
