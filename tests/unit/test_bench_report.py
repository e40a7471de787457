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
