"""The one ordering rule of compacted-topic followers (core/latest.py), and the follower applying it.

Pure: records are built here and handed over; no broker, no thread, no sleep.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from pydantic import BaseModel

from regionguard.core.config import parse_config
from regionguard.core.follower import CompactedFollower
from regionguard.core.latest import Verdict, at_seconds, order, verdict
from regionguard.core.models import FeatureFlags, RegionState, State
from regionguard.core.stateview import RegionStateView

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
STALE = 12.0


def rs(seq: int, epoch: int = 0, *, state: str = "closed", at_s: float = 0.0, observer: str = "") -> RegionState:
    return RegionState(region="eu", state=State(state), since=T0, seq=seq, epoch=epoch, observer=observer,
                       at=T0 + timedelta(seconds=at_s))


def ff(seq: int, *, at_s: float = 0.0, disabled: tuple[str, ...] = ()) -> FeatureFlags:
    return FeatureFlags(region="eu", disabled=list(disabled), seq=seq, since=T0, at=T0 + timedelta(seconds=at_s))


# ---- the rule -------------------------------------------------------------------------------
def test_the_first_record_of_a_key_is_a_change():
    assert verdict(None, rs(1), STALE) is Verdict.NEWER


def test_a_higher_seq_wins_a_lower_one_is_ignored():
    assert verdict(rs(5), rs(6), STALE) is Verdict.NEWER
    assert verdict(rs(6), rs(5), STALE) is Verdict.OLDER


def test_epoch_is_compared_before_seq():
    new_leader, deposed = rs(1001, epoch=2, at_s=1), rs(6000, epoch=1, at_s=2)  # the deposed one: later seq
    assert verdict(deposed, new_leader, STALE) is Verdict.NEWER
    assert verdict(new_leader, deposed, STALE) is Verdict.OLDER
    assert order(new_leader) == (2, 1001) and order(ff(7)) == (0, 7)  # no epoch in the model: epoch 0


def test_the_same_order_is_a_heartbeat_kept_but_no_change():
    v = verdict(rs(5, at_s=0), rs(5, at_s=1), STALE)
    assert v is Verdict.HEARTBEAT and v.keep and not v.changed


def test_a_lower_order_wins_only_after_the_held_record_went_stale():
    # stale by the follower's own clock (held_age_s: since the held record or its heartbeat was received);
    # the records' `at` play no part (issue 25: they come from different hosts' clocks)
    held = rs(5000, epoch=3, at_s=100)
    assert verdict(held, rs(10, epoch=1, at_s=100), STALE, held_age_s=STALE) is Verdict.OLDER  # at the limit: not yet
    restart = verdict(held, rs(10, epoch=1, at_s=50), STALE, held_age_s=STALE + 0.001)
    assert restart is Verdict.RESTART and restart.keep and restart.changed
    assert verdict(held, rs(10, epoch=1, at_s=500), STALE) is Verdict.OLDER  # age unknown: never a restart
    # FeatureFlags (no epoch): a manager whose seq went back
    assert verdict(ff(900, at_s=0), ff(5, at_s=0), STALE, held_age_s=STALE + 1) is Verdict.RESTART
    assert verdict(ff(900, at_s=0), ff(5, at_s=STALE + 1), STALE, held_age_s=STALE - 1) is Verdict.OLDER


def test_a_deposed_leader_with_a_fast_clock_never_wins_over_the_live_leader():
    """Issue 25, finding 9a: the deposed leader's `at` is an hour ahead (its host's clock), the live
    leader's record was received a second ago: the deposed record is older, whatever its stamp."""
    live = rs(1001, epoch=2, at_s=0, observer="live")
    deposed = rs(9000, epoch=1, at_s=3600, observer="deposed-fast-clock")
    assert verdict(live, deposed, STALE, held_age_s=1.0) is Verdict.OLDER
    assert verdict(live, deposed, STALE, held_age_s=0.0) is Verdict.OLDER


def test_a_record_without_at_restarts_by_the_followers_clock_too():
    class Plain(BaseModel):
        region: str
        seq: int

    assert at_seconds(Plain(region="eu", seq=1)) is None
    assert verdict(Plain(region="eu", seq=9), Plain(region="eu", seq=1), 0.0) is Verdict.OLDER
    assert verdict(Plain(region="eu", seq=9), Plain(region="eu", seq=1), 1.0, held_age_s=2.0) is Verdict.RESTART


def test_a_naive_at_is_utc():
    assert at_seconds(rs(1).model_copy(update={"at": datetime(2026, 1, 1)})) == T0.timestamp()


