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
    assert ps.peer_line(40_000.4, 8_000, 0, 40_000, 1.94, None) == (
        "PEER regionguard_wps=40000 peer_wps=8000 ratio=5.00 regionguard_dupes=0 peer_dupes=40000 "
        "regionguard_resume_s=1.9 peer_resume_s=never")
