"""The rounds of bench/peer_sink.py: who goes first, which peer configurations, the overtaking
resend, the raw CSV row and the summary line (pure; tests/unit/test_peer_sink.py).

Written by hand because it is the bench's own method, not a solved problem: a median and a range
over a handful of rounds (``statistics`` does the median), and a send order that makes a resend
land after a newer write of its key, as a producer retry after a timeout does.
"""

from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

CSV_FIELDS = ("date", "commit", "run", "system", "config", "round", "n", "wps", "complete", "dupes",
              "regressed", "resume_s")


@dataclass(frozen=True)
class PeerConfig:
    """One configuration of the Debezium JDBC sink to try: ``t<tasks>-<insert>``, insert being
    ``unnest`` (one INSERT ... SELECT FROM unnest(...) ON CONFLICT per batch) or ``batch``
    (Debezium's default: a JDBC batch of single-row upserts). The reduction buffer is always on:
    with unnest a key twice in one batch fails the whole statement."""
    tasks: int
    unnest: bool

    @property
    def name(self) -> str:
        return f"t{self.tasks}-{'unnest' if self.unnest else 'batch'}"


class BadPeerConfig(ValueError):
    pass


def parse_peer_configs(text: str) -> list[PeerConfig]:
    out = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        tasks, _, insert = token.partition("-")
        if not (tasks.startswith("t") and tasks[1:].isdigit() and int(tasks[1:]) > 0
                and insert in ("unnest", "batch")):
            raise BadPeerConfig(f"peer config {token!r}: expected t<tasks>-unnest or t<tasks>-batch")
        out.append(PeerConfig(int(tasks[1:]), insert == "unnest"))
    if not out:
        raise BadPeerConfig("no peer config given")
    return out


def round_order(rnd: int, systems: list[str]) -> list[str]:
    """regionguard first on odd rounds, last on even ones (rg, peer, peer, rg, ...): neither system
    always gets the quieter machine or the warmer page cache."""
    return list(systems) if rnd % 2 == 1 else list(reversed(systems))


def overtake_order(n: int, keys: int, every: int, lag: int) -> list[int]:
    """Events 0..n-1 in order (event i writes key i % keys), plus, for every ``every``-th key with
    at least two writes, its second-to-last write sent again ``lag`` records after the key's last
    write: a resend that overtakes a newer write. Applied, it leaves the row one version back."""
    resend_after: dict[int, int] = {}  # position of the key's last write -> the older event resent
    for k in range(0, min(keys, n), every):
        last = k + keys * ((n - 1 - k) // keys)
        if last - keys >= 0:
            resend_after[last] = last - keys
    order: list[int] = []
    pending: list[tuple[int, int]] = []  # (due position in the original order, event)
    for i in range(n):
        order.append(i)
        if i in resend_after:
            pending.append((i + lag, resend_after[i]))
        while pending and pending[0][0] <= i:
            order.append(pending.pop(0)[1])
    order.extend(e for _, e in pending)
    return order


def resent_keys(n: int, keys: int, every: int) -> int:
    """How many keys get an overtaking resend (``every`` 0: none, the other runs)."""
    if every <= 0:
        return 0
    return sum(1 for k in range(0, min(keys, n), every) if k + keys * ((n - 1 - k) // keys) - keys >= 0)


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    complete: int
    rounds: int

    def text(self, fmt: str = "{:,.0f}") -> str:
        if self.complete < self.rounds:
            return f"incomplete ({self.complete} of {self.rounds} complete)"
        return f"{fmt.format(self.median)} ({fmt.format(self.low)}-{fmt.format(self.high)})"


def spread(values: list[float | None]) -> Spread:
    """Median and range of the complete rounds; ``None`` marks an incomplete round."""
    done = [v for v in values if v is not None]
    if not done:
        return Spread(0.0, 0.0, 0.0, 0, len(values))
    return Spread(statistics.median(done), min(done), max(done), len(done), len(values))


def ratios(rg: list[float | None], peer: list[float | None]) -> list[float | None]:
    """regionguard / peer per round: only a round both completed has a ratio."""
    return [a / b if a is not None and b else None for a, b in zip(rg, peer)]


def best_config(wps_by_config: dict[str, list[float | None]]) -> str | None:
    """The peer configuration with the highest median over rounds it all completed (an incomplete
    round disqualifies: a configuration that sometimes does not finish is not the best)."""
    eligible = {c: spread(v) for c, v in wps_by_config.items() if v and all(x is not None for x in v)}
    return max(eligible, key=lambda c: eligible[c].median) if eligible else None


def peer_line(rg: Spread, peer: Spread | None, best: str | None, ratio: Spread | None,
              dupes: dict[str, int | None], regressed: dict[str, int | None]) -> str:
    """The bench's last line, for scripts: a rate only for complete runs, else ``incomplete``."""
    def wps(s: Spread | None) -> str:
        if s is not None and s.rounds == 0:
            return "na"  # no plain run in this invocation
        return "incomplete" if s is None or s.complete < s.rounds else f"{s.median:.0f}"

    def na(v: int | None) -> str:
        return "na" if v is None else str(v)

    r = ("incomplete" if ratio is None or ratio.complete < ratio.rounds
         else f"{ratio.median:.2f} ratio_range={ratio.low:.2f}-{ratio.high:.2f}")
    return (f"PEER regionguard_wps={wps(rg)} peer_wps={wps(peer)} peer_best={best or 'none'} ratio={r} "
            f"regionguard_dupes={na(dupes.get('regionguard'))} peer_dupes={na(dupes.get('peer'))} "
            f"regionguard_regressed={na(regressed.get('regionguard'))} peer_regressed={na(regressed.get('peer'))}")


def csv_row(**fields) -> dict:
    row = {k: fields.get(k, "") for k in CSV_FIELDS}
    row["wps"] = "" if fields.get("wps") is None else f"{fields['wps']:.0f}"
    row["complete"] = "yes" if fields.get("complete") else "no"
    row["resume_s"] = "" if fields.get("resume_s") is None else f"{fields['resume_s']:.1f}"
    for k in ("dupes", "regressed"):
        row[k] = "" if fields.get(k) is None else str(fields[k])
    return row


def append_csv(path: Path, row: dict) -> None:
    """One row a system and round, appended as it is measured: a stopped bench keeps what it did."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)
