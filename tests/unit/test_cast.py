"""Values in their column's form before planning (core/cast.py), and the planner using them: pure, no I/O."""

from __future__ import annotations

import uuid
from decimal import Decimal

import msgspec
import pytest

from regionguard.core import wire
from regionguard.core.cast import CastError, TableCasts
from regionguard.core.db import plan_writes
from regionguard.core.models import DeadReason, WriteEvent
from regionguard.core.sql import TableSchema, column_arrays

TYPES = {"i": "bigint", "s": "smallint", "n4": "integer", "n": "numeric", "f": "double precision", "r": "real",
         "t": "text", "v": "character varying", "c": "character", "u": "uuid", "b": "boolean",
         "tz": "timestamp with time zone", "ts": "timestamp without time zone", "d": "date", "j": "jsonb",
         "a": "text[]", "x": "some_domain"}
U = "7d4ab2a4-52d5-4a36-9d6f-4d3c43d7d0a7"


def key(col: str, v):
    """The form of ``v`` as the key column ``col`` (every typed key column is cast)."""
    cast = TableCasts.of(TYPES, (col,)).row({col: v}, None)
    return v if cast is None else cast[0][col]


def data(col: str, v):
    """The form of ``v`` as a data column (only types that can refuse a value are cast)."""
    cast = TableCasts.of(TYPES, ("i",)).row({"i": 1}, {col: v})
    return v if cast is None else cast[1][col]


@pytest.mark.parametrize("col", ["i", "s", "n4"])
@pytest.mark.parametrize("v", [42, "42", 42.0, " 42 ", "+42", "\t42\n", "0042"])
def test_integer_spellings_are_one_int(col, v):
    got = key(col, v)
    assert got == 42 and got.__class__ is int


@pytest.mark.parametrize("v", ["-7", -7, -7.0])
def test_negative_integers(v):
    assert key("i", v) == -7


@pytest.mark.parametrize("v", ["abc", 42.5, True, False, "4e2", "42.0", "0x2a", "1_000", "", " ", "٤٢", [1], {"a": 1},
                               float("inf"), float("nan")])
def test_integer_columns_refuse_what_postgresql_15_refuses(v):
    with pytest.raises(CastError) as e:
        key("i", v)
    assert e.value.detail.startswith("column 'i' (bigint): cannot cast ")


@pytest.mark.parametrize("col,v", [("s", "32768"), ("s", "-32769"), ("n4", float(2 ** 31)),
                                   ("i", "9223372036854775808"), ("i", 1e19)])
def test_out_of_range_spellings_are_refused_by_their_width(col, v):
    with pytest.raises(CastError, match="out of range"):
        key(col, v)


def test_an_int_out_of_range_passes_the_class_check_for_postgresql_to_refuse():
    # the common case costs a class check only; PostgreSQL's 22003 is then the dead letter
    assert key("i", 2 ** 63) == 2 ** 63 and key("s", 32768) == 32768


def test_integer_value_is_the_exact_text_postgresql_reads():
    assert column_arrays(TableSchema("t", ("i",), None, frozenset({"i"}), {"i": "bigint"}), ("i",),
                         [{"i": key("i", " 42 ")}]) == [["42"]]


@pytest.mark.parametrize("v,want", [(42, 42), ("42", Decimal(42)), ("42.0", Decimal(42)), (42.0, Decimal(42)),
                                    (0.1, Decimal("0.1")), ("1e3", Decimal(1000)), (" -.5 ", Decimal("-0.5")),
                                    (Decimal("1.10"), Decimal("1.1"))])
def test_numeric_spellings_are_one_decimal(v, want):
    got = key("n", v)
    assert got == want and hash(got) == hash(want)


def test_numeric_keeps_special_values_for_postgresql_and_refuses_words():
    assert key("n", "NaN") == "NaN" and key("n", "-Infinity") == "-Infinity"
    with pytest.raises(CastError):
        key("n", "lots")
    with pytest.raises(CastError):
        key("n", True)


def test_numeric_goes_to_postgresql_as_its_decimal_text():
    t = TableSchema("t", ("n",), None, frozenset({"n"}), {"n": "numeric"})
    assert column_arrays(t, ("n",), [{"n": key("n", 0.1)}, {"n": key("n", "1e3")}]) == [["0.1", "1E+3"]]


