"""core/lag.py: the oldest write per partition, where its timestamp comes from (pure)."""

from __future__ import annotations

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE

from regionguard.core.held import H_SOURCE_TIMESTAMP
from regionguard.core.lag import oldest_per_partition, source_timestamp_ms
from regionguard.core.writes import Record


class _Msg:
    def __init__(self, ms: int, headers=(), kind: int = TIMESTAMP_CREATE_TIME) -> None:
        self.ms, self.kind, self._headers = ms, kind, list(headers)

    def timestamp(self):
        return self.kind, self.ms

    def headers(self):
        return self._headers


def _rec(partition: int, offset: int, msg: _Msg | None) -> Record:
    return Record("t", partition, offset, b"k", b"{}", None, msg)


def test_the_first_record_of_each_partition_is_its_oldest():
    recs = [_rec(0, 5, _Msg(1000)), _rec(1, 9, _Msg(3000)), _rec(0, 6, _Msg(500)), _rec(1, 10, _Msg(4000))]
    assert oldest_per_partition(recs) == {0: 1000, 1: 3000}


def test_a_held_copy_counts_from_the_producers_record_when_it_carries_it():
    copy = _rec(0, 1, _Msg(9000, headers=[(H_SOURCE_TIMESTAMP, b"1234")]))
    assert source_timestamp_ms(copy, held=True) == 1234
    assert source_timestamp_ms(copy) == 9000  # a writes-topic record: its own timestamp
    older_router = _rec(0, 2, _Msg(9500))
    assert source_timestamp_ms(older_router, held=True) == 9500
    garbage = _rec(0, 3, _Msg(9600, headers=[(H_SOURCE_TIMESTAMP, b"soon")]))
    assert source_timestamp_ms(garbage, held=True) == 9600
    # held copies of one partition may carry older sources later in the batch: all are looked at
    assert oldest_per_partition([older_router, copy], held=True) == {0: 1234}


def test_unknown_timestamps_are_left_out():
    assert source_timestamp_ms(_rec(0, 1, None)) is None
    assert source_timestamp_ms(_rec(0, 1, _Msg(-1, kind=TIMESTAMP_NOT_AVAILABLE))) is None
    assert oldest_per_partition([_rec(0, 1, None)]) == {}
