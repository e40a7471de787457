"""Read-your-writes tokens: their string form and its one-line errors (pure)."""

from __future__ import annotations

import uuid

import pytest

from regionguard.client.consistency import BadToken, Visibility, WriteToken
from regionguard.core.config import parse_config
from regionguard.core.models import WriteEvent

CFG = parse_config({"regions": {"eu": {"dsn": "postgresql://x@h/eu"}, "us-east-1": {"dsn": "postgresql://x@h/us"}},
                    "tables": {"users": {"key": ["id"]}}})


def test_a_token_round_trips_through_its_string_form():
    ev = WriteEvent(id=uuid.uuid4(), region="eu", table="users", op="upsert", key={"id": 1}, data={"a": 1},
                    policy="failover", fallback_regions=["us-east-1"])
    tok = WriteToken.of(ev)
    assert str(tok) == f"eu:{ev.id}:us-east-1" and tok.event is ev
    assert WriteToken.parse(str(tok), CFG) == tok
    plain = WriteToken.of(WriteEvent(id=ev.id, region="eu", table="users", op="delete", key={"id": 1},
                                     fallback_regions=["us-east-1"]))  # not failover: fallbacks play no part
    assert str(plain) == f"eu:{ev.id}" and WriteToken.parse(str(plain)) == plain


@pytest.mark.parametrize("text, message", [
    ("", "malformed token"), ("eu", "malformed token"), ("eu:1:2:3", "malformed token"),
    ("eu:not-a-uuid", "is not a write id"), (f"mars:{uuid.uuid4()}", "unknown region 'mars'"),
    (f"eu:{uuid.uuid4()}:mars", "unknown region 'mars'"),
])
def test_a_bad_token_is_a_one_line_error(text, message):
    with pytest.raises(BadToken, match=message) as ei:
        WriteToken.parse(text, CFG)
    assert "\n" not in str(ei.value)


def test_visibility_reads_well():
    assert str(Visibility("applied_elsewhere", region="us")) == "applied_elsewhere(us)"
    assert str(Visibility("dead_lettered", reason="constraint")) == "dead_lettered(constraint)"
    assert Visibility("applied", region="eu").visible and not Visibility("held").visible
