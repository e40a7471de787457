"""The batch planner's levels for atomic write groups and ordering keys (pure: no database)."""

from __future__ import annotations

import uuid

import pytest

from regionguard.core.config import parse_config
from regionguard.core.db import plan_writes
from regionguard.core.models import WriteEvent
from regionguard.core.sql import TableSchema
from regionguard.client import WriteProducer

SCHEMAS = {
    "orders": TableSchema("orders", ("id",), None, frozenset({"id", "customer_id", "amount", "status"}),
                          {"id": "bigint", "customer_id": "bigint", "amount": "numeric", "status": "text"}),
    "order_items": TableSchema("order_items", ("order_id", "line"), None, frozenset({"order_id", "line", "qty"}),
                               {"order_id": "bigint", "line": "integer", "qty": "integer"}),
}


def order(oid: int, lines: int, customer: int | None = None) -> WriteEvent:
    ops = [{"table": "orders", "op": "insert", "key": {"id": oid}, "data": {"customer_id": customer or oid}}]
    ops += [{"table": "order_items", "op": "insert", "key": {"order_id": oid, "line": i}, "data": {"qty": i}}
            for i in range(1, lines + 1)]
    return WriteEvent(id=uuid.uuid4(), region="eu", ordering_key=f"customer/{customer or oid}", ops=ops)


def steps(writes):
    """(table, [(event index, key) ...]) per statement, in execution order."""
    return [(schema.name, [(i, tuple(op.key.values())) for i, op in rows])
            for rows, schema, *_ in plan_writes(SCHEMAS, writes).steps]


def test_unrelated_groups_share_two_statements():
    plan = steps([order(i, 9) for i in range(100)])
    assert [t for t, _ in plan] == ["orders", "order_items"]
    assert len(plan[0][1]) == 100 and len(plan[1][1]) == 900


def test_a_group_keeps_its_listed_order_across_tables():
    g = WriteEvent(id=uuid.uuid4(), region="eu", ordering_key="c/1", ops=[
        {"table": "order_items", "op": "update", "key": {"order_id": 1, "line": 1}, "data": {"qty": 2}},
        {"table": "orders", "op": "insert", "key": {"id": 2}, "data": {"customer_id": 1}},
        {"table": "order_items", "op": "insert", "key": {"order_id": 2, "line": 1}, "data": {"qty": 1}}])
    assert [t for t, _ in steps([g])] == ["order_items", "orders", "order_items"]


def test_events_of_one_ordering_key_apply_in_order():
    first = order(1, 1, customer=9)
    later = WriteEvent(id=uuid.uuid4(), region="eu", ordering_key="customer/9", ops=[
        {"table": "order_items", "op": "insert", "key": {"order_id": 1, "line": 2}, "data": {"qty": 5}}])
    single = WriteEvent(id=uuid.uuid4(), region="eu", table="orders", op="update", key={"id": 1},
                        data={"status": "paid"}, ordering_key="customer/9")
    plan = steps([first, later, single])
    # order 1, its line 1, then the later group's line 2, then the update: four levels
    assert plan == [("orders", [(0, (1,))]), ("order_items", [(0, (1, 1))]), ("order_items", [(1, (1, 2))]),
                    ("orders", [(2, (1,))])]


def test_a_row_written_twice_keeps_its_order():
    a, b = order(1, 1), order(1, 1)  # same rows again (a retry with a new id, say)
    plan = steps([a, b])
    assert [i for _, rows in plan for i, _ in rows] == [0, 0, 1, 1]


@pytest.mark.parametrize("bad_index", [0, 2])
def test_a_group_failing_the_column_check_fails_whole_naming_the_op(bad_index):
    ops = [{"table": "orders", "op": "insert", "key": {"id": 1}, "data": {"customer_id": 1}},
           {"table": "order_items", "op": "insert", "key": {"order_id": 1, "line": 1}, "data": {"qty": 1}},
           {"table": "order_items", "op": "insert", "key": {"order_id": 1, "line": 2}, "data": {"qty": 1}}]
    ops[bad_index] = {**ops[bad_index], "data": {**ops[bad_index]["data"], "secret": 1}}
    g = WriteEvent(id=uuid.uuid4(), region="eu", ordering_key="c/1", ops=ops)
    plan = plan_writes(SCHEMAS, [g, order(2, 1)])
    assert [(i, e.reason.value) for i, e in plan.failed] == [(0, "unknown_column")]
    assert plan.failed[0][1].detail.startswith(f"ops[{bad_index}]")
    assert {i for rows, *_ in plan.steps for i, _ in rows} == {1}  # nothing of the bad group is planned
    assert plan.groups == 1


def test_the_sdk_sends_a_group_as_one_event_keyed_by_its_ordering_key():
    cfg = parse_config({"regions": {"eu": {"dsn": "postgresql://x@h/db"}},
                        "tables": {"orders": {"key": ["id"]}, "order_items": {"key": ["order_id", "line"]}}})
    sent = []
    producer = WriteProducer.__new__(WriteProducer)
    producer.cfg, producer.send = cfg, sent.append
    with producer.group("eu", ordering_key="customer/42") as g:
        g.insert("orders", {"id": 7}, {"customer_id": 42})
        g.insert("order_items", {"order_id": 7, "line": 1}, {"qty": 2})
    assert len(sent) == 1 and sent[0] is g.event
    assert sent[0].kafka_key() == b"customer/42" and [o.table for o in sent[0].ops] == ["orders", "order_items"]
    with pytest.raises(RuntimeError):
        with producer.group("eu", ordering_key="customer/42") as g2:
            g2.insert("orders", {"id": 8}, {"customer_id": 42})
            raise RuntimeError("the application failed mid-group")
    assert len(sent) == 1  # a block that raised sends nothing


def test_an_update_of_key_columns_only_is_refused_after_an_upsert_with_the_same_columns():
    """The per-batch column check is shared by writes of one (table, op, columns): an upsert whose
    data is only the key is fine, an update with the same data changes nothing and must be a dead
    letter, not a statement that cannot be built (which stalled the batch)."""
    upsert = WriteEvent(id=uuid.uuid4(), region="eu", table="orders", op="upsert", key={"id": 1}, data={"id": 1})
    update = WriteEvent(id=uuid.uuid4(), region="eu", table="orders", op="update", key={"id": 2}, data={"id": 2})
    plan = plan_writes(SCHEMAS, [upsert, update])
    assert [(i, bad.reason.value) for i, bad in plan.failed] == [(1, "schema")]
    assert [i for i, _ in plan.todo] == [0]
