"""The fuzzer's verdict (pure): every record's fate against what it had to be.

Dead letters are counted by the source offset they name (a dead letter the replayer wrote names
a held copy; the held copy's headers name its source), so a bad record is dead-lettered exactly
when its own offset appears once in ``rg.dead-letter``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from regionguard.core.models import DeadReason

from .observe import DeadLetterSeen, Tables
from .strategies import BAD, GOOD
from .stream import FuzzRecord

REASONS = {r.value for r in DeadReason}
#: failures the summary line counts; any of them non-zero fails the run
FAILURES = ("lost", "duplicates", "out_of_order", "crashes", "bad_applied", "bad_reason", "stray_dead_letters")
#: the longest a partition's committed offset may stay behind its end without moving, region healthy
MAX_PAUSE_S = 2.0


@dataclass
class Verdict:
    seed: int
    records: int = 0
    good: int = 0
    bad: int = 0
    either: int = 0
    applied: int = 0
    dead_lettered: int = 0
    lost: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    crashes: int = 0
    bad_applied: int = 0
    bad_reason: int = 0
    stray_dead_letters: int = 0
    max_pause_s: float = 0.0
    reasons: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    failing_strategies: Counter = field(default_factory=Counter)
    replay: str = ""  # the command line that runs this stream again

    def fail(self, kind: str, rec: FuzzRecord | None, why: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if rec is not None:
            self.failing_strategies[rec.strategy] += 1
        if len(self.examples[kind]) < 5:
            who = f"record {rec.index} ({rec.strategy}, entity {rec.entity}, seq {rec.seq})" if rec else "-"
            line = f"{who}: {why}"
            self.examples[kind].append(line if len(line) <= 400 else line[:400] + "...")

    @property
    def ok(self) -> bool:
        return not any(getattr(self, k) for k in FAILURES) and self.max_pause_s <= MAX_PAUSE_S

    def line(self) -> str:
        return (f"FUZZ records={self.records} good={self.good} bad={self.bad} applied={self.applied} "
                f"dead_lettered={self.dead_lettered} lost={self.lost} duplicates={self.duplicates} "
                f"out_of_order={self.out_of_order} crashes={self.crashes} max_pause_s={self.max_pause_s:.1f} "
                f"either={self.either} bad_applied={self.bad_applied} bad_reason={self.bad_reason} "
                f"stray_dead_letters={self.stray_dead_letters} seed={self.seed}")

    def report(self) -> str:
        out = [self.line(), f"dead-letter reasons: {dict(self.reasons)}"]
        if self.failing_strategies:
            out.append(f"failing strategies: {dict(self.failing_strategies)}")
        for kind, lines in self.examples.items():
            out += [f"{kind}:"] + [f"  {x}" for x in lines]
        out.append(f"replay with: {self.replay or f'python -m tests.fuzz.run --seed {self.seed}'}"
                   " (one record: add --show <index>)")
        return "\n".join(out)


def judge(seed: int, records: list[FuzzRecord], where: dict[int, tuple[int, int]], writes_topic: str,
          dls: list[DeadLetterSeen], held: dict[tuple[int, int], tuple[str, int, int]], db: Tables,
          *, crashes: list[str] = (), max_pause_s: float = 0.0) -> Verdict:
    v = Verdict(seed, records=len(records), max_pause_s=max_pause_s)
    for c in crashes:
        v.fail("crashes", None, c)
    by_offset = {pos: r.index for r in records if (pos := where.get(r.index)) is not None}
    dead: dict[int, list[DeadLetterSeen]] = defaultdict(list)
    for d in dls:
        src = (d.partition, d.offset) if d.topic == writes_topic else None
        if src is None and (held_src := held.get((d.partition, d.offset))) and held_src[0] == writes_topic:
            src = held_src[1:]
        if src is None or src not in by_offset:
            v.fail("stray_dead_letters", None, f"{d.topic}[{d.partition}]@{d.offset} {d.reason}: {d.detail}")
            continue
        dead[by_offset[src]].append(d)
        v.reasons[d.reason] += 1
    effects = Counter(wid for _e, _s, wid in db.effects)
    last: dict[int, FuzzRecord] = {}
    for r in records:
        m, its_dead = r.made, dead.get(r.index, [])
        applied = m.wid is not None and m.wid in db.inbox
        for d in its_dead:
            if d.reason not in REASONS:
                v.fail("bad_reason", r, f"reason {d.reason!r}: {d.detail}")
        if len(its_dead) > 1:
            v.fail("duplicates", r, f"dead-lettered {len(its_dead)} times: "
                                    + ", ".join(f"{d.reason} from {d.topic}[{d.partition}]@{d.offset}" for d in its_dead))
        if m.expect == GOOD:
            v.good += 1
        elif m.expect == BAD:
            v.bad += 1
        else:
            v.either += 1
        if m.expect == BAD:
            if applied or (m.wid and effects.get(m.wid)):
                v.fail("bad_applied", r, f"applied: {m!r}")
            elif its_dead:
                v.dead_lettered += 1
            else:
                v.fail("lost", r, f"bad record never dead-lettered: {m!r}")
            continue
        if applied and its_dead:
            v.fail("duplicates", r, f"applied and dead-lettered ({its_dead[0].reason}: {its_dead[0].detail})")
        if applied:
            v.applied += 1
            if effects.get(m.wid, 0) > m.rows:
                v.fail("duplicates", r, f"{effects[m.wid]} row changes, {m.rows} expected")
            last[r.entity] = r
        elif m.expect == GOOD:
            why = f"dead-lettered {its_dead[0].reason}: {its_dead[0].detail}" if its_dead else "not applied"
            v.fail("lost", r, f"{why}: {m!r}")
        elif not its_dead:
            v.fail("lost", r, f"neither applied nor dead-lettered: {m!r}")
    _order(v, records, db, last)
    return v


def _order(v: Verdict, records: list[FuzzRecord], db: Tables, last: dict[int, FuzzRecord]) -> None:
    """Per entity, row changes in commit order carry non-decreasing ``seq``; the row is its last applied write."""
    by_wid = {r.made.wid: r for r in records if r.made.wid}
    high: dict[int, int] = {}
    for entity, seq, wid in db.effects:
        if seq < high.get(entity, 0):
            v.fail("out_of_order", by_wid.get(wid), f"entity {entity}: seq {seq} committed after seq {high[entity]}")
        high[entity] = max(high.get(entity, 0), seq)
    for entity, r in last.items():
        row = db.rows.get(entity)
        if row is None or row[0] != r.seq or row[2] != r.made.wid or row[1] != r.made.note:
            got = None if row is None else (row[0], (row[1] or "")[:40], row[2])
            v.fail("out_of_order", r, f"final row {got!r}, not its last applied write (seq {r.seq}, {r.made.wid})")
