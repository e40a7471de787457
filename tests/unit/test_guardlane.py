"""A lane's crash guard against an in-memory consumer: which markers it commits, when, and what it poisons.

The real consumer runs in tests/integration/test_crash_loop_guard.py; here a
small stand-in records the commits, so the order of commits and batches can
be checked step by step.
"""

from __future__ import annotations

import asyncio

import pytest
from confluent_kafka import TopicPartition

from regionguard.core import crashguard
from regionguard.core.crashguard import Kind, Marker
from regionguard.core.errors import BadWrite
from regionguard.core.guardlane import LaneGuard
from regionguard.core.models import DeadReason
from regionguard.core.writes import Record

TOPIC = "rg.writes.eu"


class Commits:
    """A group's committed offsets with their metadata, and every commit sent."""

    def __init__(self, offset: int = 10, metadata: str | None = None) -> None:
        self.offset, self.metadata = offset, metadata
        self.sent: list[tuple[int, int, str | None]] = []

    def committed(self, parts, timeout: float):
        return [TopicPartition(TOPIC, tp.partition, self.offset, metadata=self.metadata or "") for tp in parts]

    def commit(self, offsets, asynchronous: bool):
        for tp in offsets:
            self.sent.append((tp.partition, tp.offset, tp.metadata or None))
            self.offset, self.metadata = tp.offset, tp.metadata or None


def recs(*offsets: int) -> list[Record]:
    return [Record(TOPIC, 0, o, b"k", b"v", None) for o in offsets]


def guard(consumer: Commits) -> LaneGuard:
    return LaneGuard(consumer, topic=TOPIC, batch_max=5, service="router", name="test lane")


async def restart(consumer: Commits, batch: list[Record]) -> tuple[LaneGuard, bool]:
    g = guard(consumer)
    g.assigned([0])
    return g, await g.admit(batch)


async def test_each_start_counts_once_and_progress_clears_it():
    c = Commits()
    g, ok = await restart(c, recs(10, 11, 12))
    assert ok and c.sent == [(0, 10, Marker(Kind.start, 1).encode())]
    assert await g.admit(recs(13, 14))  # same assignment: no second marker
    assert len(c.sent) == 1
    assert g.metadata(0, 15) is None  # the lane's commits carry nothing: progress clears the count


async def test_two_deaths_read_the_lane_one_record_at_a_time_marking_each_in_flight():
    c = Commits(metadata=Marker(Kind.start, 2).encode())
    g, ok = await restart(c, recs(10, 11, 12))
    assert not ok and c.sent == []  # read again, one record at a time
    assert g.one_at_a_time
    assert await g.admit(recs(10))
    assert c.sent == [(0, 10, crashguard.inflight(2, 30).encode())]
    assert g.metadata(0, 11) == Marker(Kind.serial, 2, 30).encode()
    g.committing({0: 30})
    assert not g.one_at_a_time and g.metadata(0, 30) is None  # past the extent: batches again


async def test_a_record_is_marked_in_flight_only_once_the_lane_has_no_batch_in_hand():
    c = Commits(metadata=Marker(Kind.start, 2).encode())
    g = guard(c)
    g.assigned([0, 1])
    g.checked.add(1)
    g.batch_queued()  # a batch of partition 1, read before partition 0 came in, is still being applied
    task = asyncio.ensure_future(g.admit(recs(10)))
    # the commit runs in a thread: give a wrong admit time to send it (a negative check needs a bound)
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert g.one_at_a_time
    assert not done and c.sent == [], "a death in the other batch would have blamed offset 10"
    g.batch_done()
    assert await task
    assert c.sent == [(0, 10, crashguard.inflight(2, 30).encode())]


async def test_a_record_in_flight_alone_at_a_death_is_poison_and_nothing_else_is():
    c = Commits(offset=12, metadata=crashguard.inflight(2, 30).encode())
    g, ok = await restart(c, recs(12))
    assert ok and c.sent == []  # its marker stays until the dead letter is delivered and committed
    bad = g.verdict(recs(12)[0])
    assert isinstance(bad, BadWrite) and bad.reason is DeadReason.poison
    assert "offset 12" in bad.detail and "3 times" in bad.detail
    again = g.verdict(recs(12)[0])  # read again (deferred, abandoned): still poison
    assert isinstance(again, BadWrite) and again.reason is DeadReason.poison
    assert g.verdict(recs(13)[0]) is None
    assert g.metadata(0, 13) == Marker(Kind.serial, 3, 30).encode()


@pytest.mark.parametrize("metadata, handed", [
    (None, None),                                       # start marker: handed over clean
    (Marker(Kind.start, 2).encode(), None),             # serial, nothing marked yet: nothing to send
])
async def test_a_clean_revoke_hands_over_without_a_death(metadata, handed):
    c = Commits(metadata=metadata)
    g, _ = await restart(c, recs(10, 11))
    out = g.handover([0], {})
    if metadata is None:
        assert [(tp.offset, tp.metadata) for tp in out] == [(10, None)]
    else:
        assert out == []


async def test_a_clean_revoke_in_serial_reading_keeps_serial_but_drops_in_flight():
    c = Commits(metadata=Marker(Kind.start, 2).encode())
    g, _ = await restart(c, recs(10, 11))
    assert await g.admit(recs(10))
    [tp] = g.handover([0], {})
    assert (tp.offset, crashguard.parse(tp.metadata)) == (10, Marker(Kind.serial, 2, 30))


async def test_a_lane_dying_of_an_exception_leaves_its_markers_for_the_next_start():
    c = Commits()
    g, _ = await restart(c, recs(10, 11))
    g.crashed()
    assert g.handover([0], {}) == []  # the start marker stays: this was a death
    assert [(tp.offset, tp.metadata) for tp in g.handover([0], {0: 12})] == []
