"""Apache Kafka 4 (KRaft) on loopback, from jars resolved with Maven: 1 node or a 3-node cluster.

The test suite, the chaos suite and the benchmarks run on the broker our users
run. Nothing is downloaded from anywhere but Maven Central: :func:`kafka_libs`
writes a small pom naming ``org.apache.kafka:kafka_2.13`` (plus the tools jar
for the metadata quorum command and a log4j binding) and lets
``mvn dependency:copy-dependencies`` fill a cache outside the repository
(``$RG_CACHE_DIR`` or ``~/.cache/regionguard``). Each node is one JVM running
``kafka.Kafka`` in combined broker+controller mode with a static controller
quorum, small heaps and test-friendly settings
(``group.initial.rebalance.delay.ms=0``, few offsets partitions).

Written by hand because no maintained Python package starts a real Kafka 4
broker without Docker, and Docker does not run on these machines.

:class:`ApacheKafka` has the same surface as the tansu :class:`~.broker.Broker`
(``start``, ``stop``, ``kill``, ``restart``, ``bootstrap``, ``ping``), plus
per-node faults for the chaos suite: :meth:`ApacheKafka.kill_node`,
:meth:`ApacheKafka.stop_node`, :meth:`ApacheKafka.start_node` and
:meth:`ApacheKafka.active_controller`. Unlike tansu, data survives a restart.
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Callable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from .errors import BrokerError
from .net import free_port

__all__ = ["KAFKA_VERSION", "ApacheKafka", "KafkaNode", "kafka_libs"]

KAFKA_VERSION = os.environ.get("RG_KAFKA_VERSION", "4.1.1")
LOG4J_VERSION = "2.24.3"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>regionguard.embedded</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """status = error
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
# fencing, elections and ISR changes: a failover's timeline (docs/chaos.md, the regional run)
logger.fence.name = org.apache.kafka.controller.ClusterControlManager
logger.fence.level = INFO
logger.beat.name = org.apache.kafka.controller.BrokerHeartbeatManager
logger.beat.level = INFO
logger.isr.name = kafka.cluster.Partition
logger.isr.level = INFO
"""


def cache_dir() -> Path:
    return Path(os.environ.get("RG_CACHE_DIR") or Path.home() / ".cache" / "regionguard")


def kafka_libs(version: str = KAFKA_VERSION, *, timeout: float = 600.0) -> Path:
    """The folder of every jar Apache Kafka ``version`` needs, resolved with Maven once and cached."""
    home = cache_dir() / f"kafka-{version}"
    libs = home / "libs"
    if (libs / ".complete").exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:  # two processes resolving at once wait for each other
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / ".complete").exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("Apache Kafka needs Maven (mvn) to resolve its jars; install maven, "
                              "or set RG_BROKER=tansu or KAFKA_BOOTSTRAP")
        (home / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
        staging = home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        proc = subprocess.run([mvn, "-q", "-B", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
                               f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not (staging / f"kafka_2.13-{version}.jar").exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise BrokerError(f"mvn could not resolve Apache Kafka {version}: " + " | ".join(tail))
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        (libs / ".complete").write_text(version)
    return libs


def _cluster_id() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid``, never one starting with '-': the storage tool would
    take it for an option.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaNode:
    """One combined broker+controller JVM. Ports and data directory are kept across restarts."""

    def __init__(self, node_id: int, home: Path, host: str) -> None:
        self.node_id = node_id
        self.home = home
        self.host = host
        self.port = free_port(host)
        self.controller_port = free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        #: wraps the JVM's argv at every start (e.g. to start it inside a region's cgroup)
        self.wrap: Callable[[list[str]], list[str]] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    def properties(self, voters: str, nodes: int, extra: dict[str, str]) -> str:
        rf = min(3, nodes)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            "num.partitions": "1",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(min(2, rf)),
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": str(min(2, rf)),
            # tests form many short-lived groups: don't wait 3 s for more members to show up
            "group.initial.rebalance.delay.ms": "0",
            # compaction and retention run within seconds, so tests can observe them
            "log.cleaner.backoff.ms": "1000",
            "log.retention.check.interval.ms": "5000",
            "auto.create.topics.enable": "true",
            **extra,
        }
        return "".join(f"{k}={v}\n" for k, v in props.items())

    def start(self, java: str, classpath: str, heap: str) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        # C1 only: on a 2-core test machine the C2 compiler of a fresh broker took 19-27% of a core,
        # which the router, PostgreSQL and the tests under it need more (README, "Latest figures")
        argv = [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
                "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                "-cp", classpath, "kafka.Kafka", str(self.home / "server.properties")]
        if self.wrap is not None:
            argv = self.wrap(argv)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} start node {self.node_id}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int, timeout: float) -> None:
        if not self.running():
            self.proc = None
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class ApacheKafka:
    """A private Apache Kafka 4 cluster of ``nodes`` KRaft nodes on loopback.

    ``racks`` sets ``broker.rack`` per node (a stretch cluster over regions, docs/topology.md) and
    the replica selector that lets a consumer with ``client.rack`` fetch from its rack (KIP-392).
    ``stop`` is a clean shutdown (SIGTERM: controlled shutdown, leadership
    moved), ``kill`` a crash (SIGKILL). Data lives under ``workdir`` (a fresh
    temporary folder by default, removed by :meth:`close`).
    """

    external = False
    kind = "apache"

    def __init__(self, nodes: int = 1, *, workdir: str | os.PathLike[str] | None = None,
                 host: str = "127.0.0.1", heap: str = "512m", version: str = KAFKA_VERSION,
                 broker_config: dict[str, str] | None = None, racks: list[str] | None = None,
                 hosts: list[str] | None = None) -> None:
        """``racks``: one ``broker.rack`` per node (node i+1 gets ``racks[i]``), as a stretch cluster has;
        ``hosts``: one loopback address per node (each region on its own address), else ``host`` for all."""
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        if hosts is not None and len(hosts) != nodes:
            raise ValueError("hosts needs one address per node")
        self.host = host
        self.heap = heap
        self.version = version
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="rg-kafka-"))
        self.nodes = [KafkaNode(i + 1, self.workdir / f"node{i + 1}", hosts[i] if hosts else host)
                      for i in range(nodes)]
        self.broker_config = dict(broker_config or {})
        if racks is not None and len(racks) != nodes:
            raise ValueError("racks needs one rack per node")
        self.racks = list(racks) if racks else None
        self._formatted = False
        self._classpath = ""
        self.java = shutil.which("java") or "java"
        atexit.register(self._atexit)

    # --- the Broker surface -------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def log_path(self) -> Path:
        return self.nodes[0].log_path

    @property
    def pid(self) -> int | None:
        proc = self.nodes[0].proc
        return proc.pid if proc else None

    def is_running(self) -> bool:
        return any(n.running() for n in self.nodes)

    def ping(self, timeout: float = 1.0, *, brokers: int = 1, bootstrap: str | None = None) -> bool:
        """True when the cluster (or the node at ``bootstrap``) answers a metadata request
        listing at least ``brokers`` brokers."""
        admin = AdminClient({"bootstrap.servers": bootstrap or self.bootstrap, "socket.timeout.ms": 2000,
                             "log_level": 0})
        try:
            md = admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return len(md.brokers) >= brokers

    def start(self, timeout: float = 90.0) -> ApacheKafka:
        """Resolve jars (first time only), format storage (first start only), start every node, wait."""
        if not self._classpath:
            self._classpath = str(kafka_libs(self.version)) + "/*"
        if not self._formatted:
            self._format()
        for node in self.nodes:
            node.start(self.java, self._classpath, self.heap)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0, *, brokers: int | None = None) -> None:
        want = len([n for n in self.nodes if n.running()]) if brokers is None else brokers
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n in self.nodes if n.proc is not None and n.proc.poll() is not None]
            if dead:
                raise BrokerError(f"Kafka node {dead[0].node_id} exited (rc={dead[0].proc.returncode}); "
                                  f"log {dead[0].log_path}:\n{self.log_tail(node=dead[0])}")
            if self.ping(timeout=1.0, brokers=want):
                return
            time.sleep(0.2)
        raise BrokerError(f"Apache Kafka {self.bootstrap} not ready after {timeout}s; log tail:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown of every node (SIGTERM, SIGKILL after ``timeout``)."""
        for node in self.nodes:
            if node.running():
                node.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        for node in self.nodes:
            node.signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL every node: an abrupt crash of the whole cluster. Data on disk survives."""
        for node in self.nodes:
            node.signal(signal.SIGKILL, 10)

    def restart(self, timeout: float = 90.0) -> ApacheKafka:
        """Clean stop and start on the same ports. Topics and records survive (unlike tansu)."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Kill every node and remove the data, if the folder is ours."""
        self.kill()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- per-node faults (chaos suite) ---------------------------------------
    def node(self, node_id: int) -> KafkaNode:
        return self.nodes[node_id - 1]

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one node: a broker (and controller) crash."""
        self.node(node_id).signal(signal.SIGKILL, 10)

    def stop_node(self, node_id: int, timeout: float = 30.0) -> None:
        """Clean shutdown of one node: its partition leaderships move first."""
        self.node(node_id).signal(signal.SIGTERM, timeout)

    def start_node(self, node_id: int, timeout: float = 90.0, *, wait: bool = True) -> None:
        """Start one stopped node again (same ports, same data) and wait (unless not ``wait``)
        until the cluster lists it."""
        node = self.node(node_id)
        node.start(self.java, self._classpath, self.heap)
        if not wait:
            return
        deadline = time.monotonic() + timeout
        while not self.ping(timeout=1.0, brokers=len(self.nodes), bootstrap=node.address):
            if not node.running() or time.monotonic() > deadline:
                raise BrokerError(f"Kafka node {node_id} did not come back; log tail:\n{self.log_tail(node=node)}")
            time.sleep(0.2)

    def active_controller(self, timeout: float = 30.0) -> int:
        """The node id of the active KRaft controller (from the metadata quorum command)."""
        live = [n for n in self.nodes if n.running()]
        if not live:
            raise BrokerError("no Kafka node is running")
        bootstrap = ",".join(f"{n.host}:{n.controller_port}" for n in live)
        proc = subprocess.run([self.java, "-Xmx128m", "-cp", self._classpath,
                               f"-Dlog4j2.configurationFile={live[0].home / 'log4j2.properties'}",
                               "org.apache.kafka.tools.MetadataQuorumCommand",
                               "--bootstrap-controller", bootstrap, "describe", "--status"],
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        for line in proc.stdout.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "LeaderId":
                return int(value.strip())
        raise BrokerError(f"metadata quorum status has no LeaderId: {proc.stdout.strip()} {proc.stderr.strip()}")

    # --- internals ----------------------------------------------------------
    def _rack_config(self, i: int) -> dict[str, str]:
        if not self.racks:
            return {}
        return {"broker.rack": self.racks[i],
                "replica.selector.class": "org.apache.kafka.common.replica.RackAwareReplicaSelector"}

    def _format(self) -> None:
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)
        cluster_id = _cluster_id()
        procs = []
        for i, node in enumerate(self.nodes):
            node.home.mkdir(parents=True, exist_ok=True)
            (node.home / "server.properties").write_text(node.properties(
                voters, len(self.nodes),
                {**self.broker_config, **self._rack_config(i)}))
            (node.home / "log4j2.properties").write_text(_LOG4J2)
            procs.append((node, subprocess.Popen(
                [self.java, "-Xmx256m", "-cp", self._classpath,
                 f"-Dlog4j2.configurationFile={node.home / 'log4j2.properties'}",
                 "kafka.tools.StorageTool", "format", "-t", cluster_id,
                 "-c", str(node.home / "server.properties")],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)))
        for node, proc in procs:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise BrokerError(f"formatting Kafka node {node.node_id} failed: {out.decode(errors='replace')[-500:]}")
        self._formatted = True

    def log_tail(self, n: int = 30, *, node: KafkaNode | None = None) -> str:
        path = (node or self.nodes[0]).log_path
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def _atexit(self) -> None:
        for node in self.nodes:
            if node.running():
                node.proc.kill()  # type: ignore[union-attr]

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ApacheKafka {self.version} nodes={len(self.nodes)} {self.bootstrap}>"
