"""regionguard beside its peer: Kafka Connect (standalone) with the Debezium JDBC sink (issue 15).

Same Apache Kafka broker, same PostgreSQL, same writes, identical tables, one system at a time:

1. plain:  N upserts over K keys (event i writes key ``i % K`` with ``name = n<i>``,
   ``version = i // K + 1``), pre-produced to each system's topic in its own input
   format, then the system is started and drains them.
2. dupes:  the same, with a fraction of the events sent a second time ``--dup-lag``
   records later, as a producer retry would (for regionguard the same event id).
3. fault:  the same as (1), with the database reached through a TCP fault proxy that
   blackholes it for ``--fault-s`` seconds once ~30% of the writes are applied (packets
   vanish, nothing is closed: stalled connections go on at the heal).
4. down:   the same, but the database goes away instead: live connections are reset and
   new ones refused for ``--fault-s`` seconds (a crash or failover of the server).

The tables carry a trigger that counts applications per row (``applied``) and stamps
the first and the latest application (``first_at``, ``applied_at``). Figures per system:
writes/s = N / (last application - first application); ``dupes`` = applications beyond
the row's distinct writes; ``short`` = applications missing; rows not at their last value;
resume = seconds from the heal until rows are applied again.

regionguard runs as deployed without a health service: ``router --no-health`` and
``replayer --no-health`` subprocesses (the router holds a region's writes on its own
connection failures, the replayer drains them on recovery). regionguard's table has no
version column in its config, so duplicates are caught by the event id alone (the inbox).

The peer: ``org.apache.kafka:connect-runtime`` standalone worker (the broker's version)
with ``io.debezium:debezium-connector-jdbc`` as a plugin, JsonConverter with schemas,
``insert.mode=upsert``, ``primary.key.mode=record_key``; jars resolved with Maven from
Maven Central (``bench/peer/*.xml``) into ``~/.cache/regionguard/peer/``.

The last line is for scripts::

    PEER regionguard_wps=<n> peer_wps=<n> ratio=<x> regionguard_dupes=<n> peer_dupes=<n> regionguard_resume_s=<x> peer_resume_s=<x or never>

    python bench/peer_sink.py               # all three runs, N=200,000 over 50,000 keys
    python bench/peer_sink.py --runs plain --system peer --peer-batch-size 2000   # a tuning trial
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from router_apply import ADMIN_DSN, drop_db, exit_on_sigterm, produce_records  # noqa: E402

from regionguard.core.config import parse_config  # noqa: E402
from regionguard.core.kafka import ensure_topics  # noqa: E402
from regionguard.core.sql import INBOX_DDL  # noqa: E402
from regionguard_testkit.embedded import Broker, FaultProxy, ServiceProcess, create_topics, free_port  # noqa: E402
from regionguard_testkit.embedded.kafka import KAFKA_VERSION, cache_dir  # noqa: E402

PEER_DIR = ROOT / "bench" / "peer"
DEBEZIUM_VERSION = "3.6.0.Final"  # 3.6.1.Final of debezium-connector-jdbc is not on Maven Central
PG_HOST, PG_PORT = "127.0.0.1", 5432
CONNECTOR = "peer-jdbc-sink"
FAULTS = {"fault": "blackhole", "down": "refused"}  # run name -> what the proxy does to the database

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
    return json.dumps({"schema": _VALUE_SCHEMA, "payload": {"name": f"n{i}", "version": i // keys + 1}},
                      separators=(",", ":")).encode()


def rg_event(event_id: str, i: int, keys: int) -> bytes:
    return json.dumps({"id": event_id, "region": "eu", "table": "users", "op": "upsert",
                       "key": {"id": i % keys}, "data": {"name": f"n{i}", "version": i // keys + 1}},
                      separators=(",", ":")).encode()


def task_states(status: dict) -> list[str]:
    """Task states from Connect's ``GET /connectors/<name>/status`` answer."""
    return [t.get("state", "?") for t in status.get("tasks", [])]


