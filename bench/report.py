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
how many were complete. The peer bench (bench/peer_sink.py) has its own table,
one row per invocation, run and system or peer configuration, between
``<!-- peer:begin -->`` and ``<!-- peer:end -->``.
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
PEER_BEGIN, PEER_END = "<!-- peer:begin -->", "<!-- peer:end -->"


def _head(head: str) -> list[str]:
    """A Markdown table's header row and the rule under it."""
    return [head, "|" + "---|" * (head.count("|") - 1)]


def invocations(rows: list[dict]) -> list[list[dict]]:
    runs: list[list[dict]] = []
    for row in rows:
        # the peer bench writes several rows a round: a new invocation is a round 1 after a later round
        if not runs or (row["round"] == "1" and runs[-1][-1]["round"] != "1"):
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
    lines = _head(head)
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
    lines = _head(head)
    for run in invocations(rows):
        first = run[0]
        ratios = [statistics.median(float(r["router"]) / float(r[b]) for r in run) for b in BASELINES]
        lines.append(
            f"| {first['date'][:16].replace('T', ' ')} | {first['commit']} | {int(first['n']):,} | "
            f"{int(first['prefill']):,} | {len(run)} | {_median(run, 'router'):,.0f} | "
            + " | ".join(f"{_median(run, b):,.0f}" for b in BASELINES) + " | "
            + " | ".join(f"{x:.2f}" for x in ratios) + " |")
    return "\n".join(lines)


def _median_range(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def _resume(run: str, grp: list[dict]) -> str:
    """Fault runs only: every round's seconds from the heal to the next application, ``never`` when
    the system did not apply again by itself (the bench then restarts the peer as an operator would)."""
    if run not in ("fault", "down"):
        return ""
    return " · ".join(r["resume_s"] or "never" for r in grp)


def peer_table(path: Path = RESULTS / "peer.csv") -> str:
    """Median (min-max) writes/s per system or peer configuration over an invocation's rounds, and
    regionguard's ratio to each configuration round by round; a group with an incomplete round
    shows ``incomplete``, never a rate. Applied twice and regressed: the worst round."""
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    head = ("| date (UTC) | commit | run | system | config | writes | rounds complete | writes/s median (min-max) "
            "| regionguard / this, median (min-max) | applied twice (max) | regressed (max) | resume after heal (s) |")
    lines = _head(head)
    for inv in invocations(rows):
        groups: dict[tuple[str, str, str], list[dict]] = {}
        for r in inv:
            groups.setdefault((r["run"], r["system"], r["config"]), []).append(r)
        for (run, system, config), grp in groups.items():
            done = [r for r in grp if r["complete"] == "yes" and r["wps"]]
            rate = (_median_range([float(r["wps"]) for r in done], "{:,.0f}") if len(done) == len(grp)
                    else "incomplete")
            ratio = ""
            if system != "regionguard":
                rg = {r["round"]: r for r in groups.get((run, "regionguard", "router+replayer"), [])}
                pairs = [(rg.get(r["round"]), r) for r in grp]
                if pairs and all(a and a["complete"] == "yes" and b["complete"] == "yes" and a["wps"] and b["wps"]
                                 for a, b in pairs):
                    ratio = _median_range([float(a["wps"]) / float(b["wps"]) for a, b in pairs], "{:.2f}")
                elif pairs:
                    ratio = "incomplete"
            worst = lambda f: max((int(r[f]) for r in grp if r[f] != ""), default=0)  # noqa: E731
            lines.append(f"| {grp[0]['date'][:16].replace('T', ' ')} | {grp[0]['commit']} | {run} | {system} | "
                         f"{config} | {int(grp[0]['n']):,} | {len(done)} of {len(grp)} | {rate} | {ratio} | "
                         f"{worst('dupes'):,} | {worst('regressed'):,} | {_resume(run, grp)} |")
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
        text = rewrite(args.write, peer_table(), PEER_BEGIN, PEER_END, text)
        args.write.write_text(text)
    else:
        print(router_apply_table() + "\n\n" + replay_table() + "\n\n" + peer_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
