"""Inbox retention without I/O: the age from config, the SQL, batching and the router's schedule.

The database is a fake that answers ``DELETE n``; time is an injected clock
that only the fake ``sleep`` advances.
"""

from __future__ import annotations

import asyncio

import pytest

from regionguard.core import metrics as m
from regionguard.core.config import ConfigError, parse_config
from regionguard.core.inbox import InboxPruner, count_sql, describe_age, prune, prune_sql, retention_s
from regionguard.core.sql import INBOX_TABLE, TOMBSTONE_TABLE

BASE = {"regions": {"eu": {"dsn": "postgresql://x@h/db"}}, "tables": {"users": {"key": ["id"], "version": "version"}}}


def cfg(**sections):
    return parse_config({**BASE, **sections})


def test_default_retention_is_the_longer_topic_retention_plus_the_margin():
    assert retention_s(cfg()) == 14 * 86_400 + 86_400  # held (14 d) is longer than writes (7 d)
    topics = {"topics": {"writes_retention_days": 20, "held_retention_days": 3}}
    assert retention_s(cfg(kafka=topics, inbox={"margin_s": 3600})) == 20 * 86_400 + 3600
    assert retention_s(cfg(inbox={"retention_s": 30 * 86_400})) == 30 * 86_400


def test_a_retention_below_the_topics_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"inbox\.retention_s \(3600\) is below the retention of the writes/held "
                                          r"topics \(1209600 s\)") as exc:
        cfg(inbox={"retention_s": 3600})
    assert "\n" not in str(exc.value)
    short = {"topics": {"writes_retention_days": 0.01, "held_retention_days": 0.02}}
    assert retention_s(cfg(kafka=short, inbox={"retention_s": 0.02 * 86_400})) == pytest.approx(1728)


def test_describe_age():
    assert describe_age(15 * 86_400) == "15d"
    assert describe_age(90_061) == "1d 1h 1m 1s"
    assert describe_age(0) == "0s"
    assert describe_age(3600) == "1h"


def test_prune_sql_is_a_bounded_batch_by_the_databases_clock():
    for table, col in ((INBOX_TABLE, "applied_at"), (TOMBSTONE_TABLE, "deleted_at")):
        sql = prune_sql(table)
        assert sql.startswith(f"DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} ")
        assert f"{col} < now() - make_interval(secs => $1::float8) LIMIT $2::int" in sql
        assert count_sql(table) == (f"SELECT count(*) FROM {table} "
                                    f"WHERE {col} < now() - make_interval(secs => $1::float8)")
        assert "'" not in sql


class FakeConn:
    """Answers the pruning statements: ``old[table]`` rows are older than any age asked."""

    def __init__(self, old: dict[str, int], tables=(INBOX_TABLE, TOMBSTONE_TABLE)):
        self.old = dict(old)
        self.tables = set(tables)
        self.calls: list[tuple[str, tuple]] = []
        self.closed = False

    async def fetchval(self, sql, *args):
        assert "to_regclass" in sql
        return args[0] in self.tables

    async def execute(self, sql, *args):
        self.calls.append((sql, args))
        table = sql.split()[2]
        age, limit = args
        n = min(limit, self.old.get(table, 0))
        self.old[table] = self.old.get(table, 0) - n
        return f"DELETE {n}"

    async def close(self, timeout=None):
        self.closed = True


def _metric(region, table):
    return m.INBOX_PRUNED.labels(region, table)._value.get()


def test_prune_deletes_in_batches_with_a_pause_until_a_short_batch():
    conn = FakeConn({INBOX_TABLE: 12_000, TOMBSTONE_TABLE: 3})
    pauses = []

    async def sleep(s):
        pauses.append(s)

    before = _metric("unit-a", "inbox"), _metric("unit-a", "tombstones")
    done = asyncio.run(prune(conn, 99.0, batch=5000, pause_s=0.5, region="unit-a", sleep=sleep))
    assert (done.inbox, done.tombstones) == (12_000, 3)
    assert [a for _, a in conn.calls] == [(99.0, 5000)] * 4  # 5000, 5000, 2000 (short: done), then tombstones 3
    assert pauses == [0.5, 0.5]  # only between full batches
    assert (_metric("unit-a", "inbox") - before[0], _metric("unit-a", "tombstones") - before[1]) == (12_000, 3)


def test_prune_skips_missing_tables_and_stops_when_asked():
    conn = FakeConn({INBOX_TABLE: 10}, tables=())
    assert asyncio.run(prune(conn, 1.0, batch=5)).inbox == 0 and conn.calls == []

    stop = asyncio.Event()
    conn = FakeConn({INBOX_TABLE: 1_000_000, TOMBSTONE_TABLE: 5})

    async def sleep(_s):
        if len(conn.calls) == 3:
            stop.set()

    done = asyncio.run(prune(conn, 1.0, batch=100, pause_s=1, stop=stop, sleep=sleep))
    assert done.inbox == 300 and len(conn.calls) == 3  # neither more inbox batches nor the tombstones


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    async def sleep(self, s):
        self.t += s
        await asyncio.sleep(0)


def test_the_router_prunes_a_region_every_prune_every_s_and_survives_a_failed_round():
    c = cfg(inbox={"prune_every_s": 600, "prune_batch": 10, "prune_pause_s": 0})
    clock = Clock()
    conns: list = []
    rounds_at: list[float] = []
    stop = asyncio.Event()

    async def connect(dsn, **kw):
        rounds_at.append(clock.t)
        if len(rounds_at) == 2:
            raise OSError("connection refused")
        if len(rounds_at) == 4:
            stop.set()
        conn = FakeConn({INBOX_TABLE: 25, TOMBSTONE_TABLE: 0})
        conns.append(conn)
        return conn

    p = InboxPruner(c, "unit-b", "postgresql://x@h/db", connect=connect, sleep=clock.sleep, clock=clock,
                    first_delay_s=30)
    errors_before = m.INBOX_PRUNE_ERRORS.labels("unit-b")._value.get()
    background_before = m.BACKGROUND_ERRORS.labels("inbox.prune", "OSError")._value.get()
    asyncio.run(asyncio.wait_for(p.run(stop), 5))
    assert [t - 1000 for t in rounds_at] == [30, 630, 1230, 1830]
    assert p.rounds == 3 and p.errors == 1
    assert p.total.inbox == 50 and all(conn.closed for conn in conns)  # round 4 saw stop before any batch
    assert m.INBOX_PRUNE_ERRORS.labels("unit-b")._value.get() - errors_before == 1
    assert m.BACKGROUND_ERRORS.labels("inbox.prune", "OSError")._value.get() - background_before == 1
    assert p.age_s == retention_s(c)