def fmt_resume(v: float | None) -> str:
    return "never" if v is None else f"{v:.1f}"


def peer_line(rg_wps: float, peer_wps: float, rg_dupes: int | None, peer_dupes: int | None,
              rg_resume: float | None, peer_resume: float | None) -> str:
    ratio = rg_wps / peer_wps if peer_wps else float("inf")
    na = lambda v: "na" if v is None else str(v)  # noqa: E731
    return (f"PEER regionguard_wps={rg_wps:.0f} peer_wps={peer_wps:.0f} ratio={ratio:.2f} "
            f"regionguard_dupes={na(rg_dupes)} peer_dupes={na(peer_dupes)} "
            f"regionguard_resume_s={fmt_resume(rg_resume)} peer_resume_s={fmt_resume(peer_resume)}")


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
    span_s: float = 0.0   # first application -> last application


async def tally(conn: asyncpg.Connection, n: int, keys: int) -> Tally:
    row = await conn.fetchrow(
        """SELECT count(*) AS rows, coalesce(sum(applied), 0) AS applications,
                  count(*) FILTER (WHERE name = 'n' || (id + $2::bigint * (($1::bigint - 1 - id) / $2::bigint)))
                    AS at_last,
                  coalesce(sum(greatest(applied - (($1::bigint - 1 - id) / $2::bigint + 1), 0)), 0) AS dupes,
                  coalesce(sum(greatest((($1::bigint - 1 - id) / $2::bigint + 1) - applied, 0)), 0) AS short_rows,
                  extract(epoch FROM max(applied_at) - min(first_at)) AS span
           FROM users""", n, keys)
    short = int(row["short_rows"])
    if row["rows"] < keys:  # keys with no row at all: every write to them is missing
        have = {r["id"] for r in await conn.fetch("SELECT id FROM users")}
        short += sum(writes_per_key(k, n, keys) for k in range(keys) if k not in have)
    return Tally(rows=row["rows"], applications=int(row["applications"]), at_last=row["at_last"],
                 dupes=int(row["dupes"]), short=short, span_s=float(row["span"] or 0.0))


# --- producing --------------------------------------------------------------------------------------

def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    produce_records(bootstrap, topic, records)


def rg_records(order: list[int], keys: int) -> list[tuple[bytes, bytes]]:
    ids: dict[int, str] = {}
    out = []
    for i in order:
        eid = ids.setdefault(i, str(uuid.uuid4()))  # a resend carries the same id
        out.append((f"users/{i % keys}".encode(), rg_event(eid, i, keys)))
    return out


def peer_records(order: list[int], keys: int) -> list[tuple[bytes, bytes]]:
    return [(peer_key(i % keys), peer_value(i, keys)) for i in order]


# --- the systems ------------------------------------------------------------------------------------

@dataclass
class PeerSettings:
    batch_size: int = 2000
    max_poll: int = 2000
    tasks: int = 2
    unnest: bool = True  # the fastest of the settings tried (README)
    reduction: bool = True  # needed with unnest: a key twice in one batch fails the whole unnest upsert
    heap: str = "1g"

    def describe(self) -> str:
        return (f"tasks.max={self.tasks} batch.size={self.batch_size} consumer.max.poll.records={self.max_poll} "
                f"dialect.postgres.unnest.insert.enabled={str(self.unnest).lower()} "
                f"use.reduction.buffer={str(self.reduction).lower()}")


