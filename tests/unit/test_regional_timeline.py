"""The regional run's timeline picture (tests/chaos/regional_timeline.py): which writes it plots."""

from __future__ import annotations

from types import SimpleNamespace as NS

from tests.chaos.regional_timeline import points


def test_only_acknowledged_writes_applied_at_home_are_plotted_with_their_latency():
    model = [NS(id="a", region="r0", acked=True, sent=100.0),
             NS(id="b", region="r0", acked=False, sent=100.5),   # never acknowledged
             NS(id="c", region="r1", acked=True, sent=101.0),    # not applied (yet)
             NS(id="d", region="r1", acked=True, sent=102.0)]
    snaps = {"r0": NS(applied_times={"a": 100.25, "b": 101.0}), "r1": NS(applied_times={"d": 109.0})}
    assert points(model, snaps) == {"r0": ([100.0], [0.25]), "r1": ([102.0], [7.0])}
