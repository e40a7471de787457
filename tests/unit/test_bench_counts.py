"""bench/apply_baselines.py's database count: a round whose writes were not all applied exactly once is
failed, never a rate (pure: the counts are given)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_apply_baselines", ROOT / "bench" / "apply_baselines.py")
baselines = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(baselines)


def test_every_write_applied_once_passes():
    assert baselines.shortfall({"rows": 10, "at_last": 10, "inbox": 10, "replayed": 10}, 10) is None


def test_a_missing_row_a_stale_value_or_a_short_inbox_fails_the_round():
    for wrong in ("rows", "at_last", "inbox", "replayed"):
        counts = {"rows": 10, "at_last": 10, "inbox": 10, "replayed": 10, wrong: 9}
        assert f"{wrong}=9 (want 10)" in baselines.shortfall(counts, 10)


def test_a_write_applied_twice_fails_the_round():
    assert "replayed=11" in baselines.shortfall({"rows": 10, "at_last": 10, "inbox": 10, "replayed": 11}, 10)


def test_a_baseline_without_the_inbox_claim_must_leave_the_inbox_empty():
    assert baselines.shortfall({"rows": 10, "at_last": 10, "inbox": 0}, 10, claims=False) is None
    assert "inbox=10 (want 0)" in baselines.shortfall({"rows": 10, "at_last": 10, "inbox": 10}, 10, claims=False)
    assert baselines.UNCLAIMED <= set(baselines.BASELINES)
