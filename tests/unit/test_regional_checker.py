"""What the regional run adds to the checker: residency, survivors' latency, journaled models, lanes.

Pure: records and snapshots built in memory, a config parsed from a dict.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from regionguard.core.config import parse_config
from regionguard_testkit.verify.checker import RegionSnapshot, evaluate, percentile, produce_to_apply
from regionguard_testkit.verify.loadgen import LoadGen, Mix, Model, WriteRecord, verify_tables

REGIONS = ("r0", "r1", "r2")


def rec(seq: int, region: str = "r0", table: str = "users", key: int = 1, *, sent: float = 0.0,
        policy: str = "hold", fallbacks: tuple[str, ...] = (), status: str = "acked") -> WriteRecord:
    return WriteRecord(id=str(uuid.uuid4()), seq=seq, region=region, table=table,
                       op="upsert" if table == "users" else "insert", key=key,
                       version=seq if table == "users" else None, policy=policy, expect="apply",
                       fallbacks=fallbacks, status=status, sent=sent)


def snap(region: str, applied: list[WriteRecord], times: dict[str, float] | None = None) -> RegionSnapshot:
    rows = {(r.table, r.key): (r.version, r.id) for r in sorted(applied, key=lambda r: r.seq)}
    inbox = {r.id: ("router" if r.region == region else f"failover:{r.region}") for r in applied}
    return RegionSnapshot(region, inbox, rows, {}, applied_times=dict(times or {}))


def model(*recs: WriteRecord) -> Model:
    m = Model()
    m.add(recs)
    return m


ALLOWED = {"consents": {"r0"}}


def test_a_consent_row_outside_its_allowed_regions_breaks_residency() -> None:
    c = rec(1, "r0", "consents", 5)
    ok = evaluate(model(c), {"r0": snap("r0", [c]), "r1": snap("r1", [])}, None, ALLOWED)
    assert ok.ok and ok.residency == 0, ok.report()
    # the same consent also stored in r1 (a failover that ignored allowed_regions)
    c2 = rec(1, "r0", "consents", 5, policy="failover", fallbacks=("r1",))
    bad = evaluate(model(c2), {"r0": snap("r0", [c2]), "r1": snap("r1", [c2])}, None, ALLOWED)
    assert bad.residency == 1 and not bad.ok
    assert "residency: 1 rows" in bad.report()


def test_residency_is_not_checked_without_an_allow_list() -> None:
    c = rec(1, "r0", "consents", 5, policy="failover", fallbacks=("r1",))
    res = evaluate(model(c), {"r0": snap("r0", [c]), "r1": snap("r1", [c])}, None)
    assert res.residency == 0


def test_survivors_latency_counts_only_their_acknowledged_writes_in_flight_in_the_window() -> None:
    inside = [rec(i, "r1", key=i, sent=100.0 + i) for i in range(1, 10)]
    inside.append(rec(10, "r1", key=10, sent=95.0))   # sent before the fault, stuck through it
    before = rec(20, "r1", key=20, sent=50.0)          # applied before the fault
    after = rec(24, "r2", key=24, sent=121.0)          # sent after it
    failed_region = rec(21, "r0", key=21, sent=101.0)
    unconfirmed = rec(22, "r2", key=22, sent=101.0, status="unconfirmed")
    not_applied = rec(23, "r2", key=23, sent=102.0)
    times: dict[str, float] = {r.id: r.sent + 0.2 for r in inside}
    times[inside[-1].id] = inside[-1].sent + 7.5          # the one stalled write
    times[before.id] = 60.0
    times[after.id] = 121.5
    snaps = {"r0": snap("r0", [failed_region], {failed_region.id: 130.0}),
             "r1": snap("r1", inside + [before], times),
             "r2": snap("r2", [unconfirmed, after], {unconfirmed.id: 200.0, after.id: 121.5})}
    lat = produce_to_apply(model(*inside, before, after, failed_region, unconfirmed, not_applied), snaps,
                           ["r1", "r2"], 100.0, 120.0)
    assert sorted(lat) == ["r1", "r2"] and lat["r2"] == []
    assert len(lat["r1"]) == 10 and max(lat["r1"]) == 7.5
    assert abs(percentile(lat["r1"], 0.5) - 0.2) < 1e-9 and percentile(lat["r1"], 0.99) == 7.5
    assert percentile([], 0.99) == 0.0


def test_a_journaled_model_with_a_torn_last_line_loads(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    m = Model(path)
    a = rec(1, sent=1.0, status="unconfirmed")
    m.add([a])
    a.status = "acked"
    m.add([a])            # the same write again after its flush: the later line wins
    m.close()
    with open(path, "ab") as fh:
        fh.write(b'{"id": "torn')          # SIGKILLed mid-write
    merged = Model.load(path)
    assert len(merged) == 1 and merged.get(a.id).acked and merged.get(a.id).sent == 1.0
    other = tmp_path / "n.jsonl"
    Model(other).add([rec(2, "r1", key=2)])
    assert len(Model.load(other, into=merged)) == 2


def _cfg():
    dsns = {r: f"postgresql://u@127.0.0.1:5432/{r}" for r in REGIONS}
    return parse_config({"kafka": {"bootstrap": "127.0.0.1:9092", "topic_prefix": "t."},
                         "regions": {r: {"dsn": d} for r, d in dsns.items()},
                         "tables": verify_tables(REGIONS)})


def test_lanes_never_share_a_key_and_consents_go_only_where_allowed() -> None:
    cfg = _cfg()
    mix = Mix(consent=0.3)
    rows: dict[int, set] = {}
    for lane in (0, 1, 3):
        gen = LoadGen(cfg, lane=lane, seed=lane, mix=mix)
        keys = set()
        for region in REGIONS:
            for _ in range(300):
                kind = gen.rng.choices(gen._kinds, gen._weights)[0]
                _kw, r = gen._plan(region, kind)
                keys.update(r.rows())
                if r.table == "consents":
                    assert r.region == "r0" and all(f == "r0" for f in r.fallbacks)
        rows[lane] = keys
    assert not rows[0] & rows[1] and not rows[0] & rows[3] and not rows[1] & rows[3]


def test_the_regional_line_names_the_worst_event() -> None:
    from regionguard_testkit.regional.converge import Convergence
    from regionguard_testkit.verify.checker import CheckResult, QuiesceResult
    from tests.chaos.regional import Event, RegionalReport

    full = Event("full", "r0", 20.0, start=0.0, end=20.0, converge=Convergence("r0", True, 12.34),
                 survivors={"r1": [0.1] * 99 + [6.5], "r2": [0.2] * 100})
    cut = Event("partition", "r1", 15.0, start=40.0, end=55.0, converge=Convergence("r1", True, 3.0),
                survivors={"r0": [0.3] * 100, "r2": [0.4] * 100})
    report = RegionalReport([full, cut], QuiesceResult(True, 1.0), CheckResult(), 100.0)
    assert report.ok and report.converged
    assert report.line() == ("REGIONAL events=2 lost=0 duplicates=0 stale=0 survivors_p99_ms=400 "
                             "survivors_worst_ms=6500 converge_s=12.3")
    assert report.text().splitlines()[-1] == report.line()
    cut.converge = Convergence("r1", False, 180.0, left={"pending_writes": 3})
    assert not report.ok and "NOT converged" in report.text()


def test_convergence_waits_for_what_was_acknowledged_for_the_region_before_it_returned() -> None:
    from regionguard_testkit.regional.converge import _waited

    before = rec(1, "r0", key=1)
    before.t = 10.0
    after = rec(2, "r0", key=2)
    after.t = 30.0
    other = rec(3, "r1", key=3)
    other.t = 10.0
    shed = rec(4, "r0", key=4, policy="shed")
    shed.t = 10.0
    lost_in_flight = rec(5, "r0", key=5, status="unconfirmed")
    lost_in_flight.t = 10.0
    assert _waited(model(before, after, other, shed, lost_in_flight), "r0", 20.0) == [before.id]


class _Dies:
    """A producer whose flush never returns: the process is SIGKILLed while Kafka may have the batch."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def write(self, region, table, op, key, data=None, **kw) -> None:
        self.sent.append(str(kw["id"]))

    def group(self, *a, **kw):  # pragma: no cover - the mix below has no groups
        raise AssertionError("no groups in this mix")

    def flush(self, timeout=None) -> None:
        raise SystemExit("SIGKILL")


def test_a_journaled_batch_is_in_the_model_before_it_is_sent(tmp_path: Path) -> None:
    """A producer SIGKILLed between send and ack leaves writes Kafka may hold: the model must know
    them (as unconfirmed), or the checker would call them unknown when they are applied."""
    path = tmp_path / "j.jsonl"
    gen = LoadGen(_cfg(), Model(path), journal=True, seed=1,
                  mix=Mix(upsert=1, insert=0, delete_user=0, delete_order=0, bad_constraint=0, bad_table=0,
                          group=0, bad_group=0, group_more=0, failover=0, shed=0, expiring=0))
    dies = _Dies()
    gen._producer = dies  # type: ignore[assignment]
    try:
        gen.run_batch(5)
    except SystemExit:
        pass
    gen.model.close()
    journaled = Model.load(path)
    assert dies.sent and set(dies.sent) <= {r.id for r in journaled}
    assert all(r.status == "unconfirmed" for r in journaled)
