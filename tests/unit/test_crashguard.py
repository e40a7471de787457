"""The crash-loop guard's rules (pure): markers in offset-commit metadata, and a start's decision."""

from __future__ import annotations

import pytest

from regionguard.core import crashguard as g
from regionguard.core.crashguard import Kind, Marker, Start, on_start


@pytest.mark.parametrize("marker", [Marker(Kind.start, 1), Marker(Kind.inflight, 2, 600), Marker(Kind.serial, 3, 7)])
def test_markers_read_back(marker):
    assert g.parse(marker.encode()) == marker


@pytest.mark.parametrize("metadata", [None, "", "hello", "rg-guard/1", "rg-guard/1 start", "rg-guard/1 bogus 1 -1",
                                      "rg-guard/1 start x -1", "rg-guard/1 start -3 -1", "rg-guard/2 start 1 -1",
                                      "rg-guard/1 start 1 -1 extra"])
def test_foreign_or_damaged_metadata_is_no_marker(metadata):
    assert g.parse(metadata) is None
    assert on_start(10, metadata, batch_max=500) == Start(commit=Marker(Kind.start, 1))


def test_first_and_second_start_only_count():
    assert on_start(10, None, batch_max=500) == Start(commit=Marker(Kind.start, 1))
    assert on_start(10, Marker(Kind.start, 1).encode(), batch_max=500) == Start(commit=Marker(Kind.start, 2))


def test_two_deaths_with_the_batch_in_flight_read_one_at_a_time_up_to_what_was_read_ahead():
    start = on_start(10, Marker(Kind.start, 2).encode(), batch_max=500)
    assert start == Start(serial_end=10 + g.BATCHES_IN_FLIGHT * 500, deaths=2)
    assert g.BATCHES_IN_FLIGHT >= 4  # one applied, two queued, one decoded: all read before the first commit
    assert start.poison is None and start.commit is None


def test_a_death_with_one_record_in_flight_poisons_it_and_reading_stays_serial():
    start = on_start(12, g.inflight(2, 510).encode(), batch_max=500)
    assert start == Start(serial_end=510, deaths=3, poison=12)


def test_a_serial_marker_without_a_record_in_flight_never_poisons():
    assert on_start(12, Marker(Kind.serial, 2, 510).encode(), batch_max=500) == Start(serial_end=510, deaths=2)


def test_a_serial_or_inflight_marker_past_its_extent_is_a_fresh_start():
    assert on_start(510, Marker(Kind.serial, 2, 510).encode(), batch_max=500) == Start(commit=Marker(Kind.start, 1))
    assert on_start(511, g.inflight(2, 510).encode(), batch_max=500) == Start(commit=Marker(Kind.start, 1))


def test_commits_in_serial_reading_carry_the_serial_marker_until_the_extent():
    assert g.after(11, deaths=2, end=510) == Marker(Kind.serial, 2, 510)
    assert g.after(510, deaths=2, end=510) is None


def test_poison_detail_names_the_offset_and_the_deaths():
    d = g.poison_detail(topic="rg.writes.eu", partition=0, offset=12, deaths=3, service="router")
    assert "offset 12" in d and "3 times" in d and "rg.writes.eu[0]" in d and "router" in d
