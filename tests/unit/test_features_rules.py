"""Feature rules, without I/O: conditions, disabled sets, seq bookkeeping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from regionguard.core.config import FeatureConfig, parse_config
from regionguard.core.models import FeatureFlags, RegionState, State
from regionguard.features.rules import (
    FlagBook,
    conditions,
    disabled_features,
    feature_enabled,
    is_stale,
    next_seq,
    reason_for,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
MS0 = int(T0.timestamp() * 1000)

FEATURES = {
    "recommendations": FeatureConfig(off_when=("open", "half_open")),
    "search": FeatureConfig(off_when=("open",)),
    "exports": FeatureConfig(off_when=("stale",)),
    "checkout": FeatureConfig(critical=True, off_when=("open", "stale")),
    "always": FeatureConfig(),
}


def rs(state: str, seq: int = 1, reason: str = "") -> RegionState:
    return RegionState(region="eu", state=State(state), since=T0, seq=seq, reason=reason)


def test_config_accepts_features_section():
    cfg = parse_config(
        {
            "regions": {"eu": {"dsn": "postgresql://x@h/db"}},
            "tables": {"users": {"key": ["id"]}},
            "features": {"recommendations": {"off_when": ["open", "stale"]}, "checkout": {"critical": True}},
        }
    )
    assert cfg.features["recommendations"].off_when == ("open", "stale")
    assert cfg.features["checkout"].critical


@pytest.mark.parametrize(
    "state,stale,expected",
    [
        ("closed", False, set()),
        ("open", False, {"recommendations", "search"}),
        ("half_open", False, {"recommendations"}),
        ("closed", True, {"exports"}),
        ("open", True, {"recommendations", "search", "exports"}),
        (None, True, {"exports"}),
        (None, False, set()),
    ],
)
def test_disabled_sets(state, stale, expected):
    assert disabled_features(FEATURES, conditions(state, stale)) == expected


def test_critical_never_disabled_even_when_every_condition_holds():
    conds = {"closed", "open", "half_open", "stale"}
    assert feature_enabled(FEATURES, "checkout", conds)
    assert "checkout" not in disabled_features(FEATURES, conds)


def test_unknown_feature_is_enabled():
    assert feature_enabled(FEATURES, "nope", {"open", "stale"})


def test_conditions_from_region_state_and_strings():
    assert conditions(rs("open"), False) == {"open"}
    assert conditions(State.half_open, True) == {"half_open", "stale"}
    with pytest.raises(ValueError):
        conditions("broken", False)
    with pytest.raises(ValueError):
        conditions("stale", False)


def test_is_stale_with_startup_grace():
    assert is_stale(0.5, 5.0) is False
    assert is_stale(6.0, 5.0) is True
    assert is_stale(None, 5.0, uptime_s=1.0) is None  # undecided right after start
    assert is_stale(None, 5.0, uptime_s=6.0) is True
    assert is_stale(None, 5.0) is True
    assert is_stale(6.0, 5.0, uptime_s=1.0) is True  # an old heartbeat read at start is stale at once


def test_reason_mentions_state_staleness_and_features():
    r = reason_for("eu", rs("open", reason="3 consecutive failures"), True, {"search", "exports"})
    assert r == "region eu open (3 consecutive failures); health heartbeats stopped; disabled: exports, search"
    assert reason_for("eu", None, False, ()) == "region eu state unknown; all features enabled"


def test_flagbook_publishes_only_changes_with_increasing_seq():
    book = FlagBook(FEATURES)
    c1 = book.propose("eu", conditions("closed", False), "ok", T0)
    assert c1 is not None and c1.flags.seq == MS0 and c1.flags.disabled == []
    book.commit(c1)
    assert book.propose("eu", conditions("closed", False), "ok", T0) is None

    c2 = book.propose("eu", conditions("open", False), "down", T0 + timedelta(seconds=1))
    assert c2.flags.seq == MS0 + 1000
    assert c2.flags.disabled == ["recommendations", "search"]
    assert c2.turned_off == ("recommendations", "search") and c2.turned_on == ()
    assert c2.flags.since == T0 + timedelta(seconds=1)
    book.commit(c2)

    # the clock went back (another host): seq still increases
    c3 = book.propose("eu", conditions("half_open", False), "probing", T0 - timedelta(seconds=2))
    assert c3.flags.seq == MS0 + 1001 and c3.turned_on == ("search",) and c3.turned_off == ()
    assert c3.conditions == ("half_open",)
    book.commit(c3)

    hb = book.heartbeat("eu", T0 + timedelta(seconds=3))
    assert hb.heartbeat and hb.seq == MS0 + 1001 and hb.since == c3.flags.since
    assert book.heartbeat("us", T0) is None


def test_uncommitted_change_is_proposed_again():
    book = FlagBook(FEATURES)
    c1 = book.propose("eu", {"open"}, "down", T0)
    # publish failed: not committed
    c1b = book.propose("eu", {"open"}, "down", T0)
    assert c1b is not None and c1b.flags.seq == c1.flags.seq


def test_restore_continues_seq_and_skips_unchanged_set():
    book = FlagBook(FEATURES)
    big = MS0 + 10**6  # restored seq ahead of our clock
    book.restore(FeatureFlags(region="eu", disabled=["recommendations", "search"], seq=big, since=T0, heartbeat=True))
    book.restore(FeatureFlags(region="eu", disabled=[], seq=7, since=T0))  # older record ignored
    assert book.propose("eu", {"open"}, "down", T0) is None
    c = book.propose("eu", {"closed"}, "up", T0)
    assert c.flags.seq == big + 1 and c.turned_on == ("recommendations", "search")


def test_next_seq_is_time_based_and_monotonic():
    assert next_seq(None, T0) == MS0
    assert next_seq(5, T0) == MS0
    assert next_seq(MS0 + 5, T0) == MS0 + 6
