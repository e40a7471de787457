"""SQL building and event decoding: pure, no I/O. Hostile identifiers never become SQL."""

from __future__ import annotations

import json
import uuid

import pytest

from regionguard.core.config import parse_config
from regionguard.core.errors import BadWrite
from regionguard.core.models import DeadReason, Op, WriteEvent
from regionguard.core.sql import TableSchema, UnsafeIdentifier, build_statement, quote_ident
from regionguard.core.writes import check_columns, decode_write

CFG = parse_config({
    "regions": {"eu": {"dsn": "postgresql://x@h/db"}, "us": {"dsn": "postgresql://x@h/db"}},
    "tables": {"users": {"key": ["id"], "version": "version"}, "orders": {"key": ["id"]},
               "narrow": {"key": ["id"], "columns": ["id", "ok"]}},
})
USERS = TableSchema("users", ("id",), "version", frozenset({"id", "name", "email", "version"}),
                    {"id": "bigint", "name": "text", "email": "character varying", "version": "bigint"})


def ev(**kw) -> bytes:
    doc = {"id": str(uuid.uuid4()), "region": "eu", "table": "users", "op": "upsert",
           "key": {"id": 1}, "data": {"name": "a", "version": 1}}
    doc.update(kw)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("name", ['users"; DROP TABLE users; --', "a b", "1abc", "", "x" * 64, "ta-ble", 'q"q'])
def test_quote_ident_refuses_non_identifiers(name):
    with pytest.raises(UnsafeIdentifier):
        quote_ident(name)


def test_statements_quote_every_identifier_and_bind_values():
    for op in Op:
        sql = build_statement(USERS, op, ("id", "name", "version"))
        assert "json_array_elements_text($1::json)" in sql and '"users"' in sql and '"name"' in sql
        assert "'" not in sql  # no literal ever reaches the SQL text


def test_statement_refuses_columns_outside_the_allow_list():
    with pytest.raises(UnsafeIdentifier):
        build_statement(USERS, Op.upsert, ("id", 'name"; DELETE FROM users; --'))
    with pytest.raises(UnsafeIdentifier):
        build_statement(USERS, Op.upsert, ("id", "password"))


def test_values_become_bind_parameters_of_the_column_type():
    from regionguard.core.sql import column_arrays

    t = TableSchema("t", ("id",), None, frozenset({"id", "j", "tags", "ok", "x"}),
                    {"id": "bigint", "j": "jsonb", "tags": "text[]", "ok": "boolean", "x": "double precision"})
    rows = [{"id": 1, "j": "s", "tags": ['a"b', None], "ok": True, "x": 1.5},
            {"id": "2", "j": {"k": [1]}, "tags": None, "ok": None, "x": None}]
    assert column_arrays(t, ("id", "j", "tags", "ok", "x"), rows) == [
        ["1", "2"], ['"s"', '{"k":[1]}'], ['{"a\\"b",NULL}', None], ["true", None], ["1.5", None]]
    with pytest.raises(UnsafeIdentifier):
        build_statement(TableSchema("t", ("id",), None, frozenset({"id", "x"}), {"id": "bigint", "x": "int; DROP"}),
                        Op.upsert, ("id", "x"))


def test_versioned_upsert_is_last_writer_wins():
    sql = build_statement(USERS, Op.upsert, ("id", "name", "version"))
    assert '"users"."version" < EXCLUDED."version"' in sql
    plain = build_statement(TableSchema("orders", ("id",), None, frozenset({"id", "x"})), Op.upsert, ("id", "x"))
    assert "WHERE" not in plain


@pytest.mark.parametrize("raw, reason", [
    (b"{not json", DeadReason.invalid_json),
    (b"\xff\xfe", DeadReason.invalid_json),
    (b"[1,2]", DeadReason.schema),
    (ev(op="merge"), DeadReason.schema),
    (ev(id="not-a-uuid"), DeadReason.schema),
    (ev(data=None), DeadReason.schema),
    (ev(key={}), DeadReason.schema),
    (ev(extra_field=1), DeadReason.schema),
    (ev(region="us"), DeadReason.schema),
    (ev(table="users; DROP TABLE users"), DeadReason.unknown_table),
    (ev(table="secrets"), DeadReason.unknown_table),
    (ev(key={"uid": 1}), DeadReason.schema),
    (ev(key={"id": 1, "other": 2}), DeadReason.unknown_column),
    (ev(table="narrow", key={"id": 1}, data={'ok"; drop': 1}), DeadReason.unknown_column),
    (ev(data={"name": "no version"}), DeadReason.schema),
    (ev(fallback_regions=["mars"]), DeadReason.schema),
    (ev(expires_at="2026-01-01T00:00:00"), DeadReason.schema),  # naive timestamps are ambiguous
])
def test_bad_events_get_a_dead_letter_reason(raw, reason):
    out = decode_write(raw, region="eu", cfg=CFG)
    assert isinstance(out, BadWrite) and out.reason is reason, out
    assert out.detail and "\n" not in out.detail


def test_good_event_decodes_and_keeps_hostile_values_as_data():
    hostile = "'); DROP TABLE users; --"
    out = decode_write(ev(data={"name": hostile, "version": 3}), region="eu", cfg=CFG)
    assert not isinstance(out, BadWrite)
    assert out.data["name"] == hostile and out.op is Op.upsert


def test_columns_are_checked_against_the_region_database():
    w = decode_write(ev(data={"name": "a", "version": 1, "is_admin": True}), region="eu", cfg=CFG)
    bad = check_columns(w, USERS)
    assert bad is not None and bad.reason is DeadReason.unknown_column and "is_admin" in bad.detail


def test_an_empty_column_name_is_dead_lettered_not_planned():
    """Found by the fuzzer (tests/fuzz, strategy allow_list): ``""`` is falsy, so it passed both column
    checks, and the planner's quote_ident refused it as a retriable error: the partition stalled."""
    narrow = decode_write(ev(table="narrow", key={"id": 1}, data={"ok": 1, "": 1}), region="eu", cfg=CFG)
    assert isinstance(narrow, BadWrite) and narrow.reason is DeadReason.unknown_column
    w = decode_write(ev(data={"name": "a", "version": 1, "": 1}), region="eu", cfg=CFG)
    bad = check_columns(w, USERS)
    assert bad is not None and bad.reason is DeadReason.unknown_column and "''" in bad.detail


def test_sdk_model_and_kafka_key():
    w = WriteEvent(id=uuid.uuid4(), region="eu", table="t", op="upsert", key={"b": 2, "a": 1}, data={"x": 1})
    assert w.kafka_key() == b"t/1/2"
    with pytest.raises(ValueError):
        WriteEvent(id=uuid.uuid4(), region="eu", table="t", op="update", key={"a": 1})
