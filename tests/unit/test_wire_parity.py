"""The msgspec hot-path decoder accepts and rejects exactly what the pydantic contract does."""

from __future__ import annotations

import json
import uuid

import msgspec
import pydantic
from hypothesis import given, settings
from hypothesis import strategies as st

from regionguard.core import wire
from regionguard.core.models import WriteEvent

scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.text(max_size=5))
values = st.one_of(scalar, st.lists(scalar, max_size=2), st.floats(allow_nan=False, allow_infinity=False))
stamps = st.sampled_from([None, "2026-11-26T10:00:00Z", "2026-11-26T10:00:00+02:00", "2026-11-26T10:00:00",
                          "yesterday", 12])
docs = st.fixed_dictionaries(
    {"id": st.one_of(st.uuids().map(str), st.sampled_from(["nope", "", 7])),
     "region": st.sampled_from(["eu", "", 5, "x" * 70]),
     "table": st.sampled_from(["users", "", None]),
     "op": st.sampled_from(["insert", "upsert", "update", "delete", "merge", 1]),
     "key": st.one_of(st.dictionaries(st.sampled_from(["id", "k"]), scalar, max_size=2), st.just([1]))},
    optional={"data": st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "b", "version"]), values, max_size=3)),
              "policy": st.sampled_from(["hold", "failover", "shed", "drop"]),
              "fallback_regions": st.one_of(st.lists(st.sampled_from(["us", "ap"]), max_size=2), st.just("us")),
              "expires_at": stamps, "created_at": stamps,
              "meta": st.one_of(st.dictionaries(st.text(max_size=3), scalar, max_size=2), st.just(3)),
              "ordering_key": st.sampled_from(["customer/42", "", None, 7]),
              "surprise": st.just(1)})
row_op = st.fixed_dictionaries(
    {"table": st.sampled_from(["users", "", None]),
     "op": st.sampled_from(["insert", "upsert", "update", "delete", "merge"]),
     "key": st.one_of(st.dictionaries(st.sampled_from(["id", "k"]), scalar, max_size=2), st.just([1]))},
    optional={"data": st.one_of(st.none(), st.dictionaries(st.sampled_from(["a", "version"]), values, max_size=2)),
              "region": st.just("eu")})
# groups: ops, alone or mixed with the single-row fields; ordering_key present or not
groups = st.fixed_dictionaries(
    {"id": st.uuids().map(str), "region": st.just("eu"),
     "ops": st.one_of(st.lists(row_op, min_size=0, max_size=3), st.just(None), st.just({"table": "users"}))},
    optional={"ordering_key": st.sampled_from(["customer/42", "", None]),
              "table": st.sampled_from(["users", None]), "op": st.sampled_from(["upsert", None]),
              "key": st.just({"id": 1}), "data": st.sampled_from([{"a": 1}, None])})


def _pydantic_ok(raw: bytes) -> bool:
    try:
        WriteEvent.model_validate_json(raw)
        return True
    except pydantic.ValidationError:
        return False


def _wire_ok(raw: bytes) -> bool:
    try:
        wire.decode(raw)
        return True
    except (msgspec.ValidationError, msgspec.DecodeError):
        return False


@settings(max_examples=400, deadline=None)
@given(docs)
def test_same_verdict(doc):
    raw = json.dumps(doc).encode()
    assert _wire_ok(raw) == _pydantic_ok(raw), doc


@settings(max_examples=400, deadline=None)
@given(groups)
def test_same_verdict_on_groups(doc):
    raw = json.dumps(doc).encode()
    assert _wire_ok(raw) == _pydantic_ok(raw), doc


def test_same_fields():
    assert set(wire.WireWrite.__struct_fields__) == set(WriteEvent.model_fields)


def test_same_values():
    doc = {"id": str(uuid.uuid4()), "region": "eu", "table": "users", "op": "upsert", "key": {"id": 1},
           "data": {"a": [1, "x"]}, "policy": "failover", "fallback_regions": ["us"],
           "expires_at": "2026-11-26T10:00:00Z", "meta": {"m": 1}}
    a, b = WriteEvent.model_validate(doc), wire.decode(json.dumps(doc).encode())
    for f in ("id", "region", "table", "op", "key", "data", "policy", "fallback_regions", "expires_at", "meta"):
        assert getattr(a, f) == getattr(b, f), f


def test_same_group_values():
    doc = {"id": str(uuid.uuid4()), "region": "eu", "ordering_key": "customer/42",
           "ops": [{"table": "orders", "op": "insert", "key": {"id": 7}, "data": {"amount": 30}},
                   {"table": "order_items", "op": "delete", "key": {"order_id": 7, "line": 1}}]}
    a, b = WriteEvent.model_validate(doc), wire.decode(json.dumps(doc).encode())
    assert a.kafka_key() == b.kafka_key() == b"customer/42"
    assert [(o.table, o.op, o.key, o.data) for o in a.ops] == [(o.table, o.op, o.key, o.data) for o in b.ops]
    assert b.ops[0].row() == {"id": 7, "amount": 30}
