"""Per-key order and at-most-once on real PostgreSQL, against a sequential model (hypothesis).

Random op sequences on a few keys are cut into random batches and applied
with :func:`regionguard.core.db.apply_writes` (what the router and the
replayer both run). The table must end exactly as applying the writes one
by one, in order, says — including re-sent ids (skipped) and failing rows
(dead-lettered, the rest of the batch still applied).
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regionguard.core.config import parse_config
from regionguard.core.db import apply_writes, load_schemas
from regionguard.core.models import Op, WriteEvent

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
    st.tuples(st.just("update"), KEYS, st.fixed_dictionaries({"version": st.integers(1, 6), "name": st.just("u")})),
    st.tuples(st.just("delete"), KEYS, st.one_of(st.none(), st.fixed_dictionaries({"version": st.integers(1, 6)}))),
)


def model_apply(table: str, state: dict, op: str, key: int, data: dict | None) -> bool:
    """Sequential semantics of one write; returns False when the write is rejected (dead letter)."""
    row = state.get(key)
    ver = "version" if table == "users" else None
    if data and any(isinstance(v, str) and "\x00" in v for v in data.values()):
        return False  # PostgreSQL text can't hold NUL: a schema dead letter
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
    loop.run_until_complete(conn.execute(
        "CREATE TABLE IF NOT EXISTS regionguard_applied (write_id uuid PRIMARY KEY, tbl text NOT NULL, "
        "source text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"))
    schemas = loop.run_until_complete(load_schemas(conn, CFG))
    yield loop, conn, schemas
    loop.run_until_complete(conn.close())
    loop.close()


def _run(region_db, table: str, ops, cuts, resend):
    loop, conn, schemas = region_db
    cols = "id, name, version" if table == "users" else "id, amount, status"
    loop.run_until_complete(conn.execute(f"TRUNCATE {table}, regionguard_applied"))
    writes = [WriteEvent(id=uuid.uuid4(), region="eu", table=table, op=Op(op), key={"id": k}, data=d)
              for op, k, d in ops]
    stream = list(writes)
    for i in resend:  # redeliveries of earlier writes, later in the stream
        if writes:
            stream.append(writes[i % len(writes)])
    state: dict = {}
    seen = set()
    for n, w in enumerate(stream):
        if n == len(writes):
            seen_before_resend = set(seen)
        if w.id in seen:
            continue
        if model_apply(table, state, w.op.value, w.key["id"], dict(w.data) if w.data else None):
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
