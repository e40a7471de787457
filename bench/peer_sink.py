"""regionguard beside its peer: Kafka Connect (standalone) with the Debezium JDBC sink (issues 15, 29).

Same Apache Kafka broker, same PostgreSQL, same writes, identical tables, one system at a time,
in ``--rounds`` alternated rounds (regionguard first on odd rounds, last on even ones), every
system and round in a fresh database and fresh topics. Runs (``--runs``):

1. plain:    N upserts over K keys (event i writes key ``i % K`` with ``name = n<i>``,
   ``version = i // K + 1``), pre-produced to each system's topic in its own input format.
2. dupes:    the same, with a fraction of the events sent a second time ``--dup-lag`` records
   later, before the key's next write (a harmless repeat; regionguard: the same event id).
3. overtake: the same as (1), and for every ``--overtake-every``-th key its second-to-last write
   sent again ``--dup-lag`` records AFTER the key's last write: what a producer retry after a
   timeout does when the app has written the key again meanwhile. regionguard's inbox drops the
   resend by its event id; at-least-once applies it, and the row goes back one version
   (``regressed``: rows below their last version, counted from the table).
4. fault:    (1) with the database reached through a TCP fault proxy that blackholes it for
   ``--fault-s`` seconds once ~30% of the writes are applied.
5. down:     the same, but live connections are reset and new ones refused for ``--fault-s``.

Warm-up and the timed window, the same rule for both: each system first drains ``--warmup`` writes
on keys of their own (process started, consumer group joined, JIT and connection pools warm);
the timed N are already in the topic by then, produced inside one open Kafka transaction, and
are committed once the warm-up rows are all there, so a ``read_committed`` consumer (librdkafka's
default; the peer's worker is set to it) finds the whole timed batch at once. writes/s = N /
(first -> last application of the timed writes), both stamped by a trigger on the table
(``first_at``, ``applied_at``), which also counts applications per row (``applied``).
``dupes`` = applications beyond a row's distinct writes; a run that times out or leaves a row
short of its last value is ``incomplete``: no rate, in the CSV row and in the ``PEER`` line.

regionguard runs as deployed without a health service: ``router --no-health`` and
``replayer --no-health`` subprocesses; its table has no version column in its config, so
resends are caught by the event id alone (the inbox).

The peer: ``org.apache.kafka:connect-runtime`` standalone worker (the broker's version) with
``io.debezium:debezium-connector-jdbc`` as a plugin, JsonConverter with schemas,
``insert.mode=upsert``, ``primary.key.mode=record_key``, the reduction buffer on, in each of the
``--peer-configs`` (``t<tasks.max>-unnest`` or ``-batch``; default t2 and t4 with unnest); the
best is the one with the highest median over rounds it all completed, and the ratio is taken
against it round by round. Its failure handling is set as a careful operator would, not left at
the defaults (5 flush retries 1 s apart and no reconnect, which gives up inside a 20 s outage):

- ``connection.restart.on.errors=true``: the sink reopens its connection pool after a connection
  error instead of failing the task on a closed connection;
- ``flush.max.retries`` x ``flush.retry.delay.ms`` = 3 x ``--fault-s`` (1 s apart): the sink's
  own retry of a failed flush outlasts the outage;
- ``errors.retry.timeout`` = 3 x ``--fault-s`` and ``errors.retry.delay.max.ms`` = 1 s: Connect's
  retry of converter and transform failures (it does not wrap the sink's ``put``, which the two
  settings above cover); ``errors.tolerance`` stays ``none``: a write is never skipped silently.

Jars resolved with Maven from Maven Central (``bench/peer/*.xml``) into ``~/.cache/regionguard/peer/``.
Every system and round appends a row to ``bench/results/peer.csv``; ``bench/report.py`` makes the
table of docs/benchmarks.md from them. The last line is for scripts::

    PEER regionguard_wps=<median> peer_wps=<median|incomplete> peer_best=<config> ratio=<median> ratio_range=<min-max> regionguard_dupes=<n> peer_dupes=<n> regionguard_regressed=<n> peer_regressed=<n>

    python bench/peer_sink.py                                   # plain + overtake, 5 rounds, N=50,000
    python bench/peer_sink.py --runs plain --peer-configs t4-unnest,t4-batch --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import yaml
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from peer_rounds import (BadPeerConfig, PeerConfig, append_csv, best_config, csv_row, overtake_order,  # noqa: E402
                         parse_peer_configs, peer_line, ratios, round_order, spread)
from router_apply import ADMIN_DSN, drop_db, exit_on_sigterm, produce_all, produce_records  # noqa: E402

from regionguard.core.config import parse_config  # noqa: E402
from regionguard.core.kafka import ensure_topics, producer_conf  # noqa: E402
from regionguard.core.sql import INBOX_DDL  # noqa: E402
from regionguard_testkit.embedded import Broker, FaultProxy, ServiceProcess, create_topics, free_port  # noqa: E402
from regionguard_testkit.embedded.kafka import KAFKA_VERSION, cache_dir  # noqa: E402

PEER_DIR = ROOT / "bench" / "peer"
DEBEZIUM_VERSION = "3.6.0.Final"  # 3.6.1.Final of debezium-connector-jdbc is not on Maven Central
PG_HOST, PG_PORT = "127.0.0.1", 5432
CONNECTOR = "peer-jdbc-sink"
FAULTS = {"fault": "blackhole", "down": "refused"}  # run name -> what the proxy does to the database
RUNS = ("plain", "dupes", "overtake", *FAULTS)
RESULTS_CSV = ROOT / "bench" / "results" / "peer.csv"

# identical in both databases: the row, and a trigger that counts and stamps every application
SCHEMA = """
CREATE TABLE users (id bigint PRIMARY KEY, name text, version bigint,
                    applied integer NOT NULL DEFAULT 0, first_at timestamptz, applied_at timestamptz);
