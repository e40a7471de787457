"""Keys only PostgreSQL reads (core/spelling.py), ISO dates and times (core/cast.py), domains: pure, no I/O.

The integration tests (tests/integration/test_key_readings.py) ask a real PostgreSQL; here its
answers are given, as the ``spelled`` map the planner receives.
"""

from __future__ import annotations

import uuid

import pytest

from regionguard.core.cast import CastError, TableCasts, canonical
from regionguard.core.db import plan_writes
from regionguard.core.models import DeadReason, WriteEvent
from regionguard.core.spelling import Refusal, Spellings, identity
from regionguard.core.sql import TableSchema

TS = "timestamp without time zone"
TZ = "timestamp with time zone"


def key(t: str, v):
    cast = TableCasts.of({"k": t}, ("k",)).row({"k": v}, None)
    return v if cast is None else cast[0]["k"]


def asked(t: str, v) -> bool:
    return bool(TableCasts.of({"k": t}, ("k",)).asked({"k": v}))


@pytest.mark.parametrize("v", ["2026-01-02", "20260102"])
def test_iso_dates_are_one_canonical_date(v):
    assert key("date", v) == "2026-01-02" and not asked("date", v)


@pytest.mark.parametrize("v", ["Jan 2 2026", "2026-002", "01/02/2026", "today", " 2026-01-02", "2026-02-30",
                               "2026-W01-5", 20260102])
def test_other_date_spellings_are_sent_as_they_are_and_asked(v):
    # "2026-W01-5" Python reads and PostgreSQL refuses; "2026-002" the other way round
    assert key("date", v) == v and asked("date", v)


@pytest.mark.parametrize("v", ["2026-01-02 03:04:05", "2026-01-02T03:04:05", "2026-01-02T03:04:05.000000",
                               "2026-01-02 03:04:05.0"])
def test_timestamp_spellings_with_or_without_zero_fractions_are_one(v):
    assert key(TS, v) == "2026-01-02T03:04:05" and not asked(TS, v)


@pytest.mark.parametrize("v", ["2026-01-02 03:04:05.5", "2026-01-02T03:04:05.500", "2026-01-02T03:04:05.500000"])
def test_timestamp_fractions_are_one_whatever_their_digits(v):
    assert key(TS, v) == "2026-01-02T03:04:05.500000"


@pytest.mark.parametrize("t,v", [(TS, "Jan 2 2026 03:04"), (TS, "2026-01-02T03:04:05+01:00"), (TZ, "2026-01-02 03:04"),
                                 (TZ, "now"), (TS, "2026-01-02 03:04:05.1234567"), ("numeric", "NaN"),
                                 ("double precision", "inf")])
def test_spellings_no_rule_reads_exactly_are_asked_and_left_as_they_are(t, v):
    assert asked(t, v) and key(t, v) == v


@pytest.mark.parametrize("t", ["citext", "public.citext", "inet", "mood", "interval", "time without time zone"])
def test_a_type_with_no_rule_asks_for_every_key_value(t):
    assert asked(t, "x") and asked(t, 42) and key(t, "x") == "x"
    assert not asked(t, None)


@pytest.mark.parametrize("t,v", [("bigint", "42"), ("text", 42), ("uuid", "7D4AB2A4-52D5-4A36-9D6F-4D3C43D7D0A7"),
                                 ("boolean", "yes"), ("numeric", "1.5"), ("character", "a ")])
def test_types_with_exact_rules_never_ask(t, v):
    assert not asked(t, v)


def test_keys_of_exact_types_cost_no_asking_at_all():
    assert TableCasts.of({"id": "bigint", "d": "date", "c": "citext"}, ("id",)).asks == {}


def test_data_columns_are_never_asked():
    casts = TableCasts.of({"id": "bigint", "c": "citext", "d": "date"}, ("id",))
    assert casts.asks == {} and casts.row({"id": 1}, {"c": "x", "d": "Jan 2 2026"}) is None


def test_postgresql_readings_of_times_take_our_rules_form():
    # from a session whose TimeZone is Europe/Paris: one instant with the ISO spelling sent in UTC
    assert canonical(TZ, "2026-01-02T04:04:05+01:00") == key(TZ, "2026-01-02T03:04:05Z") == "2026-01-02T03:04:05+00:00"
    assert canonical(TS, "2026-01-02T03:04:05") == key(TS, "2026-01-02 03:04:05.000")
    assert canonical("date", "2026-01-02") == "2026-01-02"
    assert canonical("date", "infinity") == "infinity" and canonical("citext", "abc") == "abc"


# --- domains: the base type's rules -----------------------------------------------------------------------------

def test_a_domain_key_follows_its_base_types_rule():
    s = TableSchema("a", ("id",), None, frozenset({"id", "n"}), {"id": "account_id", "n": "int"}, {"id": "bigint"})
    assert s.casts.row({"id": "5"}, None) == ({"id": 5}, None)
    assert s.casts.row({"id": 5.0}, None) == ({"id": 5}, None)
    with pytest.raises(CastError, match=r"column 'id' \(bigint\): cannot cast 'x'"):
        s.casts.row({"id": "x"}, None)
    assert s.types["id"] == "account_id"  # the statement still casts to the domain: its CHECK is PostgreSQL's


def test_without_a_base_a_column_is_its_own_base():
    s = TableSchema("a", ("id",), None, frozenset({"id"}), {"id": "bigint"})
    assert s.bases == {"id": "bigint"}


# --- the planner with PostgreSQL's readings ---------------------------------------------------------------------