@pytest.mark.parametrize("arrival", list(itertools.permutations(range(4))))
def test_within_the_stale_window_the_highest_order_wins_whatever_the_arrival_order(arrival):
    records = [rs(5, 1, at_s=1), rs(9, 1, at_s=2), rs(2, 2, at_s=3), rs(3, 2, at_s=4)]
    held = None
    for i in arrival:
        if verdict(held, records[i], STALE).keep:
            held = records[i]
    assert held is records[3]


# ---- the follower applies it (records handed to its handler; no consumer is made) ----------------
@pytest.fixture
def cfg():
    return parse_config({"regions": {"eu": {"dsn": "postgresql://app@127.0.0.1:1/eu"}},
                         "tables": {"users": {"key": ["id"]}}, "kafka": {"bootstrap": "127.0.0.1:1"},
                         "health": {"stale_after_s": STALE}})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_region_state_view_keeps_the_rules_order_and_calls_back_on_changes_only(cfg):
    changes = []
    clock = FakeClock()
    view = RegionStateView(cfg, on_change=lambda old, new: changes.append((old and old.order(), new.order())),
                           clock=clock)
    for step, r in ((0, rs(1000, 1, at_s=0, observer="old")), (1, rs(1001, 2, state="open", at_s=1, observer="new")),
                    (1, rs(5000, 1, at_s=2, observer="old")),  # deposed: ignored
                    (1, rs(1001, 2, state="open", at_s=3, observer="new")),  # heartbeat: kept, no change
                    # nothing from "new" for longer than STALE by the view's clock: the held record went stale
                    (STALE + 1, rs(10, 1, state="half_open", at_s=4, observer="restarted"))):
        clock.now += step
        view._handle(r.model_dump_json().encode())
    assert changes == [(None, (1, 1000)), ((1, 1000), (2, 1001)), ((2, 1001), (1, 10))]
    assert view.state("eu").observer == "restarted" and not view.is_closed("eu")
    assert view.records == 5


def test_a_live_leaders_heartbeats_keep_a_deposed_leader_with_a_fast_clock_out_of_the_view(cfg):
    """Issue 25, finding 9a, through the view: the live leader (epoch 2) heartbeats every second; the
    deposed one (epoch 1) keeps publishing with its clock a minute ahead. The view keeps the live one."""
    clock = FakeClock()
    view = RegionStateView(cfg, clock=clock)
    for i in range(30):
        clock.now += 1.0
        view._handle(rs(1001, 2, at_s=i, observer="live").model_dump_json().encode())
        view._handle(rs(9000 + i, 1, state="open", at_s=60 + i, observer="deposed").model_dump_json().encode())
    assert view.state("eu").observer == "live" and view.is_closed("eu")
    # the live leader goes silent: once its record is stale by the view's clock, a lower order wins
    clock.now += STALE + 0.5
    view._handle(rs(9100, 1, state="open", at_s=100, observer="deposed").model_dump_json().encode())
    assert view.state("eu").observer == "deposed"


def test_history_read_again_never_restarts_even_when_the_held_record_is_old(cfg):
    clock = FakeClock()
    changes = []
    view = RegionStateView(cfg, clock=clock, on_change=lambda old, new: changes.append(new.observer))
    view._handle(rs(1001, 2, at_s=0, observer="new").model_dump_json().encode())
    clock.now += STALE * 3  # the leader went silent (a broker outage), then the topic is read again
    view._handle(rs(1000, 1, at_s=0, observer="old").model_dump_json().encode(), history=True)
    view._handle(rs(1001, 2, at_s=0, observer="new").model_dump_json().encode(), history=True)
    assert view.state("eu").observer == "new" and changes == ["new"]  # never went back to "old", even briefly
    # a replayed copy did not refresh it: the first live record of a restarted publisher wins at once
    view._handle(rs(5, 1, at_s=0, observer="restarted").model_dump_json().encode())
    assert view.state("eu").observer == "restarted"


def test_the_newest_heartbeat_is_kept_and_invalid_records_and_failing_callbacks_are_skipped(cfg):
    seen = []

    def boom(_old, new):
        seen.append(new.seq)
        raise ValueError("callback bug (injected)")

    f = CompactedFollower(cfg, "rg.features", FeatureFlags, on_change=boom, name="unit")
    f._handle(ff(5, at_s=0, disabled=("x",)).model_dump_json().encode())
    f._handle(b"not json")
    f._handle(None)  # a tombstone
    f._handle(ff(5, at_s=1, disabled=("x",)).model_copy(update={"heartbeat": True}).model_dump_json().encode())
    assert seen == [5] and f.get("eu").heartbeat and f.records == 2
    assert f.last_heartbeat_age() is not None