CREATE FUNCTION count_application() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    NEW.applied := 1; NEW.first_at := clock_timestamp();
  ELSE
    NEW.applied := OLD.applied + 1; NEW.first_at := OLD.first_at;
  END IF;
  NEW.applied_at := clock_timestamp();
  RETURN NEW;
END $$;
CREATE TRIGGER count_application BEFORE INSERT OR UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION count_application();
"""


# --- pure helpers (tests/unit/test_peer_sink.py) ----------------------------------------------------

def send_order(n: int, dup_fraction: float, lag: int, seed: int = 15) -> list[int]:
    """Event indexes in the order they are produced: each of ``n`` once, and a seeded
    ``dup_fraction`` of them a second time ``lag`` records after the first (a producer retry)."""
    rng = random.Random(seed)
    dups = set(rng.sample(range(n), int(n * dup_fraction))) if dup_fraction > 0 else set()
    order: list[int] = []
    for i in range(n):
        order.append(i)
        if i - lag >= 0 and i - lag in dups:
            order.append(i - lag)
    order.extend(j for j in range(max(n - lag, 0), n) if j in dups)
    return order


def last_index(key: int, n: int, keys: int) -> int:
    """The index of the last of the ``n`` events that writes ``key`` (event i writes key i % keys)."""
    return key + keys * ((n - 1 - key) // keys)


def writes_per_key(key: int, n: int, keys: int) -> int:
    return (n - 1 - key) // keys + 1 if key < n else 0


def peer_key(key: int) -> bytes:
    """JsonConverter (schemas.enable=true) form of the record key: a struct with the primary key."""
    return json.dumps({"schema": {"type": "struct", "optional": False, "name": "users.Key",
                                  "fields": [{"field": "id", "type": "int64", "optional": False}]},
                       "payload": {"id": key}}, separators=(",", ":")).encode()


_VALUE_SCHEMA = {"type": "struct", "optional": False, "name": "users.Value",
                 "fields": [{"field": "name", "type": "string", "optional": True},
                            {"field": "version", "type": "int64", "optional": True}]}


def peer_value(i: int, keys: int) -> bytes:
    return _peer_value(f"n{i}", i // keys + 1)


def _peer_value(name: str, version: int) -> bytes:
    return json.dumps({"schema": _VALUE_SCHEMA, "payload": {"name": name, "version": version}},
                      separators=(",", ":")).encode()


def rg_event(event_id: str, i: int, keys: int) -> bytes:
    return _rg_event(event_id, i % keys, f"n{i}", i // keys + 1)


def _rg_event(event_id: str, key: int, name: str, version: int) -> bytes:
    return json.dumps({"id": event_id, "region": "eu", "table": "users", "op": "upsert",
                       "key": {"id": key}, "data": {"name": name, "version": version}},
                      separators=(",", ":")).encode()


def warmup_keys(count: int, keys: int) -> range:
    """The warm-up's own keys, after the timed ones: never counted, never overwritten by a timed write."""
    return range(keys, keys + count)


