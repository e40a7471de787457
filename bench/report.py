"""The tables of docs/benchmarks.md, generated from the raw rows under bench/results/.

Each bench that keeps its raw outputs appends one CSV row a round (date, commit,
settings, one rate per measurement). An invocation is a run of rows whose
``round`` counts up from 1. This prints one Markdown row per invocation with the
median of every rate and of the router's ratio to every baseline, so a figure in
the docs always names its date and commit, and is rewritten by
``python bench/report.py --write docs/benchmarks.md`` (between the markers
``<!-- router_apply:begin -->`` and ``<!-- router_apply:end -->``, and the
replay's between ``<!-- replay:begin -->`` and ``<!-- replay:end -->``). A unit
test holds the docs to the CSVs. A measurement that failed its database count
has an empty rate: it is left out of the medians, and the rounds column says
how many were complete.
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
REPLAY_BEGIN, REPLAY_END = "<!-- replay:begin -->", "<!-- replay:end -->"


def invocations(rows: list[dict]) -> list[list[dict]]:
    runs: list[list[dict]] = []
    for row in rows:
        if row["round"] == "1" or not runs:
            runs.append([])
        runs[-1].append(row)
    return runs


def _median(run: list[dict], field: str) -> float:
    return statistics.median(float(r[field]) for r in run)


def _rates(run: list[dict], field: str) -> list[float]:
    return [float(r[field]) for r in run if r.get(field)]


def _ratio(run: list[dict], top: str, bottom: str) -> str:
    xs = [float(r[top]) / float(r[bottom]) for r in run if r.get(top) and r.get(bottom)]
    return f"{statistics.median(xs):.2f}" if xs else "failed"


def replay_table(path: Path = RESULTS / "replay.csv") -> str:
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    measures = ("replay", "replay_batches", *BASELINES)
    head = ("| date (UTC) | commit | held writes | complete rounds | "
            + " | ".join(f"{m} (writes/s)" for m in measures) + " | closed -> direct (s) | "
            + " | ".join(f"replay/{b}" for b in BASELINES) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for run in invocations(rows):
        first = run[0]
        done = sum(1 for r in run if not r.get("failed"))
        cells = [f"{statistics.median(xs):,.0f}" if (xs := _rates(run, m)) else "failed" for m in measures]
        cells.append(f"{statistics.median(xs):.2f}" if (xs := _rates(run, "switch_s")) else "failed")
        lines.append(
            f"| {first['date'][:16].replace('T', ' ')} | {first['commit']} | {int(first['n']):,} | "
            f"{done}/{len(run)} | " + " | ".join(cells) + " | "
            + " | ".join(_ratio(run, "replay", b) for b in BASELINES) + " |")
    return "\n".join(lines)


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


def rewrite(doc: Path, table: str, begin: str = BEGIN, end: str = END, text: str | None = None) -> str:
    """``doc``'s text (or ``text``) with ``table`` between the markers."""
    text = doc.read_text() if text is None else text
    if begin not in text or end not in text:
        raise SystemExit(f"{doc}: the markers {begin} and {end} are missing")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{table}\n{end}{tail}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, help="rewrite the table between the markers of this file")
    args = ap.parse_args()
    if args.write:
        text = rewrite(args.write, router_apply_table())
        text = rewrite(args.write, replay_table(), REPLAY_BEGIN, REPLAY_END, text)
        args.write.write_text(text)
    else:
        print(router_apply_table() + "\n\n" + replay_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