@pytest.mark.parametrize("col", ["f", "r"])
def test_float_spellings(col):
    assert key(col, "1.5") == 1.5 and key(col, 2) == 2 and key(col, 2.5) == 2.5 and key(col, "inf") == "inf"
    with pytest.raises(CastError):
        key(col, "x")


def test_text_keys_take_numbers_as_the_text_postgresql_stores():
    assert key("t", 42) == "42" and key("t", "42") == "42" and key("v", 1.5) == "1.5" and key("t", True) == "true"
    assert key("t", " a ") == " a "  # text keeps its spaces
    assert key("c", "ab  ") == "ab"  # character(n) ignores trailing spaces in comparisons


@pytest.mark.parametrize("v", [U, U.upper(), "{" + U + "}", U.replace("-", ""),
                               "7d4a-b2a4-52d5-4a36-9d6f-4d3c-43d7-d0a7"])
def test_uuid_spellings_are_one_canonical_uuid(v):
    assert key("u", v) == U


def test_a_canonical_uuid_is_kept_as_is():
    assert key("u", U) is U


@pytest.mark.parametrize("v", ["{" + U, U + "0", "urn:uuid:" + U, 42, "7d4ab2a4-52d5-4a36-9d6f-4d3c43d7d0aZ"])
def test_uuid_refuses_what_postgresql_refuses(v):
    with pytest.raises(CastError):
        key("u", v)


@pytest.mark.parametrize("v,want", [(True, True), ("t", True), ("TRUE", True), (" yes ", True), ("on", True), (1, True),
                                    ("1", True), ("tr", True), ("f", False), ("off", False), ("of", False),
                                    ("No", False), (0, False), ("0", False)])
def test_boolean_spellings(v, want):
    assert key("b", v) is want


@pytest.mark.parametrize("v", ["o", "maybe", 2, 1.0, "", "truex"])
def test_boolean_refuses(v):
    with pytest.raises(CastError):
        key("b", v)


def test_timestamptz_with_an_offset_is_one_instant_in_utc():
    assert key("tz", "2026-11-29T21:00:00+01:00") == key("tz", "2026-11-29 20:00:00Z") == "2026-11-29T20:00:00+00:00"
    assert key("tz", "2026-11-29T20:00:00.5+00:00") == "2026-11-29T20:00:00.500000+00:00"


def test_times_postgresql_reads_and_we_do_not_are_left_to_it():
    for v in ("now", "2026-11-29 20:00:00", "Nov 29 2026", "2026-11-29T20:00:00.1234567+00:00", "2026-02-30T00:00Z"):
        assert key("tz", v) == v  # no offset: the session's time zone decides; more digits: PostgreSQL rounds
    assert key("ts", "2026-11-29 20:00") == "2026-11-29T20:00:00"
    assert key("ts", "2026-11-29T20:00:00+01:00") == "2026-11-29T20:00:00+01:00"  # PostgreSQL drops the offset
    assert key("d", "2026-11-29") == "2026-11-29"


def test_json_arrays_unknown_types_and_nulls_are_left_alone():
    for col in ("j", "a", "x"):
        assert key(col, "42") == "42" and key(col, 42) == 42
    for col in TYPES:
        assert key(col, None) is None


def test_data_columns_are_cast_only_by_types_that_can_refuse():
    assert data("i", "7") == 7 and data("u", U.upper()) == U and data("b", "yes") is True
    assert data("t", 42) == 42 and data("tz", "2026-11-29T21:00:00+01:00") == "2026-11-29T21:00:00+01:00"
    with pytest.raises(CastError, match=r"column 'n' \(numeric\): cannot cast 'lots'"):
        data("n", "lots")


def test_values_in_form_are_not_copied():
    casts = TableCasts.of({"id": "bigint", "name": "text", "version": "bigint"}, ("id",))
    assert casts.row({"id": 1}, {"name": "a", "version": 3}) is None
    k, d = casts.row({"id": "1"}, {"name": "a", "version": 3})
    assert k == {"id": 1} and d == {"name": "a", "version": 3}


def test_a_long_value_is_shortened_in_the_detail():
    with pytest.raises(CastError) as e:
        key("i", "x" * 500)
    assert len(e.value.detail) < 140 and e.value.detail.endswith("...")


# --- the planner -----------------------------------------------------------------------------------------------

