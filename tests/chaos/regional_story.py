"""Where a regional event's seconds go: one line per second of the event, from the watcher's timeline.

For each second from just before the fault until after the return: how many writes each region's
producer had acknowledged, how many writes each region applied (the inbox's ``applied_at``), and what
Kafka and the routers did in that second (leaders that moved off the failed node, ISRs it left, group
coordinators that moved, routers' direct/held partitions). Read with ``python -m tests.chaos.regional
--watch`` (the event's ``story`` in the report).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

from regionguard_testkit.verify.loadgen import Model

BEFORE_S, AFTER_S = 2, 12


def _journal_region(path: Path) -> str:
    m = re.match(r"model-(r\d+)-\d+\.jsonl", path.name)
    return m.group(1) if m else "?"


def story(watch: list[dict[str, Any]], journals: Iterable[Path], applied: dict[str, dict[str, float]],
          node: int, start: float, end: float) -> str:
    """``applied``: region -> write id -> applied_at; ``node``: the failed region's Kafka node id."""
    lo, hi = math.floor(start) - BEFORE_S, math.ceil(end) + AFTER_S
    acks: dict[str, Counter[int]] = defaultdict(Counter)
    sends: dict[str, Counter[int]] = defaultdict(Counter)
    for j in journals:
        if not j.exists():
            continue
        home = _journal_region(j)
        for r in Model.load(j):
            if r.acked and r.t and lo <= r.t < hi:
                acks[home][int(r.t - start + 100) - 100] += 1
            if r.acked and r.sent and lo <= r.sent < hi:
                sends[home][int(r.sent - start + 100) - 100] += 1
    applies = {reg: Counter(int(t - start + 100) - 100 for t in times.values() if lo <= t < hi)
               for reg, times in applied.items()}
    notes: dict[int, list[str]] = defaultdict(list)
    before: dict[tuple[str, int], dict[str, Any]] = {}
    moved: Counter[tuple[int, str]] = Counter()
    for rec in watch:
        sec = int(rec["t"] - start + 100) - 100
        if rec["kind"] == "partition":
            key = (rec["topic"], rec["partition"])
            old = before.get(key)
            before[key] = rec
            if old is None or rec["t"] < start - BEFORE_S:
                continue
            topic = "offsets" if rec["topic"] == "__consumer_offsets" else rec["topic"].split(".", 1)[-1]
            if old["leader"] != rec["leader"]:
                moved[(sec, f"leader {old['leader']}->{rec['leader']} {topic}")] += 1
            if node in old["isr"] and node not in rec["isr"]:
                moved[(sec, f"isr-{node} {topic}")] += 1
            if node not in old["isr"] and node in rec["isr"]:
                moved[(sec, f"isr+{node} {topic}")] += 1
        elif rec["kind"] == "coordinator" and rec["t"] >= start - BEFORE_S:
            notes[sec].append(f"coordinator {rec['group'].rsplit('.', 1)[-1]}={rec['node']}")
        elif rec["kind"] == "metric" and rec["t"] >= start - BEFORE_S and rec["name"] in (
                "regionguard_direct_partitions", "regionguard_held_partitions"):
            notes[sec].append(f"{rec['service']} {rec['name'].split('_')[1]}={rec['value']:g}")
        elif rec["kind"] == "poll":
            notes[sec].append(f"poll {rec['what']} {rec.get('seconds') or 0:.1f}s {rec.get('error') or ''}".strip())
    for (sec, what), n in sorted(moved.items()):
        notes[sec].append(f"{what} x{n}")
    regions = sorted(set(acks) | set(applies))
    head = "  s   " + " ".join(f"{r}:sent/ack/appl" for r in regions) + "  what happened"
    lines = [head]
    for sec in range(lo - math.floor(start), hi - math.floor(start)):
        cells = " ".join(f"{sends[r][sec]:>5}/{acks[r][sec]:>4}/{applies.get(r, Counter())[sec]:>4}" for r in regions)
        mark = "CUT " if sec == 0 else ("HEAL" if sec == round(end - start) else "    ")
        lines.append(f"{sec:>4} {mark} {cells}  {'; '.join(notes.get(sec, []))}")
    return "\n".join(lines)
