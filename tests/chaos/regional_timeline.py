"""The timeline picture of a regional run: every acknowledged write's produce-to-apply latency
against the time it was sent, per home region, with the events shaded.

``python -m tests.chaos.regional --png docs/img/regional-timeline.png`` draws it at the end of a
run (docs/chaos.md shows it). matplotlib comes with the ``demo`` extra; the run itself never
needs it, so it is imported here only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

COLORS = {"r0": "tab:blue", "r1": "tab:orange", "r2": "tab:green"}
SHADES = {"full": "tab:red", "controller": "tab:purple", "partition": "tab:gray", "oneway": "tab:gray",
          "flap": "tab:gray"}


def points(model: Iterable[Any], snaps: dict[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    """Per home region: (send times, latencies in seconds) of the acknowledged writes applied at home."""
    out: dict[str, tuple[list[float], list[float]]] = {}
    for r in model:
        if not r.acked or not r.sent or r.region not in snaps:
            continue
        applied = snaps[r.region].applied_times.get(r.id)
        if applied is None:
            continue
        xs, ys = out.setdefault(r.region, ([], []))
        xs.append(r.sent)
        ys.append(max(0.001, applied - r.sent))
    return out


def draw(path: Path, model: Iterable[Any], snaps: dict[str, Any], events: Iterable[Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on a CI machine
    import matplotlib.pyplot as plt

    series = points(model, snaps)
    t0 = min((min(xs) for xs, _ in series.values() if xs), default=0.0)
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=100)
    for e in events:
        ax.axvspan(e.start - t0, e.end - t0, color=SHADES.get(e.kind, "tab:gray"), alpha=0.15)
        ax.text(e.start - t0, 1.02, f"{e.kind} {e.region}", transform=ax.get_xaxis_transform(), fontsize=8)
    for region in sorted(series):
        xs, ys = series[region]
        ax.scatter([x - t0 for x in xs], ys, s=2, color=COLORS.get(region), label=f"writes for {region}")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the first write (when the write was sent)")
    ax.set_ylabel("produce -> applied at home (s)")
    ax.legend(loc="upper left", markerscale=5, fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