SCHEMAS = {
    "users": TableSchema("users", ("id",), "version", frozenset({"id", "name", "version"}),
                         {"id": "bigint", "name": "text", "version": "bigint"}),
    "pairs": TableSchema("pairs", ("a", "b"), None, frozenset({"a", "b", "x"}),
                         {"a": "uuid", "b": "integer", "x": "text"}),
}


def ev(key, data, op="update", table="users"):
    return WriteEvent(id=uuid.uuid4(), region="eu", table=table, op=op, key=key, data=data)


def rows_per_statement(plan):
    return [[(i, dict(op.key)) for i, op in rows] for rows, *_ in plan.steps]


@pytest.mark.parametrize("spelling", ["42", 42.0, " 42"])
def test_two_spellings_of_one_key_are_one_row_in_two_statements(spelling):
    """Planned as two rows, both went into one UPDATE ... FROM (one lost) or one upsert (SQLSTATE 21000)."""
    plan = plan_writes(SCHEMAS, [ev({"id": 42}, {"name": "a", "version": 1}),
                                 ev({"id": spelling}, {"name": "b", "version": 2})])
    assert not plan.failed
    assert rows_per_statement(plan) == [[(0, {"id": 42})], [(1, {"id": 42})]]


def test_the_statement_values_are_the_cast_ones():
    plan = plan_writes(SCHEMAS, [ev({"id": "42"}, {"name": 7, "version": "3"}, op="upsert")])
    (_rows, _schema, _op, cols, _stmt, params), = plan.steps
    assert cols == ("id", "name", "version") and params[0] == '["42"]' and params[2] == '["3"]'
    assert params[1] == '["7"]'  # a number for a text data column: the text it always was


def test_two_spellings_of_a_composite_uuid_key():
    plan = plan_writes(SCHEMAS, [ev({"a": U, "b": 1}, {"x": "1"}, op="upsert", table="pairs"),
                                 ev({"b": "1", "a": U.upper()}, {"x": "2"}, op="upsert", table="pairs")])
    assert len(plan.steps) == 2 and not plan.failed


def test_a_group_spelling_one_row_two_ways_applies_its_ops_in_order():
    g = WriteEvent(id=uuid.uuid4(), region="eu", ordering_key="u/42", ops=[
        {"table": "users", "op": "upsert", "key": {"id": 42}, "data": {"name": "a", "version": 1}},
        {"table": "users", "op": "upsert", "key": {"id": "42"}, "data": {"name": "b", "version": 2}}])
    plan = plan_writes(SCHEMAS, [g])
    assert rows_per_statement(plan) == [[(0, {"id": 42})], [(0, {"id": 42})]]
    assert plan.todo[0][1].ops[1].key == {"id": 42} and g.ops[1].key == {"id": "42"}  # the event is not changed


def test_an_uncastable_key_is_a_schema_failure_naming_the_column_and_the_rest_plans():
    plan = plan_writes(SCHEMAS, [ev({"id": "abc"}, {"name": "a", "version": 1}),
                                 ev({"id": 1}, {"name": "b", "version": 1})])
    [(i, bad)] = plan.failed
    assert i == 0 and bad.reason is DeadReason.schema and bad.detail == "column 'id' (bigint): cannot cast 'abc'"
    assert rows_per_statement(plan) == [[(1, {"id": 1})]]


def test_an_uncastable_value_in_a_group_names_its_op():
    g = WriteEvent(id=uuid.uuid4(), region="eu", ordering_key="u/1", ops=[
        {"table": "users", "op": "upsert", "key": {"id": 1}, "data": {"name": "a", "version": 1}},
        {"table": "users", "op": "update", "key": {"id": 1}, "data": {"version": "two"}}])
    [(_, bad)] = plan_writes(SCHEMAS, [g]).failed
    assert bad.reason is DeadReason.schema and bad.detail == "ops[1]: column 'version' (bigint): cannot cast 'two'"


def test_decoded_writes_are_cast_too():
    raw = [msgspec.json.encode({"id": str(uuid.uuid4()), "region": "eu", "table": "users", "op": "upsert",
                                "key": {"id": k}, "data": {"name": "x", "version": 1}}) for k in (5, "5")]
    plan = plan_writes(SCHEMAS, [wire.decode(r) for r in raw])
    assert rows_per_statement(plan) == [[(0, {"id": 5})], [(1, {"id": 5})]]
