"""A whole regionguard deployment on one machine, for the chaos suite and ``regionguard demo``.

:class:`Stack` starts (or reuses) a broker, creates one database per region on
the local PostgreSQL server -- optionally one region on a private
:class:`~regionguard_testkit.embedded.pgcluster.PgCluster` so it can really crash --
each behind a :class:`~regionguard_testkit.embedded.proxy.FaultProxy`, writes a config
with a unique topic prefix, and runs services as real processes. Faults are
methods: :meth:`Stack.fault` for regions, :meth:`Stack.kill` / :meth:`Stack.restart`
for services.
"""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

from regionguard.core.config import Config
from prometheus_client.parser import text_string_to_metric_families

from ..embedded import Broker, ConfigFile, LocalRegions, PgCluster, ServiceProcess, make_config
from ..embedded.net import free_port
from .loadgen import VERIFY_SCHEMA, verify_tables

__all__ = ["Stack", "StackError", "REGION_FAULTS", "read_json_topic"]

#: Region faults :meth:`Stack.fault` knows.
REGION_FAULTS = ("blackhole", "refuse", "reset", "latency", "pg_crash")


class StackError(RuntimeError):
    pass


class Stack:
    def __init__(self, workdir: str | Path, *, regions: tuple[str, ...] = ("eu", "us", "ap"),
                 crashable: str | None = None, partitions: int = 6, broker: Broker | None = None,
                 overrides: Mapping[str, Any] | None = None, prefix: str | None = None,
                 pg_host: str = "127.0.0.1", pg_port: int = 5432,
                 log: Callable[[str], None] | None = None) -> None:
        self.workdir = Path(workdir).resolve()  # services run with it as cwd: keep every path absolute
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logdir = self.workdir / "logs"
        self.region_names = tuple(regions)
        self.crashable = crashable
        self.partitions = partitions
        self._own_broker = broker is None
        self.broker = broker
        self.overrides = dict(overrides or {})
        self.prefix = prefix or f"rg{uuid.uuid4().hex[:8]}"
        self.pg_host, self.pg_port = pg_host, pg_port
        self.log = log or (lambda _s: None)
        self.cluster: PgCluster | None = None
        self.regions: LocalRegions | None = None
        self.cf: ConfigFile | None = None
        self.cfg: Config | None = None
        self.procs: dict[str, ServiceProcess] = {}
        self.metrics_ports: dict[str, int] = {}  # service name -> its /metrics port (kept across restarts)
        self.faults: dict[str, str] = {}   # region -> active fault

    # ------------------------------------------------------------------ infrastructure
    def start_infra(self) -> "Stack":
        if self.broker is None:
            self.broker = Broker.from_env(log_path=self.logdir / "broker.log")
        if not self.broker.is_running():
            self.broker.start()
        servers = {}
        if self.crashable:
            self.cluster = PgCluster(f"{self.prefix}-{self.crashable}", base_dir=None).start()
            servers[self.crashable] = ("127.0.0.1", self.cluster.port)
        self.regions = LocalRegions(self.region_names, prefix=self.prefix, host=self.pg_host, port=self.pg_port,
                                    servers=servers)
        self.regions.create()
        self.regions.setup_schema(VERIFY_SCHEMA)
        overrides = {"metrics": {"port": 0}}
        from ..embedded.config import deep_merge

        overrides = deep_merge(overrides, self.overrides)
        self.cf = make_config(self.regions, self.broker.bootstrap, self.workdir / "regionguard.yaml",
                              partitions=self.partitions, tables=verify_tables(self.region_names), topic_prefix=f"{self.prefix}.",
                              overrides=overrides)
        self.cfg = self.cf.load()
        return self

    @property
    def direct_dsns(self) -> dict[str, str]:
        assert self.regions is not None
        return self.regions.direct_dsns()

    # ------------------------------------------------------------------ services
    def start_service(self, name: str, kind: str | None = None, *extra: str,
                      env: Mapping[str, str] | None = None) -> ServiceProcess:
        """Start ``regionguard <kind> --config ...`` as ``name`` (kind defaults to name without digits)."""
        assert self.cf is not None
        kind = kind or re.sub(r"\d+$", "", name)
        argv = self.cf.cli_args(kind, *extra)
        if kind in ("router", "replayer"):
            argv += ["--instance", name]
        elif kind == "health":
            argv += ["--observer", name]
        if kind in ("router", "replayer", "health", "features") and "--metrics-port" not in extra:
            # a port of our choosing, kept across restarts: readiness is read from /metrics, not logs
            port = self.metrics_ports.setdefault(name, free_port())
            argv += ["--metrics-port", str(port)]
        proc = self.procs.get(name)
        if proc is not None and proc.alive:
            return proc
        if proc is None:
            proc = ServiceProcess(name, argv, env, log_dir=self.logdir, cwd=self.workdir)
            self.procs[name] = proc
        else:
            proc.start()
        return proc

    def metric(self, name: str, sample: str, **labels: str) -> float | None:
        """Sum of ``sample`` with ``labels`` on service ``name``'s /metrics; None while it doesn't answer."""
        port = self.metrics_ports.get(name)
        proc = self.procs.get(name)
        if port is None or proc is None or not proc.alive:
            return None
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
                   if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    def wait_router_ready(self, name: str, timeout: float = 60.0) -> None:
        """Router ``name`` owns at least one partition of every region and knows its mode (held or
        direct: looked up after the assignment), as its /metrics say."""
        deadline = time.monotonic() + timeout
        proc = self.procs[name]
        while time.monotonic() < deadline:
            if not proc.alive:
                raise StackError(f"{name} exited (rc={proc.returncode}):\n{proc.log_tail()}")
            owned = [sum(self.metric(name, g, region=r) or 0 for g in ("regionguard_held_partitions",
                                                                       "regionguard_direct_partitions"))
                     for r in self.region_names]
            if all(n >= 1 for n in owned):
                return
            time.sleep(0.1)
        raise StackError(f"{name}: not assigned in every region after {timeout}s:\n{proc.log_tail()}")

    def wait_health_leader(self, timeout: float = 60.0) -> str:
        """The health service whose /metrics say it is the deciding leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in list(self.procs):
                if name.startswith("health") and self.metric(name, "regionguard_health_leader") == 1:
                    return name
            time.sleep(0.2)
        raise StackError(f"no health leader after {timeout}s")

    def kill(self, name: str) -> None:
        """SIGKILL a service (a crash)."""
        self.procs[name].kill()

    def restart(self, name: str) -> ServiceProcess:
        proc = self.procs[name]
        if not proc.alive:
            proc.start()
        return proc

    def stop_service(self, name: str, timeout: float = 15.0) -> int | None:
        return self.procs[name].terminate(timeout)

    # ------------------------------------------------------------------ region faults
    def fault(self, region: str, kind: str, **kw: Any) -> None:
        """Inject ``kind`` (see :data:`REGION_FAULTS`) into ``region``; :meth:`heal` undoes it."""
        assert self.regions is not None
        proxy = self.regions.proxy(region)
        if kind == "blackhole":
            proxy.set_mode("blackhole")
        elif kind == "refuse":
            proxy.set_mode("refuse")
            proxy.reset_all()
        elif kind == "reset":
            proxy.set_mode("reset")  # aborts live connections, then passes again
        elif kind == "latency":
            proxy.set_mode("latency", delay_s=kw.get("delay_s", 0.5))
        elif kind == "pg_crash":
            if self.cluster is None or region != self.crashable:
                raise StackError(f"region {region} is not on a crashable cluster")
            self.cluster.crash()
        else:
            raise StackError(f"unknown fault {kind!r}")
        if kind != "reset":
            self.faults[region] = kind

    def heal(self, region: str) -> None:
        assert self.regions is not None
        kind = self.faults.pop(region, None)
        if kind == "pg_crash":
            assert self.cluster is not None
            self.cluster.start()
        else:
            self.regions.proxy(region).set_mode("pass")

    def heal_all(self) -> None:
        for region in list(self.faults):
            self.heal(region)

    # ------------------------------------------------------------------ teardown
    def close(self, *, keep_data: bool = False) -> None:
        """Stop services and proxies; drop the databases (unless ``keep_data``) and the private cluster."""
        for proc in reversed(list(self.procs.values())):
            try:
                proc.terminate(timeout=10)
            except Exception:  # noqa: BLE001 - teardown must go on
                pass
        if self.regions is not None:
            try:
                self.heal_all()
            except Exception:  # noqa: BLE001 - test kit: proxies may be gone already; teardown must go on
                pass
            try:
                if keep_data:
                    for p in self.regions._proxies.values():
                        p.stop()
                    self.log(f"kept databases {self.regions.direct_dsns()}")
                else:
                    self.regions.drop()
            except Exception as exc:  # noqa: BLE001
                self.log(f"warning: dropping region databases failed: {exc}")
        if self.cluster is not None:
            if keep_data:
                import atexit

                atexit.unregister(self.cluster._atexit)
                self.cluster.stop()
                self.log(f"kept cluster {self.cluster.base} (port {self.cluster.port}); start it with "
                         f"PgCluster(base_dir=..., port=...).start()")
            else:
                self.cluster.destroy()
        if self._own_broker and self.broker is not None:
            self.broker.close()

    def __enter__(self) -> "Stack":
        return self.start_infra()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def logs_tail(self, n: int = 30) -> str:
        return "\n".join(f"--- {name} ---\n{p.log_tail(n)}" for name, p in self.procs.items())



def read_json_topic(cfg: Config, kind: str, *, idle: float = 0.5, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every JSON record of ``<prefix><kind>`` (all partitions, from the beginning), read without a group."""
    import json

    from confluent_kafka import Consumer, TopicPartition

    topic = cfg.topic(kind)
    c = Consumer(cfg.kafka_client_conf(**{"group.id": f"rg-verify-{uuid.uuid4().hex[:8]}",
                                          "enable.auto.commit": False, "log_level": 0}))
    out: list[dict[str, Any]] = []
    try:
        md = c.list_topics(topic, timeout=10)
        if topic not in md.topics:
            return out
        c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
        last = start = time.monotonic()
        while time.monotonic() - last < idle and time.monotonic() - start < timeout:
            for m in c.consume(1000, 0.1):
                if m.error() is None and m.value():
                    try:
                        out.append(json.loads(m.value()))
                    except ValueError:
                        pass
                    last = time.monotonic()
    finally:
        c.close()
    return out