def task_states(status: dict) -> list[str]:
    """Task states from Connect's ``GET /connectors/<name>/status`` answer."""
    return [t.get("state", "?") for t in status.get("tasks", [])]


def fmt_resume(v: float | None) -> str:
    return "never" if v is None else f"{v:.1f}"


# --- jars -------------------------------------------------------------------------------------------

def _resolve(pom: Path, dest: Path, check: str, *extra: str) -> Path:
    if (dest / ".complete").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / ".complete").exists():
            return dest
        mvn = shutil.which("mvn")
        if mvn is None:
            raise SystemExit("the peer bench needs Maven (mvn): scripts/setup.sh --test-tools installs it")
        staging = dest.with_name(dest.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        proc = subprocess.run([mvn, "-q", "-B", "-s", str(PEER_DIR / "settings.xml"), "-f", str(pom),
                               "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
                               "-DincludeScope=runtime", *extra],
                              capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not (staging / check).exists():
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise SystemExit(f"mvn could not resolve {pom.name}: " + " | ".join(tail))
        shutil.rmtree(dest, ignore_errors=True)
        staging.rename(dest)
        (dest / ".complete").write_text(check)
    return dest


def peer_jars() -> tuple[Path, Path]:
    """(Connect's classpath folder, the plugin.path folder holding the Debezium JDBC sink)."""
    home = cache_dir() / "peer"
    libs = _resolve(PEER_DIR / "connect-pom.xml", home / f"connect-{KAFKA_VERSION}",
                    f"connect-runtime-{KAFKA_VERSION}.jar", f"-Dkafka.version={KAFKA_VERSION}")
    plugins = home / "plugins"
    _resolve(PEER_DIR / "debezium-jdbc-pom.xml", plugins / f"debezium-connector-jdbc-{DEBEZIUM_VERSION}",
             f"debezium-connector-jdbc-{DEBEZIUM_VERSION}.jar",
             "-DexcludeGroupIds=org.apache.kafka")  # Connect's own API comes from the worker
    return libs, plugins


# --- databases --------------------------------------------------------------------------------------

async def fresh_db(name: str) -> str:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{name}")
    try:
        await conn.execute(SCHEMA)
        await conn.execute(INBOX_DDL)
    finally:
        await conn.close()
    return name


@dataclass
class Tally:
    rows: int = 0
    applications: int = 0
    at_last: int = 0
    dupes: int = 0        # applications beyond the row's distinct writes
    short: int = 0        # distinct writes never applied (or applied fewer times than written)
    regressed: int = 0    # rows below their last version: an older write applied over a newer one
    settled: int = 0      # rows at their last value, or (overtake) at the resent older one
    span_s: float = 0.0   # first application -> last application of the timed writes


async def tally(conn: asyncpg.Connection, n: int, keys: int, every: int = 0) -> Tally:
    """The timed rows only (``id < keys``; the warm-up's keys come after). A key's last version is
    its number of writes, ``(n - 1 - id) / keys + 1``; with overtaking resends on every ``every``-th
    key, such a row may also end one version back (the resent value), which is settled too."""
    row = await conn.fetchrow(
        """WITH t AS (SELECT *, ($1::bigint - 1 - id) / $2::bigint + 1 AS writes FROM users WHERE id < $2)
           SELECT count(*) AS rows, coalesce(sum(applied), 0) AS applications,
                  count(*) FILTER (WHERE name = 'n' || (id + $2::bigint * (writes - 1))) AS at_last,
                  count(*) FILTER (WHERE version < writes) AS regressed,
                  count(*) FILTER (WHERE name = 'n' || (id + $2::bigint * (writes - 1))
                                   OR ($3::bigint > 0 AND id % greatest($3::bigint, 1) = 0 AND writes > 1
                                       AND name = 'n' || (id + $2::bigint * (writes - 2)))) AS settled,
                  coalesce(sum(greatest(applied - writes, 0)), 0) AS dupes,
                  coalesce(sum(greatest(writes - applied, 0)), 0) AS short_rows,
                  extract(epoch FROM max(applied_at) - min(first_at)) AS span
           FROM t""", n, keys, every)
    short = int(row["short_rows"])
    if row["rows"] < keys:  # keys with no row at all: every write to them is missing
        have = {r["id"] for r in await conn.fetch("SELECT id FROM users WHERE id < $1", keys)}
        short += sum(writes_per_key(k, n, keys) for k in range(keys) if k not in have)
    return Tally(rows=row["rows"], applications=int(row["applications"]), at_last=row["at_last"],
                 dupes=int(row["dupes"]), short=short, regressed=row["regressed"], settled=row["settled"],
                 span_s=float(row["span"] or 0.0))


# --- producing --------------------------------------------------------------------------------------

def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    produce_records(bootstrap, topic, records)


def rg_warmup(keys: int, warmup: int) -> list[tuple[bytes, bytes]]:
    return [(f"users/{k}".encode(), _rg_event(str(uuid.uuid4()), k, f"w{k}", 1)) for k in warmup_keys(warmup, keys)]


def rg_records(order: list[int], keys: int) -> list[tuple[bytes, bytes]]:
    out = []
    ids: dict[int, str] = {}
    for i in order:
        eid = ids.setdefault(i, str(uuid.uuid4()))  # a resend carries the same id
        out.append((f"users/{i % keys}".encode(), rg_event(eid, i, keys)))
    return out


def peer_warmup(keys: int, warmup: int) -> list[tuple[bytes, bytes]]:
    return [(peer_key(k), _peer_value(f"w{k}", 1)) for k in warmup_keys(warmup, keys)]


def peer_records(order: list[int], keys: int) -> list[tuple[bytes, bytes]]:
    return [(peer_key(i % keys), peer_value(i, keys)) for i in order]


def produce_held(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> Producer:
    """Produce the timed writes inside one Kafka transaction left open: a read_committed consumer
    (librdkafka's default; the peer's worker is set to it) sees none of them until the caller
    commits, then all at once, so both systems find the whole timed batch already in the topic."""
    p = Producer(producer_conf(bootstrap, **{"linger.ms": 20, "transactional.id": f"peer-bench-{uuid.uuid4().hex}",
                                             "transaction.timeout.ms": 600_000}))
    p.init_transactions(60)
    p.begin_transaction()
    produce_all(p, topic, records)
    if p.flush(60):
        raise RuntimeError(f"could not deliver every record to {topic}")
    return p


# --- the systems ------------------------------------------------------------------------------------

@dataclass
class PeerSettings:
    batch_size: int = 2000
    max_poll: int = 2000
    tasks: int = 2
    unnest: bool = True
    reduction: bool = True  # needed with unnest: a key twice in one batch fails the whole unnest upsert
    heap: str = "1g"
    outage_s: float = 20.0  # the failure handling below outlasts 3x this (module docstring)

    @classmethod
    def of(cls, config: PeerConfig, **kw) -> "PeerSettings":
        return cls(tasks=config.tasks, unnest=config.unnest, **kw)

    @property
    def name(self) -> str:
        return PeerConfig(self.tasks, self.unnest).name

    def failure_handling(self) -> dict[str, str]:
        cover_s = 3 * self.outage_s
        return {"connection.restart.on.errors": "true",
                "flush.retry.delay.ms": "1000",
                "flush.max.retries": str(max(5, int(cover_s) + 1)),
                "errors.retry.timeout": str(int(cover_s * 1000)),
                "errors.retry.delay.max.ms": "1000",
                "errors.tolerance": "none"}

    def describe(self) -> str:
        return (f"{self.name}: tasks.max={self.tasks} batch.size={self.batch_size} "
                f"consumer.max.poll.records={self.max_poll} "
                f"dialect.postgres.unnest.insert.enabled={str(self.unnest).lower()} "
                f"use.reduction.buffer={str(self.reduction).lower()} "
                + " ".join(f"{k}={v}" for k, v in self.failure_handling().items()))


class RegionGuard:
    name = "regionguard"
    config = "router+replayer"

    def __init__(self, broker: Broker, logs: Path, partitions: int) -> None:
        self.broker, self.logs, self.partitions = broker, logs, partitions
        self.procs: list[ServiceProcess] = []

    def prepare(self, tag: str, db: str, port: int, records_for: list[int], keys: int, warmup: int) -> None:
        doc = {"kafka": {"bootstrap": self.broker.bootstrap, "topic_prefix": f"peer{tag}.",
                         "partitions": self.partitions},
               "regions": {"eu": {"dsn": f"postgresql://postgres@{PG_HOST}:{port}/{db}"}},
               "tables": {"users": {"key": ["id"]}},  # no version: duplicates are caught by the event id only
               "metrics": {"enabled": False}}
        cfg = parse_config(doc)
        ensure_topics(cfg)
        self.cfg_path = self.logs / f"rg-{tag}.yaml"
        self.cfg_path.write_text(yaml.safe_dump(doc))
        produce(self.broker.bootstrap, cfg.topic("writes", "eu"), rg_warmup(keys, warmup))
        self.held = produce_held(self.broker.bootstrap, cfg.topic("writes", "eu"), rg_records(records_for, keys))

    def start(self) -> None:
        env = {**os.environ, "KAFKA_BOOTSTRAP": self.broker.bootstrap}
        for svc in ("router", "replayer"):
            self.procs.append(ServiceProcess(svc, [svc, "--config", str(self.cfg_path), "--no-health"],
                                             env=env, log_dir=self.logs))

    def state(self) -> str:
        dead = [p.name for p in self.procs if not p.alive]
        return "exited: " + ",".join(dead) if dead else "running"

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        self.procs.clear()


class Peer:
    name = "peer"

    def __init__(self, broker: Broker, logs: Path, partitions: int, settings: PeerSettings) -> None:
        self.broker, self.logs, self.partitions, self.s = broker, logs, partitions, settings
        self.config = settings.name
        self.proc: subprocess.Popen[bytes] | None = None
        self.libs, self.plugins = peer_jars()

    def prepare(self, tag: str, db: str, port: int, records_for: list[int], keys: int, warmup: int) -> None:
        topic = f"peer{tag}.users"
        create_topics(self.broker.bootstrap, {topic: self.partitions})
        produce(self.broker.bootstrap, topic, peer_warmup(keys, warmup))
        self.held = produce_held(self.broker.bootstrap, topic, peer_records(records_for, keys))
        self.rest = free_port()
        work = self.logs / f"connect-{tag}"
        work.mkdir(parents=True, exist_ok=True)
        worker = {
            "bootstrap.servers": self.broker.bootstrap,
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "true",
            "value.converter.schemas.enable": "true",
            "offset.storage.file.filename": str(work / "offsets"),
            "plugin.path": str(self.plugins),
            "plugin.discovery": "service_load",  # no class scan: the plugin ships ServiceLoader manifests
            "listeners": f"http://127.0.0.1:{self.rest}",
            "consumer.max.poll.records": str(self.s.max_poll),
            "consumer.isolation.level": "read_committed",  # the timed batch appears at once (produce_held)
        }
        conn = {
            "name": CONNECTOR,
            "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
            "tasks.max": str(self.s.tasks),
            "topics": topic,
            "connection.url": f"jdbc:postgresql://{PG_HOST}:{port}/{db}",
            "connection.username": "postgres",
            "connection.password": "",
            "insert.mode": "upsert",
            "primary.key.mode": "record_key",
            "collection.name.format": "users",
            "schema.evolution": "none",
            "batch.size": str(self.s.batch_size),
            "dialect.postgres.unnest.insert.enabled": str(self.s.unnest).lower(),
            "use.reduction.buffer": str(self.s.reduction).lower(),
            **self.s.failure_handling(),
        }
        self.worker_path, self.conn_path = work / "worker.properties", work / "connector.properties"
        self.worker_path.write_text("".join(f"{k}={v}\n" for k, v in worker.items()))
        self.conn_path.write_text("".join(f"{k}={v}\n" for k, v in conn.items()))
        log4j = work / "log4j2.properties"
        log4j.write_text("status = error\nappender.out.type = Console\nappender.out.name = OUT\n"
                         "appender.out.layout.type = PatternLayout\n"
                         "appender.out.layout.pattern = [%d] %p %m (%c)%n\n"
                         "rootLogger.level = INFO\nrootLogger.appenderRef.out.ref = OUT\n"
                         "logger.kafka.name = org.apache.kafka.clients\nlogger.kafka.level = WARN\n"
                         "logger.hib.name = org.hibernate\nlogger.hib.level = WARN\n")
        self.log_path = work / "connect.log"
        self.cmd = [shutil.which("java") or "java", "-Xms256m", f"-Xmx{self.s.heap}",
                    f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{self.libs}/*",
                    "org.apache.kafka.connect.cli.ConnectStandalone", str(self.worker_path), str(self.conn_path)]

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def status(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rest}/connectors/{CONNECTOR}/status",
                                        timeout=2) as r:
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def state(self) -> str:
        if self.proc is None or self.proc.poll() is not None:
            return "worker exited"
        st = self.status()
        return "no answer" if st is None else "tasks " + ",".join(task_states(st))

    def failed_trace(self) -> str:
        st = self.status() or {}
        for t in st.get("tasks", []):
            if t.get("state") == "FAILED":
                lines = (t.get("trace") or "").splitlines()
                causes = [ln for ln in lines if "Caused by" in ln]
                return (lines[:1] + causes[-1:])[-1] if lines else ""
        return ""

    def operator_restart(self) -> None:
        """What an operator does for a FAILED task: restart the connector and its failed tasks over REST."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.rest}/connectors/{CONNECTOR}/restart?includeTasks=true&onlyFailed=true",
            method="POST")
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        self._log.close()


# --- one run ----------------------------------------------------------------------------------------

@dataclass
class Result:
    system: str
    run: str
    config: str = ""
    wps: float | None = None  # None: the run did not complete, so it has no rate
    tally: Tally = field(default_factory=Tally)
    complete: bool = False
    resume_s: float | None = None
    notes: list[str] = field(default_factory=list)


async def wait_done(dsn: str, n: int, keys: int, every: int, timeout: float,
                    quiet_s: float = 3.0) -> tuple[Tally, bool]:
    """Until every timed row is settled and nothing moved for quiet_s. Writes are applied in order per
    key, so a row at its last value has had all of them (the peer's reduction buffer may fold a key's
    writes within one batch into one application: not missing, just ``short`` of an application each)."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            t = await tally(conn, n, keys, every)
            if t.applications != last:
                last, since = t.applications, time.monotonic()
            elif t.settled == keys and time.monotonic() - since >= quiet_s:
                return t, True
            await asyncio.sleep(0.5)
        return await tally(conn, n, keys, every), False
    finally:
        await conn.close()


async def wait_warm(dsn: str, keys: int, warmup: int, timeout: float) -> None:
    """Until the warm-up's rows are all there: the process is up, its consumer has its partitions,
    its code and connections have done ``warmup`` writes."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while await conn.fetchval("SELECT count(*) FROM users WHERE id >= $1", keys) < warmup:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the warm-up was not applied in {timeout:.0f} s")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def applications(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(sum(applied), 0) FROM users"))


async def fault_window(system, dsn: str, proxy: FaultProxy, n: int, fault_s: float, wait_resume: float,
                       res: Result, mode: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + 300
        while await applications(conn) < 0.3 * n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{system.name}: 30% of the writes not applied in 300 s")
            await asyncio.sleep(0.1)
        before = await applications(conn)
        if mode == "blackhole":
            proxy.set_mode("blackhole")
        else:  # the database goes away: live connections reset, new ones refused
            proxy.set_mode("refuse")
            proxy.reset_all()
        res.notes.append(f"{mode} at {before:,} applications")
        t_end = time.monotonic() + fault_s
        states = []
        while time.monotonic() < t_end:
            s = system.state()
            if not states or states[-1] != s:
                states.append(s)
            await asyncio.sleep(1.0)
        res.notes.append("during the outage: " + " -> ".join(states))
        at_heal = await applications(conn)
        proxy.set_mode("pass")
        healed = time.monotonic()
        res.notes.append(f"{at_heal - before:,} applications during the outage")
        states = []
        while time.monotonic() - healed < wait_resume:
            if await applications(conn) > at_heal:
                res.resume_s = time.monotonic() - healed
                break
            s = system.state()
            if not states or states[-1] != s:
                states.append(s)
            await asyncio.sleep(0.1)
        if res.resume_s is None:
            res.notes.append(f"no write applied {wait_resume:.0f} s after the heal; state: " + " -> ".join(states))
    finally:
        await conn.close()


def one_run(system, run: str, n: int, keys: int, order: list[int], args) -> Result:
    tag = uuid.uuid4().hex[:8]
    every = args.overtake_every if run == "overtake" else 0
    db = asyncio.run(fresh_db(f"rg_peer_{system.name}_{tag}"))
    dsn = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{db}"
    proxy = FaultProxy(PG_HOST, PG_PORT, name=f"{system.name}-db") if run in FAULTS else None
    res = Result(system.name, run, system.config)
    try:
        system.prepare(tag, db, proxy.port if proxy else PG_PORT, order, keys, args.warmup)
        system.start()
        try:
            asyncio.run(wait_warm(dsn, keys, args.warmup, args.timeout))
        except TimeoutError as e:
            system.held.abort_transaction(60)
            res.notes.append(f"INCOMPLETE: {e}; at the end: {system.state()}")
            return res
        system.held.commit_transaction(60)  # the timed writes appear, all at once
        if proxy is not None:
            asyncio.run(fault_window(system, dsn, proxy, n, args.fault_s, args.resume_wait, res, FAULTS[run]))
            if res.resume_s is None and isinstance(system, Peer) and system.failed_trace():
                res.notes.append("task FAILED: " + system.failed_trace()[:300])
                res.notes.append("operator: POST /connectors/<name>/restart?includeTasks=true&onlyFailed=true")
                system.operator_restart()
        res.tally, res.complete = asyncio.run(wait_done(dsn, n, keys, every, timeout=args.timeout))
        if res.complete and res.tally.span_s > 0:
            res.wps = n / res.tally.span_s
        else:
            res.complete = False
            res.notes.append(f"INCOMPLETE after {args.timeout:.0f} s: {keys - res.tally.settled:,} rows not at "
                             "their last value")
        res.notes.append(f"at the end: {system.state()}")
    finally:
        system.stop()
        if proxy is not None:
            proxy.stop()
        asyncio.run(drop_db(db))
    return res


def describe(res: Result, rnd: int) -> str:
    t = res.tally
    rate = "incomplete" if res.wps is None else f"{res.wps:,.0f} writes/s"
    return (f"  round {rnd} {res.system:<11} {res.config:<15} {rate:>18}  span {t.span_s:6.1f} s  "
            f"applications {t.applications:,}  dupes {t.dupes:,}  regressed {t.regressed:,}  short {t.short:,}"
            + (f"  resume {fmt_resume(res.resume_s)} s" if res.run in FAULTS else "")
            + "".join(f"\n      {x}" for x in res.notes))


def git_commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def summary(results: list[tuple[int, Result]], runs: list[str], rounds: int) -> str:
    """Per run: median (range) per system and configuration, the peer's best, the ratio to it; the PEER line."""
    out: list[str] = []
    best_plain: str | None = None
    for run in runs:
        by: dict[str, list[float | None]] = {}
        rows = [r for _, r in results if r.run == run]
        for r in rows:
            by.setdefault(r.config if r.system == "peer" else "regionguard", []).append(r.wps)
        peers = {c: v for c, v in by.items() if c != "regionguard"}
        best = best_config(peers)
        if run == "plain":
            best_plain = best
        out.append(f"{run}: writes/s median (min-max) over {rounds} rounds")
        for c, v in by.items():
            mark = "  <- the peer's best" if c == best else ""
            out.append(f"  {c:<15} {spread(v).text()}{mark}")
            if c != "regionguard" and "regionguard" in by:
                out.append(f"  {'':<15} regionguard / {c}: {spread(ratios(by['regionguard'], v)).text('{:.2f}')}")
        for system in ("regionguard", "peer"):
            mine = [r for r in rows if r.system == system]
            if mine:
                out.append(f"  {system}: applied twice max {max(r.tally.dupes for r in mine):,}, "
                           f"regressed max {max(r.tally.regressed for r in mine):,}, "
                           f"incomplete {sum(not r.complete for r in mine)} of {len(mine)}")
                if run in FAULTS:
                    out.append(f"  {system}: resume after the heal (s): "
                               + ", ".join(fmt_resume(r.resume_s) for r in mine))
    plain = [r for _, r in results if r.run == "plain"]
    rg = [r.wps for r in plain if r.system == "regionguard"]
    peer = [r.wps for r in plain if r.system == "peer" and r.config == best_plain] if best_plain else []
    wrong = [r for _, r in results if r.run in ("dupes", "overtake")]

    def worst(system: str, attr: str) -> int | None:
        vals = [getattr(r.tally, attr) for r in wrong if r.system == system and r.complete]
        return max(vals) if vals else None
    out.append(peer_line(spread(rg), spread(peer) if peer else None, best_plain,
                         spread(ratios(rg, peer)) if peer else None,
                         {s: worst(s, "dupes") for s in ("regionguard", "peer")},
                         {s: worst(s, "regressed") for s in ("regionguard", "peer")}))
    return "\n".join(out)


def main() -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000, help="timed writes per run")
    ap.add_argument("--keys", type=int, default=25_000,
                    help="2 writes a key at the default N: far enough apart that no batch folds them")
    ap.add_argument("--warmup", type=int, default=5_000, help="writes drained first, on keys of their own")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--dup-fraction", type=float, default=0.2)
    ap.add_argument("--dup-lag", type=int, default=1000, help="records between a write and its resend")
    ap.add_argument("--overtake-every", type=int, default=5,
                    help="overtake: every this many keys, the second-to-last write is resent after the last")
    ap.add_argument("--fault-s", type=float, default=20.0)
    ap.add_argument("--resume-wait", type=float, default=60.0,
                    help="how long after the heal a system may take to apply again before it counts as 'never'")
    ap.add_argument("--timeout", type=float, default=300.0, help="bound of one system's run")
    ap.add_argument("--runs", default="plain,overtake", help=", ".join(RUNS))
    ap.add_argument("--system", choices=["both", "regionguard", "peer"], default="both")
    ap.add_argument("--peer-configs", default="t2-unnest,t4-unnest",
                    help="t<tasks.max>-unnest or t<tasks.max>-batch, comma-separated; the best is named")
    ap.add_argument("--peer-batch-size", type=int, default=PeerSettings.batch_size)
    ap.add_argument("--peer-max-poll", type=int, default=PeerSettings.max_poll)
    ap.add_argument("--results", type=Path, default=RESULTS_CSV, help="the CSV every round appends to")
    args = ap.parse_args()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    try:
        configs = parse_peer_configs(args.peer_configs)
    except BadPeerConfig as e:
        ap.error(str(e))  # one line, exit 2
    if unknown := [r for r in runs if r not in RUNS]:
        ap.error(f"unknown run {unknown[0]!r}: one of {', '.join(RUNS)}")
    if args.rounds < 1 or args.n < 1 or args.keys < 1 or args.warmup < 0 or args.overtake_every < 1:
        ap.error("--rounds, --n, --keys and --overtake-every must be positive, --warmup not negative")

    settings = [PeerSettings.of(c, batch_size=args.peer_batch_size, max_poll=args.peer_max_poll,
                                outage_s=args.fault_s) for c in configs]
    systems = (["regionguard"] if args.system != "peer" else []) + \
              ([s.name for s in settings] if args.system != "regionguard" else [])
    broker = Broker.from_env(default="apache")
    started = not broker.is_running()
    logs = Path(tempfile.gettempdir()) / "regionguard-bench"
    logs.mkdir(exist_ok=True)
    if args.system != "regionguard":
        peer_jars()  # resolve (once) before the broker starts
    if started:
        broker.start()
    commit = git_commit()
    results: list[tuple[int, Result]] = []
    try:
        print(f"N={args.n:,} timed upserts over {args.keys:,} keys after {args.warmup:,} warm-up writes, "
              f"{args.partitions} partitions, {args.rounds} rounds, Apache Kafka {KAFKA_VERSION} "
              f"({broker.bootstrap}); peer: Kafka Connect {KAFKA_VERSION} standalone + Debezium JDBC sink "
              f"{DEBEZIUM_VERSION}; commit {commit}; load average {os.getloadavg()[0]:.1f}", flush=True)
        for s in settings:
            print("  peer " + s.describe(), flush=True)
        for rnd in range(1, args.rounds + 1):
            for run in runs:
                if run == "overtake":
                    order = overtake_order(args.n, args.keys, args.overtake_every, args.dup_lag)
                else:
                    order = send_order(args.n, args.dup_fraction if run == "dupes" else 0.0, args.dup_lag)
                print(f"round {rnd} run {run}: {len(order):,} records, load average {os.getloadavg()[0]:.1f}"
                      + (f", DB {FAULTS[run]} {args.fault_s:.0f} s at ~30%" if run in FAULTS else ""), flush=True)
                for name in round_order(rnd, systems):
                    system = (RegionGuard(broker, logs, args.partitions) if name == "regionguard"
                              else Peer(broker, logs, args.partitions, next(s for s in settings if s.name == name)))
                    res = one_run(system, run, args.n, args.keys, order, args)
                    results.append((rnd, res))
                    print(describe(res, rnd), flush=True)
                    append_csv(args.results, csv_row(
                        date=time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()), commit=commit, run=run,
                        system=res.system, config=res.config, round=rnd, n=args.n, wps=res.wps,
                        complete=res.complete, dupes=res.tally.dupes, regressed=res.tally.regressed,
                        resume_s=res.resume_s))
    finally:
        if started:
            broker.stop()
    print()
    print(summary(results, runs, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
