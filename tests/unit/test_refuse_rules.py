"""What PostgreSQL would refuse, found in planning (core/refuse.py, core/plan.py plan_writes): pure, no I/O."""

from __future__ import annotations

import json
import uuid

import pytest

from regionguard.core import wire
from regionguard.core.db import plan_writes
from regionguard.core.models import DeadReason
from regionguard.core.refuse import holds_nul, refusal, suspect_columns
from regionguard.core.sql import TableSchema, statement_params
from regionguard.core.models import Op

FZ = TableSchema("fz", ("id",), None, frozenset({"id", "seq", "note", "doc", "raw", "qty", "small", "day"}),
                 {"id": "bigint", "seq": "bigint", "note": "text", "doc": "jsonb", "raw": "json", "qty": "integer",
                  "small": "smallint", "day": "date"})
SCHEMAS = {"fz": FZ}


def _ev(i: int, data: dict, **extra) -> wire.WireWrite:
    ev = {"id": str(uuid.uuid4()), "region": "eu", "table": "fz", "op": "upsert", "key": {"id": i}, "data": data}
    ev.update(extra)
    return wire.decode(json.dumps(ev).encode())


def _group(i: int, ops: list[dict]) -> wire.WireWrite:
    return wire.decode(json.dumps({"id": str(uuid.uuid4()), "region": "eu", "ordering_key": f"g{i}",
                                   "ops": ops}).encode())


@pytest.mark.parametrize("value", ["a\x00b", "\x00", {"t": "x\x00"}, {"k\x00": 1}, [1, ["\x00"]], {"a": [{"b": "\x00"}]}])
def test_a_nul_anywhere_in_a_value_is_found(value):
    assert holds_nul(value)


@pytest.mark.parametrize("value", ["ab", "\\u0000", None, 0, 1.5, True, {"t": "x"}, [[], {}], "\x01"])
def test_no_nul_no_finding(value):
    assert not holds_nul(value)


def test_a_document_a_thousand_levels_deep_is_walked_without_recursion():
    doc: object = "\x00"
    for _ in range(5000):
        doc = [doc]
    assert holds_nul(doc)


@pytest.mark.parametrize("col", ["note", "doc", "day", "seq"])
def test_a_nul_is_refused_in_every_column_type_but_json(col):
    detail = refusal(FZ, col, "a\x00b")
    assert detail is not None and f"column {col!r}" in detail and "NUL" in detail


def test_json_keeps_its_text_and_takes_a_nul():
    assert refusal(FZ, "raw", {"t": "a\x00b"}) is None


@pytest.mark.parametrize("col, bad, good", [
    ("qty", 2 ** 31, 2 ** 31 - 1), ("qty", -(2 ** 31) - 1, -(2 ** 31)),
    ("small", 2 ** 15, 2 ** 15 - 1), ("seq", 2 ** 63, 2 ** 63 - 1), ("seq", -(2 ** 200), -(2 ** 63)),
])
def test_integers_are_refused_past_their_columns_range_only(col, bad, good):
    detail = refusal(FZ, col, bad)
    assert detail is not None and f"column {col!r}" in detail and "out of range" in detail
    assert refusal(FZ, col, good) is None


def _params(cols, rows):
    return statement_params(FZ, Op.upsert, cols, rows)


def test_the_scan_points_only_at_columns_whose_text_may_hold_a_refused_value():
    cols = ("id", "note", "qty", "raw")
    clean = [{"id": 1, "note": "x", "qty": 5, "raw": {"a": 1}}, {"id": 2, "note": "y", "qty": 2 ** 31 - 1, "raw": None}]
    assert suspect_columns(FZ, cols, _params(cols, clean)) == ["qty"]  # ten digits: looked at, then found in range
    assert suspect_columns(FZ, cols, _params(cols, clean[:1])) == []
    nul = clean[:1] + [{"id": 3, "note": "a\x00", "qty": 1, "raw": {"a": "\x00"}}]
    assert suspect_columns(FZ, cols, _params(cols, nul)) == ["note"]  # json takes it: not a suspect
    jsonb = [{"id": 4, "doc": {"t": ["\x00"]}}]
    assert suspect_columns(FZ, ("doc", "id"), statement_params(FZ, Op.upsert, ("doc", "id"), jsonb)) == ["doc"]


def test_planning_dead_letters_each_refused_write_naming_its_column_and_plans_the_rest():
    writes = [_ev(i, {"seq": i, "note": "ok", "qty": 1}) for i in range(10)]
    writes[2] = _ev(2, {"seq": 2, "note": "o\x00k"})
    writes[5] = _ev(5, {"seq": 5, "qty": 2 ** 31})
    writes[7] = _ev(7, {"seq": 7, "doc": {"t": "\x00"}})
    writes[8] = _ev(8, {"seq": 2 ** 64})
    plan = plan_writes(SCHEMAS, writes)
    assert [i for i, _ in plan.failed] == [2, 5, 7, 8]
    assert all(b.reason is DeadReason.schema for _, b in plan.failed)
    details = [b.detail for _, b in plan.failed]
    assert "column 'note'" in details[0] and "NUL" in details[0]
    assert "column 'qty'" in details[1] and "out of range" in details[1]
    assert "column 'doc'" in details[2]
    assert "column 'seq'" in details[3]
    planned = sorted(i for rows, *_ in plan.steps for i, _ in rows)
    assert planned == [0, 1, 3, 4, 6, 9]
    assert [i for i, _ in plan.todo] == planned


def test_a_refused_op_takes_its_whole_group_and_is_named_by_position():
    ok = {"table": "fz", "op": "upsert", "key": {"id": 1}, "data": {"seq": 1, "qty": 0}}
    bad = {"table": "fz", "op": "upsert", "key": {"id": 2}, "data": {"seq": 1, "note": "\x00"}}
    writes = [_ev(0, {"seq": 0}), _group(1, [ok, bad]), _ev(3, {"seq": 3})]
    plan = plan_writes(SCHEMAS, writes)
    assert [(i, b.reason) for i, b in plan.failed] == [(1, DeadReason.schema)]
    assert plan.failed[0][1].detail.startswith("ops[1]: column 'note'")
    assert sorted(i for rows, *_ in plan.steps for i, _ in rows) == [0, 2]
    assert plan.groups == 0


def test_a_clean_batch_is_planned_as_before():
    writes = [_ev(i, {"seq": i, "note": "\\u0000 written out", "qty": 1_000_000_000}) for i in range(5)]
    plan = plan_writes(SCHEMAS, writes)
    assert plan.failed == [] and len(plan.todo) == 5


def test_a_lane_reads_small_batches_after_one_a_row_failed_in_and_grows_back_after_clean_ones():
    from regionguard.core.batch import CAREFUL_BATCH, next_batch_max
    assert next_batch_max(1000, 1000, careful=True) == CAREFUL_BATCH
    assert next_batch_max(CAREFUL_BATCH, 1000, careful=True) == CAREFUL_BATCH
    sizes = [CAREFUL_BATCH]
    while sizes[-1] < 1000:
        sizes.append(next_batch_max(sizes[-1], 1000, careful=False))
    assert sizes == [100, 200, 400, 800, 1000]
    assert next_batch_max(20, 20, careful=True) == 20  # never above the configured batch_max
