"""Shared parts of the latency benches (bench/latency.py, bench/takeover.py).

- a region database whose ``users`` rows carry the producer's send time
  (``sent_at``, the event's ``created_at``) and a deferred constraint trigger
  that records ``clock_timestamp()`` when the transaction that wrote the row
  reaches its commit (deferred triggers run as the last step before COMMIT;
  ``track_commit_timestamp`` would be exact but needs a server restart);
- :class:`SteadyLoad`, a thread producing WriteEvents at a fixed rate with the
  project's producer settings (``make_producer``: idempotent, ``acks=all``,
  ``linger.ms`` 2), recording each write's partition from its delivery report;
- :func:`fetch_commits` / :func:`summarise`: latency figures from the database;
  ``now()`` in the trigger is the transaction's start, which splits a write's
  latency into reaching the database (Kafka, the consumer, batching) and the
  transaction itself.

Both clocks are this machine's wall clock, so ``committed_at - sent_at`` is
the produce -> row committed latency.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regionguard.core.kafka import make_producer  # noqa: E402
from regionguard.core.models import WriteEvent  # noqa: E402
from regionguard.core.sql import INBOX_DDL  # noqa: E402

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

SCHEMA = """
CREATE TABLE users (id bigint PRIMARY KEY, name text, email text, version bigint NOT NULL, sent_at timestamptz);
CREATE TABLE rg_bench_commit (id bigint NOT NULL, sent_at timestamptz, txn_start timestamptz NOT NULL,
                              committed_at timestamptz NOT NULL);
CREATE FUNCTION rg_bench_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rg_bench_commit VALUES (NEW.id, NEW.sent_at, now(), clock_timestamp());
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER rg_bench_stamp AFTER INSERT OR UPDATE ON users
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION rg_bench_stamp();
"""


async def fresh_db(name: str) -> str:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = f"postgresql://postgres@127.0.0.1:5432/{name}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA)
        await conn.execute(INBOX_DDL)
    finally:
        await conn.close()
    return dsn


async def drop_db(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class SteadyLoad(threading.Thread):
    """Produce ``rate`` upserts/s to ``rg.writes.<region>`` until :meth:`finish`.

    Every write is a new row (key ``id`` = sequence number), so each commits
    exactly one ``rg_bench_commit`` row unless it is applied twice. Records are
    produced in ticks of ``tick_s``; each carries its own send time.
    """

    def __init__(self, cfg, region: str = "eu", rate: float = 2000.0, tick_s: float = 0.002) -> None:
        super().__init__(name="steady-load", daemon=True)
        self.cfg, self.region, self.rate, self.tick_s = cfg, region, rate, tick_s
        self.topic = cfg.topic("writes", region)
        self.partition: dict[int, int] = {}   # id -> partition (from the delivery report)
        self.sent = 0
        self.errors: list[str] = []
        self.behind_max = 0                   # most writes the schedule was ever behind
        self.t_start = self.t_end = 0.0
        self._halt = threading.Event()

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        self.partition[int(msg.key().rsplit(b"/", 1)[1])] = msg.partition()

    def run(self) -> None:
        producer = make_producer(self.cfg)
        self.t_start = t0 = time.time()
        i = 0
        while not self._halt.is_set():
            due = int((time.time() - t0) * self.rate)
            self.behind_max = max(self.behind_max, due - i)
            while i < due:
                now = datetime.now(timezone.utc)
                ev = WriteEvent(id=uuid.uuid4(), region=self.region, table="users", op="upsert", key={"id": i},
                                data={"name": f"u{i}", "version": 1, "sent_at": now.isoformat()}, created_at=now)
                while True:
                    try:
                        producer.produce(self.topic, key=ev.kafka_key(), value=ev.model_dump_json().encode(),
                                         on_delivery=self._delivered)
                        break
                    except BufferError:
                        producer.poll(0.01)
                i += 1
            self.sent = i
            producer.poll(0)
            time.sleep(self.tick_s)
        self.t_end = time.time()
        producer.flush(60)

    def finish(self) -> None:
        self._halt.set()
        self.join(90)


async def _commits(dsn: str) -> list[tuple[int, float, float, float]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, extract(epoch FROM sent_at)::float8, "
                                "extract(epoch FROM txn_start)::float8, "
                                "extract(epoch FROM committed_at)::float8 FROM rg_bench_commit")
        return [(r[0], r[1], r[2], r[3]) for r in rows]
    finally:
        await conn.close()


async def _count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(DISTINCT id) FROM rg_bench_commit")
    finally:
        await conn.close()


def wait_committed(dsn: str, n: int, timeout: float) -> int:
    """Wait until ``n`` distinct writes have committed rows; return how many did."""
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = asyncio.run(_count(dsn))
        if got >= n:
            return got
        time.sleep(0.5)
    return got


async def _committed_below(dsn: str, limit: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval("SELECT count(DISTINCT id) FROM rg_bench_commit WHERE id < $1", limit)
    finally:
        await conn.close()


def wait_settled(dsn: str, load: SteadyLoad, lag_s: float = 0.5, timeout: float = 60.0) -> float | None:
    """Wait until every write sent more than ``lag_s`` ago has committed (ids are sent in order).

    Returns the wall-clock time it was first true, or None after ``timeout``:
    the pipeline did not keep up (group still forming, or the machine too busy).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.time()
        limit = int((now - lag_s - load.t_start) * load.rate) if load.t_start else 0
        if limit > 0 and asyncio.run(_committed_below(dsn, limit)) >= limit:
            return now
        time.sleep(0.25)
    return None


def fetch_commits(dsn: str, *, with_start: bool = False) -> tuple[dict, int]:
    """``{id: (sent, committed)}`` (first commit of each id; ``(sent, txn_start, committed)`` with
    ``with_start``) and the number of extra commits (double applies)."""
    rows = asyncio.run(_commits(dsn))
    out: dict[int, tuple] = {}
    extra = 0
    for i, sent, start, committed in sorted(rows, key=lambda r: r[3]):
        if i in out:
            extra += 1
            continue
        out[i] = (sent, start, committed) if with_start else (sent, committed)
    return out, extra


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)] if s else float("nan")


def summarise(lat_ms: list[float]) -> dict[str, float]:
    if not lat_ms:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan"), "mean": float("nan")}
    return {"n": len(lat_ms), "p50": pct(lat_ms, 50), "p99": pct(lat_ms, 99), "max": max(lat_ms),
            "mean": statistics.fmean(lat_ms)}


def latencies(commits: dict[int, tuple[float, float]], since: float, until: float) -> list[float]:
    """Latencies (ms) of writes sent in ``[since, until)``."""
    return [(c - s) * 1000 for s, c in commits.values() if since <= s < until]


def worst_partition_gap(commits: dict[int, tuple[float, float]], partition: dict[int, int],
                        since: float, until: float) -> tuple[float, int | None]:
    """Longest time (s) a partition went without a commit, over writes sent in ``[since, until)``."""
    by_part: dict[int, list[float]] = {}
    for i, (s, c) in commits.items():
        if since <= s < until and i in partition:
            by_part.setdefault(partition[i], []).append(c)
    worst, where = 0.0, None
    for p, ts in by_part.items():
        ts.sort()
        for a, b in zip(ts, ts[1:]):
            if b - a > worst:
                worst, where = b - a, p
    return worst, where


def close_broker(broker) -> None:
    """Stop the broker and remove its data (Apache Kafka keeps it on disk)."""
    (getattr(broker, "close", None) or broker.stop)()
