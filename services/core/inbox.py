"""Inbox retention: prune old rows of ``regionguard_applied`` and ``regionguard_tombstones``.

The inbox records every applied write id (exactly once per region) and the
tombstones record deleted keys of versioned tables. Both are only needed while
Kafka can still hand the same write (or an older one) to a router or replayer:
rows older than ``inbox.retention_s`` (default: the writes/held topic
retention plus ``inbox.margin_s``, see :class:`~.config.InboxConfig`) go.

Ages are measured by the database's clock (``applied_at`` and ``deleted_at``
are its ``now()``), so a skewed router clock cannot prune early. Deletes run
in batches of ``inbox.prune_batch`` rows, each its own short transaction on a
connection of its own (never one of the apply pool's), with a pause between
batches: pruning never holds a lock for long and never takes a lane's
connection. The router runs :class:`InboxPruner` per region;
``regionguard inbox prune`` (services/ops/inboxadmin.py) runs :func:`prune` once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import asyncpg

from . import metrics as m
from .config import Config, statement_cache_size
from .dsn import dsn_host
from .sql import INBOX_TABLE, TOMBSTONE_TABLE
from .supervise import swallowed

log = logging.getLogger(__name__)

#: table -> its age column; the tables pruned, in this order
PRUNED = {INBOX_TABLE: "applied_at", TOMBSTONE_TABLE: "deleted_at"}
_LABEL = {INBOX_TABLE: "inbox", TOMBSTONE_TABLE: "tombstones"}


def prune_sql(table: str) -> str:
    """One batch: ``$1`` = age in seconds, ``$2`` = at most this many rows.

    ``ctid = ANY(ARRAY(...))`` gives a TID scan for the outer delete (``ctid IN
    (SELECT ...)`` may be planned as a join over the whole table).
    """
    col = PRUNED[table]
    return (f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {table} WHERE {col} < now() - make_interval(secs => $1::float8) LIMIT $2::int))")


def count_sql(table: str) -> str:
    """How many rows :func:`prune_sql` would delete in all (``$1`` = age in seconds)."""
    return f"SELECT count(*) FROM {table} WHERE {PRUNED[table]} < now() - make_interval(secs => $1::float8)"


def retention_s(cfg: Config) -> float:
    return cfg.inbox.effective_retention_s(cfg.kafka)


def describe_age(seconds: float) -> str:
    """``1296000`` -> ``15d``, ``90061`` -> ``1d 1h 1m 1s``: for the operator's output."""
    s = int(round(seconds))
    parts = []
    for unit, n in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if s >= n or (unit == "s" and not parts):
            parts.append(f"{s // n}{unit}")
            s %= n
    return " ".join(parts)


@dataclass
class PruneCount:
    inbox: int = 0
    tombstones: int = 0

    def add(self, table: str, n: int) -> None:
        if table == INBOX_TABLE:
            self.inbox += n
        else:
            self.tombstones += n


async def existing_tables(conn: asyncpg.Connection) -> list[str]:
    """The pruned tables that exist (a region that never applied anything has none)."""
    out = []
    for table in PRUNED:
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            out.append(table)
    return out


async def count_old(conn: asyncpg.Connection, age_s: float) -> PruneCount:
    """What a prune would delete (dry run); a full scan of each table, for operators only."""
    out = PruneCount()
    for table in await existing_tables(conn):
        out.add(table, int(await conn.fetchval(count_sql(table), float(age_s))))
    return out


async def prune(conn: asyncpg.Connection, age_s: float, *, batch: int, pause_s: float = 0.0,
                region: str = "", stop: asyncio.Event | None = None,
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> PruneCount:
    """Delete rows older than ``age_s`` in batches of ``batch``, pausing ``pause_s`` between batches.

    Each batch is its own transaction (autocommit). Ends when a batch deletes
    fewer than ``batch`` rows, or when ``stop`` is set. Counts into the
    ``regionguard_inbox_pruned_total`` metric as it goes.
    """
    out = PruneCount()
    for table in await existing_tables(conn):
        stmt = prune_sql(table)
        while stop is None or not stop.is_set():
            status = await conn.execute(stmt, float(age_s), int(batch))
            n = int(status.rsplit(" ", 1)[-1])
            out.add(table, n)
            if n:
                m.INBOX_PRUNED.labels(region, _LABEL[table]).inc(n)
            if n < batch:
                break
            if pause_s:
                await sleep(pause_s)
    return out


class InboxPruner:
    """The router's background pruning of one region: a round every ``inbox.prune_every_s``.

    A failed round (region down, a timeout) logs one line, counts in
    ``regionguard_inbox_prune_errors_total{region}`` and
    ``regionguard_background_errors_total{component="inbox.prune"}`` (the
    redacted traceback at DEBUG) and is retried at the next round; it never
    touches the apply path's pool or passive health.
    """

    def __init__(self, cfg: Config, region: str, dsn: str, *,
                 connect: Callable[..., Awaitable[asyncpg.Connection]] = asyncpg.connect,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic, first_delay_s: float | None = None) -> None:
        self.cfg, self.region, self.dsn = cfg, region, dsn
        self.connect, self.sleep, self.clock = connect, sleep, clock
        self.age_s = retention_s(cfg)
        every = cfg.inbox.prune_every_s
        # spread the rounds of regions and router instances; not at start-up, when lanes join their groups
        self.first_delay_s = first_delay_s if first_delay_s is not None else min(60.0, every) * (1 + random.random())
        self.rounds = 0
        self.errors = 0
        self.total = PruneCount()

    async def run(self, stop: asyncio.Event) -> None:
        next_at = self.clock() + self.first_delay_s
        while not stop.is_set():
            wait = next_at - self.clock()
            if wait > 0:
                await self._wait(stop, wait)
                continue
            await self.round(stop)
            next_at = self.clock() + self.cfg.inbox.prune_every_s

    async def round(self, stop: asyncio.Event | None = None) -> PruneCount | None:
        inbox = self.cfg.inbox
        started = self.clock()
        try:
            conn = await self.connect(self.dsn, timeout=self.cfg.health.timeout_s * 10, command_timeout=60,
                                      statement_cache_size=statement_cache_size(self.cfg, self.region))
            try:
                # one batch must never run long: a statement past this is cancelled, retried next round
                done = await prune(conn, self.age_s, batch=inbox.prune_batch, pause_s=inbox.prune_pause_s,
                                   region=self.region, stop=stop, sleep=self.sleep)
            finally:
                await conn.close(timeout=2)
        except Exception as exc:  # noqa: BLE001 - reported (a line, two counters); retried next round
            self.errors += 1
            m.INBOX_PRUNE_ERRORS.labels(self.region).inc()
            swallowed("inbox.prune", exc, logger=log,
                      what=f"pruning region {self.region} at {dsn_host(self.dsn)} (next round in "
                           f"{inbox.prune_every_s:.0f}s)")
            return None
        self.rounds += 1
        self.total.inbox += done.inbox
        self.total.tombstones += done.tombstones
        if done.inbox or done.tombstones:
            log.info("region %s: pruned %d inbox rows and %d tombstones older than %s in %.1fs", self.region,
                     done.inbox, done.tombstones, describe_age(self.age_s), self.clock() - started)
        return done

    async def _wait(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep ``seconds`` (with the injected sleep), or less when ``stop`` is set."""
        waiter = asyncio.ensure_future(stop.wait())
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (waiter, sleeper):
                if not t.done():
                    t.cancel()
