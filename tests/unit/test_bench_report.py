"""docs/benchmarks.md's router-apply table is what bench/report.py makes of bench/results/ (pure, no I/O
beyond reading the repository's files)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _row(rnd: int, router: float, raw: float = 100.0) -> dict:
    return {"date": "2026-12-08T01:00:00+00:00", "commit": "abc1234", "n": "1000", "prefill": "0",
            "round": str(rnd), "router": str(router), "raw": str(raw), "raw_lanes": "200",
            "copy_upsert": "400", "copy_inbox": "300"}


def test_rounds_counting_up_from_one_are_one_invocation():
    rows = [_row(1, 90), _row(2, 80), _row(1, 50), _row(2, 60), _row(3, 70)]
    assert [len(run) for run in report.invocations(rows)] == [2, 3]


def test_the_table_gives_medians_and_ratios_per_invocation(tmp_path):
    path = tmp_path / "router_apply.csv"
    rows = [_row(1, 90), _row(2, 70, raw=50), _row(3, 80)]
    path.write_text(",".join(rows[0]) + "\n" + "\n".join(",".join(r.values()) for r in rows) + "\n")
    line = report.router_apply_table(path).splitlines()[-1]
    # router median 80; router/raw per round 0.9, 1.4, 0.8 -> median 0.90; router/copy_upsert 0.20
    assert "| 80 |" in line and "| 0.90 |" in line and "| 0.20 |" in line and "| 3 |" in line


def test_the_docs_hold_the_table_the_raw_rows_give():
    doc = ROOT / "docs" / "benchmarks.md"
    assert report.rewrite(doc, report.router_apply_table()) == doc.read_text(), \
        "run: python bench/report.py --write docs/benchmarks.md"


REPLAY_CSV = """date,commit,broker,n,round,replay,raw,raw_lanes,copy_upsert,copy_inbox,replay_batches,switch_s,router_rss_mb,replayer_rss_mb,failed
2026-12-08T04:00:00+00:00,def5678,apache,1000,1,80,100,200,400,300,90,1.5,70,80,
2026-12-08T04:01:00+00:00,def5678,apache,1000,2,,100,200,400,300,,,70,80,replay
2026-12-08T04:02:00+00:00,def5678,apache,1000,3,60,50,200,400,,70,2.5,70,80,copy_inbox
"""


def test_the_replay_table_leaves_failed_measurements_out_of_the_medians(tmp_path):
    path = tmp_path / "replay.csv"
    path.write_text(REPLAY_CSV)
    line = report.replay_table(path).splitlines()[-1]
    cells = [c.strip() for c in line.strip("|").split("|")]
    # replay ran complete in rounds 1 and 3 (80, 60 -> median 70); round 2's failed replay is no rate
    assert cells[:5] == ["2026-12-08 04:00", "def5678", "1,000", "1/3", "70"]
    assert cells[6] == "100"  # raw median of 100, 100, 50
    assert cells[9] == "300"  # copy_inbox: round 3's failed count left out
    assert cells[10] == "2.00"  # closed -> direct median of 1.5 and 2.5
    # replay/raw per complete pair 0.8 and 1.2 -> 1.00; replay/copy_inbox only round 1: 80/300
    assert cells[11] == "1.00" and cells[14] == "0.27"


def test_a_replay_invocation_with_no_complete_replay_says_failed(tmp_path):
    path = tmp_path / "replay.csv"
    path.write_text(REPLAY_CSV.splitlines()[0] + "\n" + REPLAY_CSV.splitlines()[2].replace(",2,", ",1,") + "\n")
    cells = [c.strip() for c in report.replay_table(path).splitlines()[-1].strip("|").split("|")]
    assert cells[3] == "0/1" and cells[4] == "failed" and cells[11] == "failed"


def test_the_docs_hold_the_replay_table_the_raw_rows_give():
    doc = ROOT / "docs" / "benchmarks.md"
    assert report.rewrite(doc, report.replay_table(), report.REPLAY_BEGIN, report.REPLAY_END) == doc.read_text(), \
        "run: python bench/report.py --write docs/benchmarks.md"


PEER_CSV = """date,commit,run,system,config,round,n,wps,complete,dupes,regressed,resume_s
2026-12-08T04:30:00+00:00,abc1234,plain,regionguard,router+replayer,1,1000,300,yes,0,0,
2026-12-08T04:30:10+00:00,abc1234,plain,peer,t2-unnest,1,1000,100,yes,0,0,
2026-12-08T04:30:20+00:00,abc1234,plain,peer,t4-unnest,1,1000,150,yes,0,0,
2026-12-08T04:30:30+00:00,abc1234,overtake,regionguard,router+replayer,1,1000,250,yes,0,0,
2026-12-08T04:30:40+00:00,abc1234,overtake,peer,t4-unnest,1,1000,120,yes,200,200,
2026-12-08T04:31:00+00:00,abc1234,plain,peer,t4-unnest,2,1000,,no,0,0,
2026-12-08T04:31:10+00:00,abc1234,plain,peer,t2-unnest,2,1000,200,yes,0,0,
2026-12-08T04:31:20+00:00,abc1234,plain,regionguard,router+replayer,2,1000,500,yes,0,0,
2026-12-08T04:31:30+00:00,abc1234,overtake,peer,t4-unnest,2,1000,100,yes,180,190,
2026-12-08T04:31:40+00:00,abc1234,overtake,regionguard,router+replayer,2,1000,200,yes,0,0,
2026-12-08T05:00:00+00:00,def5678,plain,regionguard,router+replayer,1,1000,400,yes,0,0,
2026-12-08T05:01:00+00:00,def5678,down,regionguard,router+replayer,1,1000,40,yes,0,0,2.1
2026-12-08T05:02:00+00:00,def5678,down,peer,t4-unnest,1,1000,10,yes,0,0,
"""


def test_the_peer_table_gives_median_range_ratio_and_never_a_rate_for_an_incomplete_run(tmp_path):
    path = tmp_path / "peer.csv"
    path.write_text(PEER_CSV)
    rows = {tuple(c.strip() for c in line.split("|")[2:6]): line
            for line in report.peer_table(path).splitlines()[2:]}
    assert len(rows) == 8  # two invocations: plain x 3 and overtake x 2, then plain and down
    rg = rows[("abc1234", "plain", "regionguard", "router+replayer")]
    assert "| 2 of 2 | 400 (300-500) |" in rg
    t2 = rows[("abc1234", "plain", "peer", "t2-unnest")]
    # ratios per round: 300/100 = 3.00, 500/200 = 2.50
    assert "| 150 (100-200) | 2.75 (2.50-3.00) |" in t2
    t4 = rows[("abc1234", "plain", "peer", "t4-unnest")]
    assert "| 1 of 2 | incomplete | incomplete |" in t4 and "150 (" not in t4
    ot = rows[("abc1234", "overtake", "peer", "t4-unnest")]
    assert ot.endswith("| 200 | 200 |  |")  # the worst round's applied twice and regressed
    assert rows[("def5678", "down", "regionguard", "router+replayer")].endswith("| 2.1 |")
    assert rows[("def5678", "down", "peer", "t4-unnest")].endswith("| never |")  # it did not resume by itself
    assert "| 1 of 1 | 400 (400-400) |" in rows[("def5678", "plain", "regionguard", "router+replayer")]


def test_the_docs_hold_the_peer_table_the_raw_rows_give():
    doc = ROOT / "docs" / "benchmarks.md"
    assert report.rewrite(doc, report.peer_table(), report.PEER_BEGIN, report.PEER_END) == doc.read_text(), \
        "run: python bench/report.py --write docs/benchmarks.md"
