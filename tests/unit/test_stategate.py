"""Forged region-state records (issue 28): the view refuses a future ``at`` and an implausible epoch jump.

Pure: records are built here and handed to the view's handler; the wall clock is injected.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from regionguard.core import metrics as m
from regionguard.core.config import ConfigError, parse_config
from regionguard.core.models import RegionState, State
from regionguard.core.stategate import StateGate, refusal
from regionguard.core.stateview import RegionStateView

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
NOW = T0.timestamp() + 1000.0


def rs(seq: int, epoch: int, *, state: str = "closed", at_s: float = 1000.0, region: str = "eu") -> RegionState:
    """A record stamped ``at_s`` seconds after T0 (NOW is T0 + 1000 s)."""
    return RegionState(region=region, state=State(state), since=T0, seq=seq, epoch=epoch,
                       at=T0 + timedelta(seconds=at_s))


@pytest.fixture
def cfg():
    return parse_config({"kafka": {"bootstrap": "x:1"}, "regions": {"eu": {"dsn": "postgresql://h/eu"},
                                                                      "us": {"dsn": "postgresql://h/us"}},
                         "tables": {"users": {"key": ["id"]}},
                         "health": {"max_clock_skew_s": 30, "max_epoch_jump": 5}})


def refused(reason: str) -> float:
    return m.REGION_STATE_REFUSED.labels(reason)._value.get()


def view_of(cfg) -> tuple[RegionStateView, list]:
    changes: list = []
    view = RegionStateView(cfg, on_change=lambda _old, new: changes.append((new.epoch, new.state.value)),
                           wall=lambda: NOW)
    return view, changes


def feed(view: RegionStateView, *records: RegionState) -> None:
    for r in records:
        view._handle(r.model_dump_json().encode())


def test_the_rule():
    kw = {"max_skew_s": 30.0, "max_jump": 5}
    assert refusal(rs(1, 3, at_s=1030), 3, NOW, **kw) is None  # at the skew limit: passes
    assert refusal(rs(1, 3, at_s=1030.5), 3, NOW, **kw) == "future_at"
    assert refusal(rs(1, 8, at_s=900), 3, NOW, **kw) is None  # a jump of exactly max_jump passes
    assert refusal(rs(1, 9, at_s=900), 3, NOW, **kw) == "epoch_jump"
    assert refusal(rs(1, 10 ** 9, at_s=900), None, NOW, **kw) is None  # nothing accepted yet: no reference
    assert refusal(rs(1, 1, at_s=900), 10 ** 6, NOW, **kw) is None  # lower epochs are the ordering rule's


def test_a_forged_record_does_not_change_the_view_and_the_real_leader_is_still_followed(cfg):
    view, changes = view_of(cfg)
    before = (refused("future_at"), refused("epoch_jump"))
    feed(view, rs(1000, 2), rs(1001, 2))
    # forged: open, a huge epoch, stamped an hour ahead: refused for its `at` (checked first)
    feed(view, rs(1, 10 ** 9, state="open", at_s=1000 + 3600))
    # forged with a plausible `at`: refused for its epoch
    feed(view, rs(1, 10 ** 9, state="open"))
    assert view.state("eu").epoch == 2 and view.is_closed("eu")
    assert (refused("future_at") - before[0], refused("epoch_jump") - before[1]) == (1, 1)
    # the live leader's next record is followed, and so is a real leader change (one above)
    feed(view, rs(1002, 2, state="open"))
    feed(view, rs(1, 3, state="half_open"))
    assert changes == [(2, "closed"), (2, "closed"), (2, "open"), (3, "half_open")]
    assert view.gate.highest_epoch == 3


def test_the_reference_is_the_highest_epoch_of_any_region(cfg):
    """A new leader takes one above the highest epoch of *all* regions: a quiet region may step by more."""
    view, _ = view_of(cfg)
    feed(view, rs(1, 4, region="us"), rs(1, 9, region="eu"), rs(1, 12, region="us"))
    assert view.state("us").epoch == 12  # 12 - 4 > max_jump, but 12 - 9 is not
    feed(view, rs(2, 18, region="us"))
    assert view.state("us").epoch == 12


def test_a_restart_that_starts_over_at_epoch_one_is_not_refused(cfg):
    """A broker that lost its data: the new leader takes epoch 1; the ordering rule's stale restart decides."""
    view, _ = view_of(cfg)
    feed(view, rs(5000, 40))
    assert view.gate.admit(rs(1, 1))


def test_each_cause_is_logged_once_and_every_refusal_counted(cfg, caplog):
    gate = StateGate(max_skew_s=30, max_jump=5, wall=lambda: NOW)
    assert gate.admit(rs(1, 1))
    with caplog.at_level(logging.DEBUG, logger="regionguard.core.stategate"):
        for _ in range(3):
            assert not gate.admit(rs(1, 1, at_s=5000))
            assert not gate.admit(rs(1, 99))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(r.args[2] for r in warnings) == ["epoch_jump", "future_at"]
    assert gate.refused == {"future_at": 3, "epoch_jump": 3}
    assert gate.highest_epoch == 1  # refused records never raise the reference


def test_the_keys_are_validated(cfg):
    with pytest.raises(ConfigError) as err:
        parse_config({"kafka": {"bootstrap": "x:1"}, "regions": {"eu": {"dsn": "postgresql://h/eu"}},
                      "tables": {"users": {"key": ["id"]}}, "health": {"max_epoch_jump": 0}})
    assert "max_epoch_jump" in str(err.value)
