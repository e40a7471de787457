"""The pure pieces of router/handled.py: what a held record names, and which records are skipped."""

from __future__ import annotations

from regionguard.core.held import H_FENCE, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC
from regionguard.core.writes import Record
from regionguard.router.fences import is_fence
from regionguard.router.handled import Handled, mark_headers, source_offset

WRITES = "rg.writes.eu"


class _Msg:
    def __init__(self, headers, value=None) -> None:
        self._headers, self._value = headers, value

    def headers(self):
        return self._headers

    def value(self):
        return self._value


def test_a_mark_is_a_fence_that_names_its_source_offset():
    headers = mark_headers("r1", WRITES, 2, 41)
    assert is_fence(_Msg(headers))  # the replayer, the drain check and status step over it
    assert dict(headers)[H_FENCE] == b"r1"
    assert source_offset(headers, WRITES, 2) == 41


def test_a_held_copy_names_its_source_offset_only_for_its_own_topic_and_partition():
    headers = [(H_SOURCE_TOPIC, WRITES.encode()), (H_SOURCE_PARTITION, b"1"), (H_SOURCE_OFFSET, b"7")]
    assert source_offset(headers, WRITES, 1) == 7
    assert source_offset(headers, WRITES, 0) is None
    assert source_offset(headers, "rg.writes.us", 1) is None


def test_a_plain_fence_or_a_bad_header_names_nothing():
    assert source_offset([(H_FENCE, b"r1")], WRITES, 0) is None
    assert source_offset(None, WRITES, 0) is None
    bad = [(H_SOURCE_TOPIC, WRITES.encode()), (H_SOURCE_PARTITION, b"0"), (H_SOURCE_OFFSET, b"x")]
    assert source_offset(bad, WRITES, 0) is None


def test_records_up_to_the_last_named_offset_are_covered_until_the_partition_moves():
    handled = Handled()
    handled.assigned(0, 4)
    handled.assigned(1, None)
    assert handled.covers(Record(WRITES, 0, 4, b"k", b"v"))
    assert not handled.covers(Record(WRITES, 0, 5, b"k", b"v"))
    assert not handled.covers(Record(WRITES, 1, 0, b"k", b"v"))
    handled.revoked(0)
    assert not handled.covers(Record(WRITES, 0, 0, b"k", b"v"))
