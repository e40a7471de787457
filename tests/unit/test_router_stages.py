"""The router's pure stages (sort, merge) and the shared batch helpers: no I/O, no sleeps."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from regionguard.core.batch import next_offsets
from regionguard.core.errors import BadWrite
from regionguard.core.models import DeadReason, WriteEvent
from regionguard.core.writes import Record
from regionguard.router.fences import ReplayerWatch
from regionguard.router.uncertain import Uncertain
from regionguard.router.modes import Mode, PartitionModes
from regionguard.router.sort import merge_in_order, sort_batch


def _write(key: str = "1") -> WriteEvent:
    return WriteEvent(id=uuid.uuid4(), region="eu", table="accounts", op="upsert", key={"id": key},
                      data={"id": key})


def _rec(p: int, off: int) -> Record:
    return Record(topic="rg.writes.eu", partition=p, offset=off, key=b"k", value=b"{}")


def _modes(**parts: str) -> PartitionModes:
    """PartitionModes with partitions p0.. in the given modes (``new`` means assigned, not looked up)."""
    m = PartitionModes()
    m.assigned([int(p[1:]) for p in parts])
    for name, mode in parts.items():
        p = int(name[1:])
        if mode == "direct":
            m.looked_up(p, 0)
        elif mode == "held":
            m.looked_up(p, 5)
        elif mode == "draining":
            m.looked_up(p, 5)
            m.region_changed(closed=True)  # held -> draining, fence pending
    return m


def test_closed_region_sends_direct_partitions_direct_and_bad_input_to_dead():
    m = _modes(p0="direct", p1="direct")
    bad = BadWrite(DeadReason.schema, "no key")
    batch = [_rec(0, 1), _rec(1, 1), _rec(0, 2)]
    out = sort_batch(batch, [_write(), bad, _write()], m, region_closed=True)
    assert [r.offset for r, _ in out.direct] == [1, 2] and {r.partition for r, _ in out.direct} == {0}
    assert [(r.partition, e) for r, e, _ in out.dead] == [(1, bad)]
    assert out.held == [] and out.deferred == set()


def test_open_region_holds_and_switches_the_partition_to_held():
    m = _modes(p0="direct")
    out = sort_batch([_rec(0, 1), _rec(0, 2)], [_write(), _write()], m, region_closed=False)
    assert [r.offset for r, _ in out.held] == [1, 2] and out.direct == []
    assert m.mode(0) is Mode.held  # the records after these in p0 must follow them to the held topic


def test_held_partition_stays_held_even_when_the_region_is_closed():
    m = _modes(p0="held")
    out = sort_batch([_rec(0, 1)], [_write()], m, region_closed=True)
    assert len(out.held) == 1 and out.direct == []


def test_new_and_draining_partitions_are_read_again_never_held():
    m = _modes(p0="new", p1="draining", p2="direct")
    assert m.mode(1) is Mode.draining
    batch = [_rec(0, 1), _rec(1, 1), _rec(2, 1)]
    out = sort_batch(batch, [_write(), _write(), _write()], m, region_closed=True)
    assert out.deferred == {0, 1}
    assert [r.partition for r, _ in out.direct] == [2] and out.held == []
    assert m.mode(0) is Mode.new and m.mode(1) is Mode.draining  # untouched: no backlog started


def test_revoked_partition_records_are_dropped_for_the_new_owner():
    m = _modes(p0="direct")
    out = sort_batch([_rec(7, 1)], [_write()], m, region_closed=True)
    assert out.direct == out.held == out.dead == [] and out.deferred == set()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=40))
def test_merge_keeps_each_partitions_offset_order(items):
    recs = [(_rec(p, i), _write()) for i, (p, _) in enumerate(items)]
    moved = [rw for rw, (_, m) in zip(recs, items) if m]
    held = [rw for rw, (_, m) in zip(recs, items) if not m]
    merged = merge_in_order(moved, held)
    assert sorted(id(r) for r, _ in merged) == sorted(id(r) for r, _ in recs)
    for p in range(4):
        offs = [r.offset for r, _ in merged if r.partition == p]
        assert offs == sorted(offs)


def test_next_offsets_is_last_plus_one_per_kept_partition():
    batch = [_rec(0, 5), _rec(1, 9), _rec(0, 7), _rec(2, 1)]
    assert next_offsets(batch) == {0: 8, 1: 10, 2: 2}
    assert next_offsets(batch, keep=lambda p: p != 1) == {0: 8, 2: 2}


def test_uncertain_covers_what_an_earlier_owner_or_an_unanswered_commit_may_have_applied():
    u = Uncertain()
    assert u.covers(_rec(0, 10**9))  # never looked up: assume applied
    u.assigned(0, 10)
    assert u.covers(_rec(0, 9)) and not u.covers(_rec(0, 10))
    u.mark([(_rec(0, 14), _write())])
    assert u.covers(_rec(0, 14)) and not u.covers(_rec(0, 15))
    u.mark([(_rec(0, 3), _write())])  # never lowered
    assert u.covers(_rec(0, 14))
    u.revoked(0)
    assert u.covers(_rec(0, 10**9))


# -- ReplayerWatch: read a held range for fences only when the replayer is not moving ----------------

class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_commit_that_stands_still_for_active_s_allows_the_fence_read():
    clock = _Clock()
    watch = ReplayerWatch(active_s=1.0, clock=clock)
    assert watch.busy(3, 500)              # first look: give the replayer time to show progress
    assert watch.busy(4, None)             # no commit at all yet: the same
    clock.t += 0.99
    assert watch.busy(3, 500)
    clock.t += 0.02
    assert not watch.busy(3, 500)          # stood still for a second (a stopped replayer): read the range
    assert not watch.busy(4, None)


def test_a_moving_commit_waits_for_the_replayer_until_it_stops_for_active_s():
    clock = _Clock()
    watch = ReplayerWatch(active_s=1.0, clock=clock)
    watch.busy(3, 500)
    clock.t += 0.9
    assert watch.busy(3, 4500)             # moved: the replayer is on it
    clock.t += 0.9
    assert watch.busy(3, 4500)             # still within a second of the move
    clock.t += 0.2
    assert not watch.busy(3, 4500)         # stuck for more than a second: read the range
    assert watch.busy(5, 10)               # other partitions have their own history


def test_forget_makes_the_next_look_a_first_look():
    clock = _Clock()
    watch = ReplayerWatch(active_s=1.0, clock=clock)
    watch.busy(3, 1)
    clock.t += 5
    assert not watch.busy(3, 1)
    watch.forget(3)
    assert watch.busy(3, 1)
