"""The rule for the unknown, pure parts (issue 25): what is retried, what is a row's dead letter.

Only errors that say the region is unreachable or overloaded are retried; every
other error belongs to the rows in hand. Decoding never raises.
"""

from __future__ import annotations

import asyncpg
import msgspec
import pytest

from regionguard.core import wire
from regionguard.core.config import parse_config
from regionguard.core.errors import (
    BadWrite, PoisonWrite, RegionUnavailable, TransientDBError, classify_db_error,
)
from regionguard.core.models import DeadReason
from regionguard.core.writes import decode_write

CFG = parse_config({
    "regions": {"eu": {"dsn": "postgresql://x@h/db"}},
    "tables": {"users": {"key": ["id"], "version": "version"}},
})
HEAD = b'{"id":"7f0c3f1e-5a0e-4c83-9d1a-0b8f3f1c2d4e","region":"eu","table":"users","op":"upsert",' \
       b'"key":{"id":1},"data":{"name":"x","version":1},"meta":{"deep":'


def _pg_error(sqlstate: str) -> asyncpg.PostgresError:
    exc = asyncpg.PostgresError("boom")
    exc.sqlstate = sqlstate
    return exc


@pytest.mark.parametrize("levels", [1_000, 100_000])
def test_a_record_nested_past_the_stack_is_a_schema_dead_letter(levels):
    raw = HEAD + b"[" * levels + b"]" * levels + b"}}"
    out = decode_write(raw, region="eu", cfg=CFG)  # raised RecursionError before
    assert isinstance(out, BadWrite) and out.reason is DeadReason.schema
    assert "nested too deeply" in out.detail


def test_a_record_that_is_deep_and_not_json_is_still_a_dead_letter():
    raw = b"[" * 5_000 + b"oops"
    out = decode_write(raw, region="eu", cfg=CFG)
    assert isinstance(out, BadWrite) and out.reason in (DeadReason.schema, DeadReason.invalid_json)


def test_an_error_the_decoder_never_raised_before_is_a_poison_dead_letter(monkeypatch):
    def broken(raw):
        raise KeyError("something nobody foresaw")

    monkeypatch.setattr(wire, "decode", broken)
    out = decode_write(HEAD + b"1}}", region="eu", cfg=CFG)
    assert isinstance(out, BadWrite) and out.reason is DeadReason.poison
    assert "KeyError" in out.detail


def test_a_valid_record_still_decodes():
    out = decode_write(HEAD + b"[[1]]}}", region="eu", cfg=CFG)
    assert isinstance(out, wire.WireWrite)


@pytest.mark.parametrize("state", ["21000", "54000", "XX000", "0A000", "P0001", "RG001", "2F005", "44000", "39P01"])
def test_states_outside_the_known_classes_belong_to_the_rows(state):
    err = classify_db_error("eu", _pg_error(state))
    assert isinstance(err, PoisonWrite) and not err.retriable  # was TransientDBError: retried for ever
    assert f"SQLSTATE {state}" in err.detail


@pytest.mark.parametrize("state", ["40001", "40P01", "55P03", "57014", "53100", "53200", "53300", "58030"])
def test_overload_and_conflicts_are_retried(state):
    err = classify_db_error("eu", _pg_error(state))
    assert isinstance(err, TransientDBError) and err.retriable


@pytest.mark.parametrize("state", ["08006", "08P01", "57P01", "57P05", "28P01", "25006"])
def test_unreachable_is_retried_and_takes_the_region_out(state):
    err = classify_db_error("eu", _pg_error(state))
    assert isinstance(err, RegionUnavailable) and err.retriable


@pytest.mark.parametrize("state, reason", [("23505", DeadReason.constraint), ("22P02", DeadReason.schema),
                                           ("42703", DeadReason.unknown_column)])
def test_named_row_errors_keep_their_reason_and_state(state, reason):
    err = classify_db_error("eu", _pg_error(state))
    assert isinstance(err, BadWrite) and err.reason is reason and state in err.detail


@pytest.mark.parametrize("exc", [TypeError("Recursion limit reached"), RecursionError(), OverflowError("big"),
                                 ValueError("x"), UnicodeEncodeError("utf-8", "\udc80", 0, 1, "surrogates")])
def test_a_value_the_encoder_refuses_is_a_schema_dead_letter(exc):
    err = classify_db_error("eu", exc)
    assert isinstance(err, BadWrite) and err.reason is DeadReason.schema and not err.retriable


def test_an_error_nobody_named_is_never_retried():
    err = classify_db_error("eu", LookupError("who knows"))
    assert isinstance(err, PoisonWrite) and not err.retriable  # was TransientDBError


def test_client_side_data_error_is_the_rows_not_a_lost_connection():
    err = classify_db_error("eu", asyncpg.exceptions._base.DataError("invalid input for query argument $1"))
    assert isinstance(err, BadWrite) and err.reason is DeadReason.schema  # was RegionUnavailable


def test_msgspec_errors_are_unchanged():
    out = decode_write(b'{"id": 1}', region="eu", cfg=CFG)
    assert isinstance(out, BadWrite) and out.reason is DeadReason.schema
    with pytest.raises(msgspec.ValidationError):
        wire.decode(b'{"id": 1}')


@pytest.mark.parametrize("exc", [asyncpg.exceptions.ProtocolError("unexpected message"),
                                 asyncpg.exceptions.OutdatedSchemaCacheError("cached plan", schema="s",
                                                                             data_type="t", position=0)])
def test_the_drivers_own_state_is_retried_not_dead_lettered(exc):
    """A protocol error on a broken connection is not a row's fault: dead-lettering the batch for it
    would empty a healthy stream into rg.dead-letter during a network fault."""
    err = classify_db_error("eu", exc)
    assert isinstance(err, TransientDBError) and err.retriable
