"""The event format's version: absent or 1 is read, a newer one is a schema dead letter (issue 28). Pure."""

from __future__ import annotations

import json
import uuid

import pytest

from regionguard.core.config import parse_config
from regionguard.core.errors import BadWrite
from regionguard.core.models import SCHEMA_VERSION, DeadReason, WriteEvent
from regionguard.core.writes import decode_write

CFG = parse_config({"regions": {"eu": {"dsn": "postgresql://a@h/db"}}, "tables": {"users": {"key": ["id"]}}})


def _raw(**extra) -> bytes:
    return json.dumps({"id": str(uuid.uuid4()), "region": "eu", "table": "users", "op": "upsert",
                       "key": {"id": 1}, "data": {"name": "a"}, **extra}).encode()


@pytest.mark.parametrize("extra", [{}, {"schema_version": SCHEMA_VERSION}])
def test_absent_or_current_is_read(extra):
    assert not isinstance(decode_write(_raw(**extra), region="eu", cfg=CFG), BadWrite)


def test_a_newer_version_is_a_schema_dead_letter_naming_both_versions():
    bad = decode_write(_raw(schema_version=SCHEMA_VERSION + 1), region="eu", cfg=CFG)
    assert isinstance(bad, BadWrite) and bad.reason is DeadReason.schema
    assert f"schema_version {SCHEMA_VERSION + 1}" in bad.detail and f"reads ({SCHEMA_VERSION})" in bad.detail


@pytest.mark.parametrize("value", [0, -1, "1", None])
def test_a_version_that_is_no_version_is_a_schema_dead_letter(value):
    bad = decode_write(_raw(schema_version=value), region="eu", cfg=CFG)
    assert isinstance(bad, BadWrite) and bad.reason is DeadReason.schema


def test_the_python_sdk_never_sends_it():
    # a router older than the field refuses unknown fields: what this release writes must not carry it
    ev = WriteEvent(id=uuid.uuid4(), region="eu", table="users", op="upsert", key={"id": 1}, data={"name": "a"})
    assert "schema_version" not in ev.model_dump_json()
    assert WriteEvent.model_validate_json(_raw(schema_version=1)).schema_version == 1
