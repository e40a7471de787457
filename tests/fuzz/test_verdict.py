"""The fuzzer's verdict on made-up observations (pure): it must see each way a record can go wrong."""

from __future__ import annotations

from .observe import DeadLetterSeen, Tables
from .stream import stream
from .verdict import judge

W, H = "rg.writes.eu", "rg.held.eu"


def _records():
    recs = [r.light() for r in stream(5, 60, ["good_row", "good_group", "allow_list"], region="eu", keys=3)]
    return recs, {r.index: (0, r.index) for r in recs}


def _perfect(recs):
    good = [r for r in recs if r.made.expect == "good"]
    effects = [(r.entity, r.seq, r.made.wid) for r in good for _ in range(r.made.rows)]
    rows = {r.entity: (r.seq, r.made.note, r.made.wid) for r in good}
    dls = [DeadLetterSeen(W, 0, r.index, "unknown_table", "") for r in recs if r.made.expect == "bad"]
    return Tables({r.made.wid for r in good}, effects, rows), dls


def test_a_perfect_run_passes_and_each_fault_is_counted():
    recs, where = _records()
    db, dls = _perfect(recs)
    v = judge(5, recs, where, W, dls, {}, db)
    assert v.ok and v.applied == v.good > 0 and v.dead_lettered == v.bad > 0, v.report()

    good = [r for r in recs if r.made.expect == "good"]
    lost = Tables(db.inbox - {good[0].made.wid}, db.effects, db.rows)
    assert judge(5, recs, where, W, dls, {}, lost).lost == 1
    twice = Tables(db.inbox, db.effects + [db.effects[0]], db.rows)
    assert judge(5, recs, where, W, dls, {}, twice).duplicates == 1
    swapped = Tables(db.inbox, db.effects + [(good[0].entity, 0, good[0].made.wid)], db.rows)
    assert judge(5, recs, where, W, dls, {}, swapped).out_of_order >= 1
    assert judge(5, recs, where, W, dls[1:], {}, db).lost == 1
    assert judge(5, recs, where, W, dls + dls[:1], {}, db).duplicates == 1
    odd = [DeadLetterSeen(W, 0, dls[0].offset, "gremlins", "")] + dls[1:]
    assert judge(5, recs, where, W, odd, {}, db).bad_reason == 1


def test_a_dead_letter_of_a_held_copy_counts_for_its_source_offset():
    recs, where = _records()
    db, dls = _perfect(recs)
    held = {(1, 100 + i): (W, d.partition, d.offset) for i, d in enumerate(dls)}
    via_held = [DeadLetterSeen(H, 1, 100 + i, d.reason, "") for i, d in enumerate(dls)]
    v = judge(5, recs, where, W, via_held, held, db)
    assert v.ok and v.dead_lettered == len(dls), v.report()
    assert judge(5, recs, where, W, via_held, {}, db).stray_dead_letters == len(dls)
