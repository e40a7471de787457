"""The pure helpers of bench/peer_sink.py: the send order with retries, the expected last value per
key, both systems' input records, Connect's status answer and the bench's last line."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("peer_sink", BENCH / "peer_sink.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["peer_sink"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


ps = _bench()


def test_send_order_resends_a_fraction_lag_records_later():
    order = ps.send_order(10_000, 0.2, 100)
    counts = Counter(order)
    assert set(counts) == set(range(10_000))
    assert sum(1 for c in counts.values() if c == 2) == 2_000 and max(counts.values()) == 2
    firsts = {}
    for pos, i in enumerate(order):
        if i in firsts:
            assert pos - firsts[i] >= min(100, 10_000 - i)  # behind the records produced meanwhile
        else:
            firsts[i] = pos
    assert ps.send_order(10_000, 0.2, 100) == order  # seeded: both systems get the same sequence
    assert ps.send_order(50, 0.0, 10) == list(range(50))


def test_resends_never_overtake_a_newer_write_of_the_same_key():
    n, keys, lag = 20_000, 5_000, 1_000  # lag < keys: a retry lands before the key's next write
    last_sent: dict[int, int] = {}
    for i in ps.send_order(n, 0.2, lag):
        last_sent[i % keys] = i
    assert all(last_sent[k] == ps.last_index(k, n, keys) for k in range(keys))


def test_last_index_and_writes_per_key():
    assert ps.last_index(0, 200_000, 50_000) == 150_000
    assert ps.last_index(49_999, 200_000, 50_000) == 199_999
    assert ps.writes_per_key(7, 200_000, 50_000) == 4
    assert ps.last_index(3, 10, 4) == 7 and ps.writes_per_key(3, 10, 4) == 2
    assert ps.writes_per_key(1, 10, 4) == 3


def test_input_records_of_both_systems():
    key = json.loads(ps.peer_key(42))
    assert key["payload"] == {"id": 42} and key["schema"]["fields"][0] == {"field": "id", "type": "int64",
                                                                          "optional": False}
    value = json.loads(ps.peer_value(150_042, 50_000))
    assert value["payload"] == {"name": "n150042", "version": 4}
    ev = json.loads(ps.rg_event("7f0c3f1e-5a0e-4c83-9d1a-0b8f3f1c2d4e", 150_042, 50_000))
    assert ev["key"] == {"id": 42} and ev["data"] == {"name": "n150042", "version": 4} and ev["op"] == "upsert"
    recs = ps.rg_records([0, 1, 0], 50_000)
    assert recs[0] == recs[2] and recs[0][0] == b"users/0"  # a resend is the same event id


def test_task_states_and_the_last_line():
    status = {"name": "c", "connector": {"state": "RUNNING"},
              "tasks": [{"id": 0, "state": "FAILED", "trace": "x"}, {"id": 1, "state": "RUNNING"}]}
    assert ps.task_states(status) == ["FAILED", "RUNNING"]
    assert ps.task_states({}) == []


pr = sys.modules["peer_rounds"]  # imported by peer_sink from bench/


def test_the_last_line_gives_a_rate_only_for_complete_runs():
    rg, peer = pr.spread([40_000.4, 38_000, 42_000]), pr.spread([8_000, 10_000, 9_000])
    ratio = pr.spread(pr.ratios([40_000.4, 38_000, 42_000], [8_000, 10_000, 9_000]))
    assert pr.peer_line(rg, peer, "t4-unnest", ratio, {"regionguard": 0, "peer": 40}, {"regionguard": 0, "peer": 7}) == (
        "PEER regionguard_wps=40000 peer_wps=9000 peer_best=t4-unnest ratio=4.67 ratio_range=3.80-5.00 "
        "regionguard_dupes=0 peer_dupes=40 regionguard_regressed=0 peer_regressed=7")
    timed_out = pr.spread([8_000, None, 9_000])
    line = pr.peer_line(rg, timed_out, None, pr.spread(pr.ratios([1.0, 2.0, 3.0], [8_000, None, 9_000])), {}, {})
    assert "peer_wps=incomplete" in line and "ratio=incomplete" in line and "peer_best=none" in line
    assert "8000" not in line and "8500" not in line
    assert timed_out.text().startswith("incomplete (2 of 3")
    assert pr.peer_line(pr.spread([]), None, None, None, {}, {}).startswith(
        "PEER regionguard_wps=na peer_wps=incomplete")  # an invocation without a plain run


def test_the_best_peer_config_is_the_fastest_that_always_completed():
    assert pr.best_config({"t2-unnest": [10.0, 12.0, 11.0], "t4-unnest": [15.0, 14.0, 13.0],
                           "t4-batch": [30.0, None, 30.0]}) == "t4-unnest"
    assert pr.best_config({"t4-batch": [None]}) is None


def test_peer_configs_parse_and_bad_ones_are_refused_by_type():
    assert [c.name for c in pr.parse_peer_configs("t2-unnest, t4-batch")] == ["t2-unnest", "t4-batch"]
    assert pr.parse_peer_configs("t4-unnest")[0] == pr.PeerConfig(tasks=4, unnest=True)
    for bad in ("", "t0-unnest", "4-unnest", "t2-copy", "t2"):
        try:
            pr.parse_peer_configs(bad)
        except pr.BadPeerConfig:
            continue
        raise AssertionError(bad)


def test_rounds_alternate_who_goes_first():
    systems = ["regionguard", "t2-unnest", "t4-unnest"]
    assert pr.round_order(1, systems) == systems
    assert pr.round_order(2, systems) == ["t4-unnest", "t2-unnest", "regionguard"]
    assert pr.round_order(3, systems)[0] == "regionguard"


def test_an_overtaking_resend_comes_after_its_keys_last_write():
    n, keys, every, lag = 20_000, 5_000, 5, 100  # 4 writes per key
    order = pr.overtake_order(n, keys, every, lag)
    assert sorted(set(order)) == list(range(n)) and len(order) == n + keys // every
    assert pr.resent_keys(n, keys, every) == keys // every
    last_sent: dict[int, int] = {}
    for i in order:
        last_sent[i % keys] = i
    for k in range(keys):
        last = ps.last_index(k, n, keys)
        # the resend of every 5th key's second-to-last write is the last thing its key receives
        assert last_sent[k] == (last - keys if k % every == 0 else last)
    pos = {}
    for p, i in enumerate(order):
        pos.setdefault(i, []).append(p)
    assert all(pos[ps.last_index(k, n, keys) - keys][1] - pos[ps.last_index(k, n, keys)][0] >= lag
               for k in range(0, keys, every) if ps.last_index(k, n, keys) < n - lag)


def test_a_key_written_once_has_nothing_to_resend():
    assert pr.overtake_order(6, 4, 1, 1) == [0, 1, 2, 3, 4, 5, 0, 1]  # one record after the last write
    assert pr.resent_keys(6, 4, 1) == 2 and pr.resent_keys(6, 4, 0) == 0


def test_the_csv_row_has_no_rate_for_an_incomplete_run():
    row = pr.csv_row(date="d", commit="c", run="plain", system="peer", config="t2-unnest", round=1, n=10,
                     wps=None, complete=False, dupes=0, regressed=0, resume_s=None)
    assert tuple(row) == pr.CSV_FIELDS and row["wps"] == "" and row["complete"] == "no"
    assert pr.csv_row(wps=12_345.6, complete=True)["wps"] == "12346"


def test_the_peer_is_configured_to_outlast_the_outage():
    fh = ps.PeerSettings.of(pr.PeerConfig(4, True), outage_s=20.0).failure_handling()
    assert fh["connection.restart.on.errors"] == "true" and fh["errors.tolerance"] == "none"
    assert int(fh["flush.max.retries"]) * int(fh["flush.retry.delay.ms"]) > 20_000
    assert int(fh["errors.retry.timeout"]) > 20_000
