"""The tables of docs/benchmarks.md, generated from the raw rows under bench/results/.

Each bench that keeps its raw outputs appends one CSV row a round (date, commit,
settings, one rate per measurement). An invocation is a run of rows whose
``round`` counts up from 1. This prints one Markdown row per invocation with the
median of every rate and of the router's ratio to every baseline, so a figure in
the docs always names its date and commit, and is rewritten by
``python bench/report.py --write docs/benchmarks.md`` (between the markers
``<!-- router_apply:begin -->`` and ``<!-- router_apply:end -->``). A unit test
holds the docs to the CSV.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BASELINES = ("raw", "raw_lanes", "copy_upsert", "copy_inbox")
BEGIN, END = "<!-- router_apply:begin -->", "<!-- router_apply:end -->"


def invocations(rows: list[dict]) -> list[list[dict]]:
    runs: list[list[dict]] = []
    for row in rows:
        if row["round"] == "1" or not runs:
            runs.append([])
        runs[-1].append(row)
    return runs


def _median(run: list[dict], field: str) -> float:
    return statistics.median(float(r[field]) for r in run)


def router_apply_table(path: Path = RESULTS / "router_apply.csv") -> str:
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    head = ("| date (UTC) | commit | writes | inbox prefill | rounds | router (writes/s) | "
            + " | ".join(f"{b} (writes/s)" for b in BASELINES) + " | "
            + " | ".join(f"router/{b}" for b in BASELINES) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for run in invocations(rows):
        first = run[0]
        ratios = [statistics.median(float(r["router"]) / float(r[b]) for r in run) for b in BASELINES]
        lines.append(
            f"| {first['date'][:16].replace('T', ' ')} | {first['commit']} | {int(first['n']):,} | "
            f"{int(first['prefill']):,} | {len(run)} | {_median(run, 'router'):,.0f} | "
            + " | ".join(f"{_median(run, b):,.0f}" for b in BASELINES) + " | "
            + " | ".join(f"{x:.2f}" for x in ratios) + " |")
    return "\n".join(lines)


def rewrite(doc: Path, table: str) -> str:
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: the markers {BEGIN} and {END} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, help="rewrite the table between the markers of this file")
    args = ap.parse_args()
    table = router_apply_table()
    if args.write:
        args.write.write_text(rewrite(args.write, table))
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
