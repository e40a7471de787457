"""Per-key order and at-most-once on real PostgreSQL, against a sequential model (hypothesis).

Random op sequences on a few keys are cut into random batches and applied
with :func:`regionguard.core.db.apply_writes` (what the router and the
replayer both run). The table must end exactly as applying the writes one
by one, in order, says — including re-sent ids (skipped) and failing rows
(dead-lettered, the rest of the batch still applied).

Versioned tables also get deletes with tombstones, failover sync-back (writes
applied in a fallback region, then at home later and out of order) and late
replays (the same writes again, in any order, once the home inbox no longer
has them), still against the sequential model; and with upserts and versioned
deletes only, every order must end where the in-order run ends (a deleted row
never comes back).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regionguard.core.config import parse_config
from regionguard.core.db import apply_writes, load_schemas
from regionguard.core.models import Op, WriteEvent
from regionguard.core.sql import INBOX_DDL

CFG = parse_config({"regions": {"eu": {"dsn": "postgresql://unused@h/db"}},
                    "tables": {"users": {"key": ["id"], "version": "version"}, "orders": {"key": ["id"]}}})

KEYS = st.integers(1, 3)
orders_op = st.one_of(
    st.tuples(st.just("insert"), KEYS, st.fixed_dictionaries({"amount": st.integers(-1, 9)})),
    st.tuples(st.just("upsert"), KEYS, st.fixed_dictionaries({"amount": st.integers(0, 9)},
                                                              optional={"status": st.sampled_from(["a", "b"])})),
    st.tuples(st.just("update"), KEYS, st.fixed_dictionaries({"status": st.sampled_from(["c", "d"])})),
    st.tuples(st.just("delete"), KEYS, st.none()),
)
users_op = st.one_of(
    st.tuples(st.just("upsert"), KEYS, st.fixed_dictionaries({"version": st.integers(1, 6), "name": st.text(max_size=3)})),
    st.tuples(st.just("insert"), KEYS, st.fixed_dictionaries({"version": st.integers(1, 6), "name": st.just("i")})),
    st.tuples(st.just("update"), KEYS, st.fixed_dictionaries({"version": st.integers(1, 6), "name": st.just("u")})),
    st.tuples(st.just("delete"), KEYS, st.one_of(st.none(), st.fixed_dictionaries({"version": st.integers(1, 6)}))),
)


def model_apply(table: str, state: dict, op: str, key: int, data: dict | None, tombs: dict | None = None) -> bool:
    """Sequential semantics of one write; returns False when the write is rejected (dead letter).

    ``tombs`` (versioned tables) maps key -> tombstone version: a delete leaves the
    higher of its version and the old tombstone (an unversioned delete: the deleted
    row's version); an insert or upsert at or below it is stale.
    """
    row = state.get(key)
    ver = "version" if table == "users" else None
    if data and any(isinstance(v, str) and "\x00" in v for v in data.values()):
        return False  # PostgreSQL text can't hold NUL: a schema dead letter
    if ver and tombs is not None:
        tomb = tombs.get(key)
        if op in ("insert", "upsert") and tomb is not None and data[ver] <= tomb:
            return True  # stale: the row was deleted at this version or later
        if op == "delete":
            dv = data[ver] if data else (row[ver] if row is not None else None)
            if dv is not None:
                tombs[key] = dv if tomb is None else max(tomb, dv)
    if op == "insert":
        if row is not None or (data.get("amount", 0) < 0):
            return False
        state[key] = {"id": key, **data}
    elif op == "upsert":
        if table == "orders" and data.get("amount", 0) < 0:
            return False
        if row is None:
            state[key] = {"id": key, **data}
        elif ver is None or row[ver] < data[ver]:
            row.update(data)
    elif op == "update":
        if row is not None and (ver is None or row[ver] < data[ver]):
            row.update(data)
    elif op == "delete":
        if row is not None and (ver is None or not data or row[ver] <= data[ver]):
            del state[key]
    return True


@pytest.fixture
def region_db(regions):
    lr = regions(["eu"])
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(lr.direct_dsn("eu")))
    loop.run_until_complete(conn.execute(INBOX_DDL))
    schemas = loop.run_until_complete(load_schemas(conn, CFG))
    yield loop, conn, schemas
    loop.run_until_complete(conn.close())
    loop.close()


def _run(region_db, table: str, ops, cuts, resend):
    loop, conn, schemas = region_db
    cols = "id, name, version" if table == "users" else "id, amount, status"
    loop.run_until_complete(conn.execute(f"TRUNCATE {table}, regionguard_applied, regionguard_tombstones"))
    writes = [WriteEvent(id=uuid.uuid4(), region="eu", table=table, op=Op(op), key={"id": k}, data=d)
              for op, k, d in ops]
    stream = list(writes)
    for i in resend:  # redeliveries of earlier writes, later in the stream
        if writes:
            stream.append(writes[i % len(writes)])
    state: dict = {}
    tombs: dict = {}
    seen = set()
    for n, w in enumerate(stream):
        if n == len(writes):
            seen_before_resend = set(seen)
        if w.id in seen:
            continue
        if model_apply(table, state, w.op.value, w.key["id"], dict(w.data) if w.data else None, tombs):
            seen.add(w.id)
    if len(stream) == len(writes):
        seen_before_resend = set(seen)
    # redeliveries come in a later batch, as after a crash (within one batch an id counts once)
    bounds = sorted({0, len(writes), len(stream), *[c % (len(writes) + 1) for c in cuts]})
    failed = dups = 0
    for a, b in zip(bounds, bounds[1:]):
        res = loop.run_until_complete(apply_writes(conn, schemas, stream[a:b], source="test", region="eu"))
        failed += len(res.failed)
        dups += res.duplicates
    rows = loop.run_until_complete(conn.fetch(f"SELECT {cols} FROM {table} ORDER BY id"))
    got = {r["id"]: {k: v for k, v in dict(r).items() if v is not None} for r in rows}
    want = {k: {c: v for c, v in row.items() if v is not None} for k, row in state.items()}
    if table == "orders":
        got = {k: {c: (int(v) if c == "amount" else v) for c, v in row.items()} for k, row in got.items()}
    assert got == want
    if table == "users":
        assert _tombstones(loop, conn) == tombs
    applied_ids = {r[0] for r in loop.run_until_complete(conn.fetch("SELECT write_id FROM regionguard_applied"))}
    assert applied_ids == seen  # each accepted write recorded once; rejected ones free to be re-published
    # a redelivery of an applied write is always skipped (one that failed before may apply now)
    must_skip = sum(1 for w in stream[len(writes):] if w.id in seen_before_resend)
    assert must_skip <= dups <= len(stream) - len(writes)


common = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@common
@given(ops=st.lists(orders_op, max_size=25), cuts=st.lists(st.integers(0, 40), max_size=4),
       resend=st.lists(st.integers(0, 30), max_size=3))
def test_unversioned_table_matches_sequential_model(region_db, ops, cuts, resend):
    _run(region_db, "orders", ops, cuts, resend)


@common
@given(ops=st.lists(users_op, max_size=25), cuts=st.lists(st.integers(0, 40), max_size=4),
       resend=st.lists(st.integers(0, 30), max_size=3))
def test_versioned_table_matches_sequential_model(region_db, ops, cuts, resend):
    _run(region_db, "users", ops, cuts, resend)


# -- deletes, failover sync-back and late replays (versioned table, two regions) ----------------------

def _tombstones(loop, conn) -> dict:
    rows = loop.run_until_complete(conn.fetch(
        "SELECT key, version FROM regionguard_tombstones WHERE table_name = 'users'"))
    return {json.loads(r["key"])[0]: int(r["version"]) for r in rows}


def _users(loop, conn) -> dict:
    rows = loop.run_until_complete(conn.fetch("SELECT id, name, version FROM users"))
    return {r["id"]: {"id": r["id"], "name": r["name"], "version": r["version"]} for r in rows}


class Region:
    """One region's database and its sequential model, fed the same batches in the same order."""

    def __init__(self, loop, conn, schemas):
        self.loop, self.conn, self.schemas = loop, conn, schemas
        self.state: dict = {}
        self.tombs: dict = {}
        self.seen: set = set()
        loop.run_until_complete(conn.execute("TRUNCATE users, regionguard_applied, regionguard_tombstones"))

    def apply(self, writes: list, cuts: list[int]) -> None:
        bounds = sorted({0, len(writes), *[c % (len(writes) + 1) for c in cuts]})
        for a, b in zip(bounds, bounds[1:]):
            batch = writes[a:b]
            in_batch: set = set()  # within one batch an id counts once, as the inbox claim does
            for w in batch:
                if w.id in self.seen or w.id in in_batch:
                    continue
                in_batch.add(w.id)
                if model_apply("users", self.state, w.op.value, w.key["id"], dict(w.data) if w.data else None,
                               self.tombs):
                    self.seen.add(w.id)
            self.loop.run_until_complete(apply_writes(self.conn, self.schemas, batch, source="test", region="eu"))

    def forget(self) -> None:
        """The inbox no longer has these writes (aged out, or a dead letter released and redriven)."""
        self.loop.run_until_complete(self.conn.execute("DELETE FROM regionguard_applied"))
        self.seen.clear()

    def check(self) -> None:
        want = {k: {"id": k, "name": row.get("name"), "version": row["version"]} for k, row in self.state.items()}
        assert _users(self.loop, self.conn) == want
        assert _tombstones(self.loop, self.conn) == self.tombs
        ids = {r[0] for r in self.loop.run_until_complete(self.conn.fetch("SELECT write_id FROM regionguard_applied"))}
        assert ids == self.seen


@pytest.fixture
def two_regions(regions):
    lr = regions(["eu", "us"])
    loop = asyncio.new_event_loop()
    out = {}
    for name in ("eu", "us"):
        conn = loop.run_until_complete(asyncpg.connect(lr.direct_dsn(name)))
        loop.run_until_complete(conn.execute(INBOX_DDL))
        out[name] = (conn, loop.run_until_complete(load_schemas(conn, CFG)))
    yield loop, out
    for conn, _ in out.values():
        loop.run_until_complete(conn.close())
    loop.close()


def _outage(two_regions, writes, failover, cuts, seed, replay, forget):
    """eu is home, us its fallback. While eu was down, the ``failover`` writes were applied in us;
    eu got the others in order, then the synced-back failover writes in a shuffled order, then
    ``replay`` (indexes into writes, any order) again — after its inbox forgot them when ``forget``."""
    loop, dbs = two_regions
    eu, us = Region(loop, *dbs["eu"]), Region(loop, *dbs["us"])
    flagged = [w for w, f in zip(writes, failover) if f]
    us.apply(flagged, cuts)
    eu.apply([w for w, f in zip(writes, failover) if not f], cuts)
    synced = list(flagged)
    random.Random(seed).shuffle(synced)
    eu.apply(synced, cuts[::-1])
    if forget:
        eu.forget()
    eu.apply([writes[i % len(writes)] for i in replay] if writes else [], cuts)
    us.check()
    eu.check()
    return eu


def _events(ops) -> list:
    return [WriteEvent(id=uuid.uuid4(), region="eu", table="users", op=Op(op), key={"id": k}, data=d)
            for op, k, d in ops]


@common
@given(ops=st.lists(users_op, max_size=20), failover=st.lists(st.booleans(), min_size=20, max_size=20),
       cuts=st.lists(st.integers(0, 40), max_size=3), seed=st.integers(0, 2**16),
       replay=st.lists(st.integers(0, 30), max_size=12), forget=st.booleans())
def test_versioned_sync_back_and_replays_match_sequential_model(two_regions, ops, failover, cuts, seed, replay,
                                                                 forget):
    _outage(two_regions, _events(ops), failover, cuts, seed, replay, forget)


# upserts and versioned deletes only, one version per key and write: every order must converge
converging_op = st.tuples(st.sampled_from(["upsert", "delete"]), KEYS, st.integers(1, 8))


@common
@given(ops=st.lists(converging_op, max_size=20, unique_by=lambda t: (t[1], t[2])),
       failover=st.lists(st.booleans(), min_size=20, max_size=20), cuts=st.lists(st.integers(0, 40), max_size=3),
       seed=st.integers(0, 2**16), replay=st.lists(st.integers(0, 30), max_size=12))
def test_deleted_rows_never_come_back_in_any_order(two_regions, ops, failover, cuts, seed, replay):
    writes = _events([(op, k, {"version": v, "name": f"{op}{v}"} if op == "upsert" else {"version": v})
                      for op, k, v in ops])
    eu = _outage(two_regions, writes, failover, cuts, seed, replay, forget=True)
    in_order: dict = {}
    tombs: dict = {}
    for w in writes:
        model_apply("users", in_order, w.op.value, w.key["id"], dict(w.data), tombs)
    assert eu.state == in_order  # the highest version of each key decides, whatever came when
    newest = {}
    for w in writes:
        if w.key["id"] not in newest or newest[w.key["id"]].data["version"] < w.data["version"]:
            newest[w.key["id"]] = w
    assert set(eu.state) == {k for k, w in newest.items() if w.op is Op.upsert}


def test_a_delete_buries_older_writes_until_a_newer_one(region_db):
    """The plain story: v2 deleted; a late v1 upsert and insert are stale; v3 brings the row back."""
    loop, conn, schemas = region_db
    loop.run_until_complete(conn.execute("TRUNCATE users, regionguard_applied, regionguard_tombstones"))

    def apply(op, version, **data):
        w = WriteEvent(id=uuid.uuid4(), region="eu", table="users", op=Op(op), key={"id": 7},
                       data={"version": version, **data})
        return loop.run_until_complete(apply_writes(conn, schemas, [w], source="test", region="eu"))

    assert apply("upsert", 1, name="a").applied == 1
    assert apply("delete", 2).applied == 1
    assert apply("upsert", 1, name="ghost").stale == 1
    r = apply("insert", 2, name="ghost")
    assert (r.stale, r.failed) == (1, [])  # stale, not a constraint error or a dead letter
    assert _users(loop, conn) == {}
    assert _tombstones(loop, conn) == {7: 2}
    assert apply("upsert", 3, name="back").applied == 1
    assert _users(loop, conn) == {7: {"id": 7, "name": "back", "version": 3}}
    assert apply("delete", 1).stale == 1  # an older delete leaves the newer row; the tombstone keeps 2
    assert _tombstones(loop, conn) == {7: 2}
    w = WriteEvent(id=uuid.uuid4(), region="eu", table="users", op=Op.delete, key={"id": 7}, data=None)
    assert loop.run_until_complete(apply_writes(conn, schemas, [w], source="test", region="eu")).applied == 1
    assert _tombstones(loop, conn) == {7: 3}  # an unversioned delete buries the deleted row's version
