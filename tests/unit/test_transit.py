"""How late an observation arrived, judged against its own observer's stamps only (health/transit.py). Pure."""

from __future__ import annotations

from regionguard.health.transit import Transits


def test_a_steady_skew_of_any_size_is_never_late():
    t = Transits(window_s=30)
    for i in range(100):
        now = 10.0 + i * 0.5
        assert t.late_by("behind", now - 7200.0 - 0.01 * (i % 3), now) < 0.05  # two hours behind, jitter
        assert t.late_by("ahead", now + 3.0, now) == 0.0


def test_lateness_is_the_transit_above_the_observers_shortest():
    t = Transits(window_s=30)
    assert t.late_by("h2", 100.0, 1000.0) == 0.0  # the first: nothing to compare with
    assert t.late_by("h2", 100.5, 1000.5) == 0.0
    assert t.late_by("h2", 101.0, 1010.0) == 9.0  # held up 9 s on its way
    assert t.late_by("h3", 101.0, 1010.0) == 0.0  # observers are judged apart


def test_a_clock_stepped_back_is_judged_fairly_again_within_two_windows():
    t = Transits(window_s=30)
    assert t.late_by("h2", 100.0, 1000.0) == 0.0
    # h2's clock is stepped back by 20 s: its observations look 20 s late until the old minimum ages out
    assert t.late_by("h2", 81.0, 1001.0) == 20.0
    late = [t.late_by("h2", 81.0 + s, 1001.0 + s) for s in range(0, 62)]  # received 1001 .. 1062
    assert late[:29] == [20.0] * 29 and late[59:] == [0.0] * 3  # fair again two windows after the step
