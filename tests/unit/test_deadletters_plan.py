"""The pure part of ``regionguard dead-letters``: arguments, headers, and the decision per dead letter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from regionguard.core.config import UsageError, parse_config
from regionguard.core.models import DeadLetter
from regionguard.ops.deadletters.plan import (
    Action, Item, decide, group_name, held_source, parse_count, parse_reason, parse_since, redrive_id, restore,
    target_of, write_id,
)

CFG = parse_config({"kafka": {"topic_prefix": "rg.", "partitions": 3},
                    "regions": {"eu": {"dsn": "postgresql://x@h/db"}, "us": {"dsn": "postgresql://x@h/db2"}},
                    "tables": {"users": {"key": ["id"]}}, "dead_letters": {"max_redrives": 2}})
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def dl(reason="constraint", topic="rg.writes.eu", partition=1, at=NOW, **kw) -> DeadLetter:
    return DeadLetter(reason=reason, detail="d", topic=topic, partition=partition, offset=7, original='{"id": "w1"}',
                      at=at, **kw)


def test_reasons_are_the_contracts_and_required_for_redrive():
    assert parse_reason("constraint") == "constraint"
    assert parse_reason(None) is None
    with pytest.raises(UsageError, match="--reason is required"):
        parse_reason(None, required=True)
    with pytest.raises(UsageError, match=r"unknown reason 'Constraint' \(one of: invalid_json, schema"):
        parse_reason("Constraint")


@pytest.mark.parametrize("text, expected", [
    ("2026-11-26T10:00:00Z", datetime(2026, 11, 26, 10, tzinfo=timezone.utc)),
    ("2026-11-26T10:00:00+02:00", datetime(2026, 11, 26, 8, tzinfo=timezone.utc)),
    ("2026-11-26", datetime(2026, 11, 26, tzinfo=timezone.utc)),
    ("2026-11-26 10:30", datetime(2026, 11, 26, 10, 30, tzinfo=timezone.utc)),
    ("90s", NOW - timedelta(seconds=90)),
    ("15m", NOW - timedelta(minutes=15)),
    ("2h", NOW - timedelta(hours=2)),
    ("1.5d", NOW - timedelta(hours=36)),
    ("1w", NOW - timedelta(days=7)),
])
def test_since_takes_iso_times_and_ages(text, expected):
    assert parse_since(text, now=NOW) == expected
    assert parse_since(None) is None


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "15 minutes", "-2h", "", "2h ago"])
def test_malformed_since_is_one_usage_error(text):
    with pytest.raises(UsageError, match="--since"):
        parse_since(text, now=NOW)


def test_headers_and_names():
    assert group_name(CFG, "shed") == "rg.redrive.shed"
    assert redrive_id("rg.dead-letter", 0, 12) == "rg.dead-letter/0/12"
    assert parse_count(None) == 0 and parse_count(b"3") == 3
    assert parse_count(b"x") is None and parse_count(b"-1") is None and parse_count(b"\xff") is None
    assert held_source([("rg-source-topic", b"rg.writes.eu"), ("rg-source-partition", b"2"),
                        ("rg-source-offset", b"41")]) == ("rg.writes.eu", 2, 41)
    assert held_source([("rg-source-topic", b"rg.writes.eu")]) is None
    assert held_source([("rg-source-topic", b"t"), ("rg-source-partition", b"x"), ("rg-source-offset", b"1")]) is None


def test_target_is_the_writes_topic_same_partition_also_for_held_dead_letters():
    assert target_of(CFG, dl(topic="rg.writes.us", partition=2)) == ("rg.writes.us", 2)
    assert target_of(CFG, dl(topic="rg.held.eu", partition=0)) == ("rg.writes.eu", 0)
    assert target_of(CFG, dl(topic="rg.writes.mars")) is None
    assert target_of(CFG, dl(partition=3)) is None  # beyond kafka.partitions


def item(d: DeadLetter | None, count: int | None = 0, offset: int = 5) -> Item:
    return Item(0, offset, b"k", d, count=count)


def run(i: Item, *, reason="constraint", since=None, already=frozenset()) -> Item:
    return decide(i, CFG, reason=reason, since=since, already=set(already), dl_topic="rg.dead-letter")


def test_decide_redrives_below_the_limit_and_refuses_at_it():
    assert run(item(dl(), count=0)).action == Action.redrive
    r = run(item(dl(), count=1))
    assert r.action == Action.redrive and r.target == ("rg.writes.eu", 1)
    refused = run(item(dl(), count=2))
    assert refused.action == Action.refuse
    assert refused.why == "redriven 2 times already, dead_letters.max_redrives is 2"
    assert run(item(dl(), count=None)).action == Action.refuse  # unreadable count: never a loop
    assert run(item(dl(topic="rg.writes.mars"))).action == Action.refuse


def test_decide_passes_over_other_reasons_older_ones_and_those_already_republished():
    assert run(item(dl(reason="shed"))).action == Action.other
    assert run(item(dl(at=NOW - timedelta(hours=3))), since=NOW - timedelta(hours=1)).action == Action.older
    assert run(item(dl(at=NOW)), since=NOW).action == Action.redrive  # at or after --since
    naive = dl(at=datetime(2026, 11, 26, 12, 0))  # a naive time counts as UTC
    assert run(item(naive), since=NOW + timedelta(seconds=1)).action == Action.older
    assert run(item(dl(), offset=9), already={"rg.dead-letter/0/9"}).action == Action.already
    assert run(item(None)).action == Action.unreadable


def test_write_id_from_the_field_or_the_original_event():
    assert write_id(dl(write_id="abc")) == "abc"
    assert write_id(dl()) == "w1"
    assert write_id(DeadLetter(reason="invalid_json", detail="", topic="t", partition=0, offset=0,
                               original="AAEC", original_encoding="base64")) is None


def _truncated(raw: bytes, kept: int) -> Item:
    import base64

    dl = DeadLetter(reason="invalid_json", detail="d", topic="rg.writes.eu", partition=0, offset=5,
                    original=base64.b64encode(raw[:kept]).decode(), original_encoding="base64",
                    original_truncated=True, original_size=len(raw))
    item = Item(0, 1, b"k", dl)
    item.action = Action.redrive
    return item


def test_a_truncated_dead_letter_is_redriven_with_the_whole_record_read_back():
    raw = b"\xff" * 100
    item = restore(_truncated(raw, 10), raw)
    assert item.action == Action.redrive and item.value() == raw


def test_a_truncated_dead_letter_whose_source_is_gone_is_refused_in_plain_words():
    raw = b"\xff" * 100
    item = restore(_truncated(raw, 10), None)
    assert item.action == Action.refuse
    assert item.why == ("its original (100 bytes) was truncated in the dead letter and rg.writes.eu[0]@5 is no "
                        "longer retained: the write cannot be redriven")
    other = restore(_truncated(raw, 10), b"\x00" * 100)  # another record at that offset
    assert other.action == Action.refuse and "not the same write" in other.why