class RegionGuard:
    name = "regionguard"

    def __init__(self, broker: Broker, logs: Path, partitions: int) -> None:
        self.broker, self.logs, self.partitions = broker, logs, partitions
        self.procs: list[ServiceProcess] = []

    def prepare(self, tag: str, db: str, port: int, records_for: list[int], keys: int) -> None:
        doc = {"kafka": {"bootstrap": self.broker.bootstrap, "topic_prefix": f"peer{tag}.",
                         "partitions": self.partitions},
               "regions": {"eu": {"dsn": f"postgresql://postgres@{PG_HOST}:{port}/{db}"}},
               "tables": {"users": {"key": ["id"]}},  # no version: duplicates are caught by the event id only
               "metrics": {"enabled": False}}
        cfg = parse_config(doc)
        ensure_topics(cfg)
        self.cfg_path = self.logs / f"rg-{tag}.yaml"
        self.cfg_path.write_text(yaml.safe_dump(doc))
        produce(self.broker.bootstrap, cfg.topic("writes", "eu"), rg_records(records_for, keys))

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
        self.proc: subprocess.Popen[bytes] | None = None
        self.libs, self.plugins = peer_jars()

    def prepare(self, tag: str, db: str, port: int, records_for: list[int], keys: int) -> None:
        topic = f"peer{tag}.users"
        create_topics(self.broker.bootstrap, {topic: self.partitions})
        produce(self.broker.bootstrap, topic, peer_records(records_for, keys))
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
        self.cmd = [shutil.which("java") or "java", f"-Xms256m", f"-Xmx{self.s.heap}",
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
    wps: float = 0.0
    tally: Tally = field(default_factory=Tally)
    complete: bool = False
    resume_s: float | None = None
    notes: list[str] = field(default_factory=list)


async def wait_done(dsn: str, n: int, keys: int, timeout: float, quiet_s: float = 3.0) -> tuple[Tally, bool]:
    """Until every row is at its last value, at least n applications happened and nothing moved for quiet_s."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            t = await tally(conn, n, keys)
            if t.applications != last:
                last, since = t.applications, time.monotonic()
            elif t.at_last == keys and t.applications >= n and time.monotonic() - since >= quiet_s:
                return t, True
            await asyncio.sleep(0.5)
        return await tally(conn, n, keys), False
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
    db = asyncio.run(fresh_db(f"rg_peer_{system.name}_{tag}"))
    dsn = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/{db}"
    proxy = FaultProxy(PG_HOST, PG_PORT, name=f"{system.name}-db") if run in FAULTS else None
    res = Result(system.name, run)
    try:
        system.prepare(tag, db, proxy.port if proxy else PG_PORT, order, keys)
        system.start()
        if proxy is not None:
            asyncio.run(fault_window(system, dsn, proxy, n, args.fault_s, args.resume_wait, res, FAULTS[run]))
            if res.resume_s is None and isinstance(system, Peer) and system.failed_trace():
                res.notes.append("task FAILED: " + system.failed_trace()[:300])
                res.notes.append("operator: POST /connectors/<name>/restart?includeTasks=true&onlyFailed=true")
                system.operator_restart()
        res.tally, res.complete = asyncio.run(wait_done(dsn, n, keys, timeout=args.timeout))
        res.wps = n / res.tally.span_s if res.tally.span_s > 0 else 0.0
        res.notes.append(f"at the end: {system.state()}")
        if not res.complete:
            res.notes.append(f"INCOMPLETE after {args.timeout:.0f} s")
    finally:
        system.stop()
        if proxy is not None:
            proxy.stop()
        asyncio.run(drop_db(db))
    return res


def describe(res: Result, n: int, keys: int) -> str:
    t = res.tally
    return (f"  {res.system:<11} {res.wps:>9,.0f} writes/s  span {t.span_s:6.1f} s  applications {t.applications:,}"
            f"  dupes {t.dupes:,}  short {t.short:,}  rows not at last value {keys - t.at_last:,}"
            + (f"  resume {fmt_resume(res.resume_s)} s" if res.run in FAULTS else "")
            + "".join(f"\n      {x}" for x in res.notes))


def main() -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--keys", type=int, default=50_000)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--dup-fraction", type=float, default=0.2)
    ap.add_argument("--dup-lag", type=int, default=1000, help="records between an event and its resend")
    ap.add_argument("--fault-s", type=float, default=20.0)
    ap.add_argument("--resume-wait", type=float, default=60.0,
                    help="how long after the heal a system may take to apply again before it counts as 'never'")
    ap.add_argument("--timeout", type=float, default=300.0, help="bound of one system's run")
    ap.add_argument("--runs", default="plain,dupes,fault,down",
                    help="plain, dupes, fault (DB blackholed), down (DB connections reset and refused)")
    ap.add_argument("--system", choices=["both", "regionguard", "peer"], default="both")
    ap.add_argument("--peer-batch-size", type=int, default=PeerSettings.batch_size)
    ap.add_argument("--peer-max-poll", type=int, default=PeerSettings.max_poll)
    ap.add_argument("--peer-tasks", type=int, default=PeerSettings.tasks)
    ap.add_argument("--peer-unnest", action=argparse.BooleanOptionalAction, default=PeerSettings.unnest,
                    help="dialect.postgres.unnest.insert.enabled")
    ap.add_argument("--peer-reduction", action=argparse.BooleanOptionalAction, default=PeerSettings.reduction,
                    help="use.reduction.buffer (one record per key and batch)")
    args = ap.parse_args()
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]

    settings = PeerSettings(args.peer_batch_size, args.peer_max_poll, args.peer_tasks, args.peer_unnest,
                            args.peer_reduction)
    broker = Broker.from_env(default="apache")
    started = not broker.is_running()
    logs = Path(tempfile.gettempdir()) / "regionguard-bench"
    logs.mkdir(exist_ok=True)
    if args.system != "regionguard":
        peer_jars()  # resolve (once) before the broker starts
    if started:
        broker.start()
    results: dict[tuple[str, str], Result] = {}
    try:
        print(f"N={args.n:,} upserts over {args.keys:,} keys, {args.partitions} partitions, Apache Kafka "
              f"{KAFKA_VERSION} ({broker.bootstrap}); peer: Kafka Connect {KAFKA_VERSION} standalone + "
              f"Debezium JDBC sink {DEBEZIUM_VERSION}, {settings.describe()}", flush=True)
        for run in runs:
            order = send_order(args.n, args.dup_fraction if run == "dupes" else 0.0, args.dup_lag)
            print(f"run {run}: {len(order):,} records"
                  + (f", DB {FAULTS[run]} {args.fault_s:.0f} s at ~30%" if run in FAULTS else ""), flush=True)
            for name in (["regionguard", "peer"] if args.system == "both" else [args.system]):
                system = (RegionGuard(broker, logs, args.partitions) if name == "regionguard"
                          else Peer(broker, logs, args.partitions, settings))
                res = one_run(system, run, args.n, args.keys, order, args)
                results[(name, run)] = res
                print(describe(res, args.n, args.keys), flush=True)
    finally:
        if started:
            broker.stop()

    def get(system: str, run: str) -> Result | None:
        return results.get((system, run))

    print()
    print("| run | system | writes/s | applications | applied twice | missing | rows not at last value | resume after heal (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for (name, run), r in results.items():
        print(f"| {run} | {name} | {r.wps:,.0f} | {r.tally.applications:,} | {r.tally.dupes:,} | {r.tally.short:,} | "
              f"{args.keys - r.tally.at_last:,} | {fmt_resume(r.resume_s) if run in FAULTS else ''} |")
    rg_plain, peer_plain = get("regionguard", "plain"), get("peer", "plain")
    rg_d, peer_d = get("regionguard", "dupes"), get("peer", "dupes")
    rg_f, peer_f = get("regionguard", "fault"), get("peer", "fault")
    print(peer_line(rg_plain.wps if rg_plain else 0.0, peer_plain.wps if peer_plain else 0.0,
                    rg_d.tally.dupes if rg_d and rg_d.complete else None,  # na: the run never finished
                    peer_d.tally.dupes if peer_d and peer_d.complete else None,
                    rg_f.resume_s if rg_f else None, peer_f.resume_s if peer_f else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