SCHEMAS = {
    "handles": TableSchema("handles", ("handle",), None, frozenset({"handle", "n"}), {"handle": "citext", "n": "integer"}),
    "days": TableSchema("days", ("day",), None, frozenset({"day", "n"}), {"day": "date", "n": "integer"}),
    "accounts": TableSchema("accounts", ("id",), None, frozenset({"id", "n"}), {"id": "account_id", "n": "integer"},
                            {"id": "bigint"}),
}


def ev(table, key, n, op="update"):
    return WriteEvent(id=uuid.uuid4(), region="eu", table=table, op=op, key=key, data={"n": n})


def statements(plan):
    return [[(i, dict(op.key)) for i, op in rows] for rows, *_ in plan.steps]


def test_two_spellings_postgresql_reads_as_one_row_are_two_statements_sent_as_spelled():
    writes = [ev("handles", {"handle": "Alice"}, 1), ev("handles", {"handle": "ALICE"}, 2)]
    spelled = {("citext", "Alice"): "alice", ("citext", "ALICE"): "alice"}
    plan = plan_writes(SCHEMAS, writes, spelled=spelled)
    assert not plan.failed
    assert statements(plan) == [[(0, {"handle": "Alice"})], [(1, {"handle": "ALICE"})]]  # the case as sent
    # without the readings they were one statement: UPDATE ... FROM changed the row once
    assert statements(plan_writes(SCHEMAS, writes)) == [[(0, {"handle": "Alice"}), (1, {"handle": "ALICE"})]]


def test_a_date_read_by_postgresql_meets_its_iso_spelling():
    writes = [ev("days", {"day": "20260102"}, 1, "upsert"), ev("days", {"day": "Jan 2 2026"}, 2, "upsert"),
              ev("days", {"day": "2026-01-03"}, 3, "upsert")]
    plan = plan_writes(SCHEMAS, writes, spelled={("date", "Jan 2 2026"): "2026-01-02"})
    assert statements(plan) == [[(0, {"day": "2026-01-02"}), (2, {"day": "2026-01-03"})], [(1, {"day": "Jan 2 2026"})]]


def test_a_domain_over_bigint_spelled_two_ways_is_one_row_with_no_asking():
    plan = plan_writes(SCHEMAS, [ev("accounts", {"id": 5}, 1), ev("accounts", {"id": "5"}, 2)], spelled={})
    assert statements(plan) == [[(0, {"id": 5})], [(1, {"id": 5})]]


def test_a_refused_reading_is_a_schema_failure_naming_the_column_and_a_groups_op():
    g = WriteEvent(id=uuid.uuid4(), region="eu", ordering_key="d", ops=[
        {"table": "days", "op": "upsert", "key": {"day": "2026-01-04"}, "data": {"n": 1}},
        {"table": "days", "op": "upsert", "key": {"day": "someday"}, "data": {"n": 2}}])
    writes = [ev("days", {"day": "2026-02-30"}, 1, "upsert"), g, ev("days", {"day": "2026-01-05"}, 3, "upsert")]
    spelled = {("date", "2026-02-30"): Refusal("SQLSTATE 22008"), ("date", "someday"): Refusal("SQLSTATE 22007")}
    plan = plan_writes(SCHEMAS, writes, spelled=spelled)
    assert [(i, b.reason, b.detail) for i, b in plan.failed] == [
        (0, DeadReason.schema, "column 'day' (date): cannot cast '2026-02-30' (SQLSTATE 22008)"),
        (1, DeadReason.schema, "ops[1]: column 'day' (date): cannot cast 'someday' (SQLSTATE 22007)")]
    assert statements(plan) == [[(2, {"day": "2026-01-05"})]]


def test_a_reading_not_learned_is_an_error_not_a_guess():
    # (an empty map says no key of the batch needed asking: Spellings never gives one otherwise)
    with pytest.raises(LookupError):
        plan_writes(SCHEMAS, [ev("handles", {"handle": "x"}, 1)], spelled={("citext", "y"): "y"})


def test_identity_replaces_only_values_read_by_postgresql():
    s = SCHEMAS["handles"]
    k = {"handle": "Bob"}
    assert identity(k, s, {("citext", "Bob"): "bob"}) == {"handle": "bob"} and k == {"handle": "Bob"}
    assert identity(k, s, {("citext", "Bob"): "Bob"}) is k


# --- the region's memory of readings ----------------------------------------------------------------------------

def test_known_readings_plan_ahead_and_a_missing_one_sends_the_batch_to_the_apply_stage():
    sp = Spellings()
    writes = [ev("handles", {"handle": "Ann"}, 1), ev("days", {"day": "2026-01-02"}, 2)]
    assert sp.known(SCHEMAS, writes) is None  # "Ann" must be asked (the ISO date need not)
    sp._remember(("citext", "Ann"), "ann")
    assert sp.known(SCHEMAS, writes) == {("citext", "Ann"): "ann"}
    sp.forget()
    assert sp.known(SCHEMAS, writes) is None


def test_no_table_with_such_a_key_means_nothing_to_ask():
    only_bigint = {"accounts": SCHEMAS["accounts"]}
    assert Spellings().known(only_bigint, [ev("accounts", {"id": "5"}, 1)]) == {}


def test_the_memory_is_bounded_oldest_first():
    sp = Spellings(kept=2)
    for t in ("a", "b", "c"):
        sp._remember(("citext", t), t)
    assert list(sp._read) == [("citext", "b"), ("citext", "c")]


def test_an_interval_is_read_by_its_span():
    from regionguard.core.spelling import _reading
    assert "justify_interval(u.t::interval)" in _reading("interval", 0)
    assert "justify_interval" not in _reading("date", 0)
