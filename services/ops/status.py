"""``regionguard status --config F``: a live terminal view of regions, backlogs and events.

Shows, refreshed every ``--interval`` seconds (rich Live + tables):

* per region: breaker state (closed / half_open / open), ``seq``, since when,
  the reason, the held backlog (held writes the replayer has not applied yet),
  the router lag (writes not yet routed), the replayer lag, and the features
  turned off in that region;
* the health heartbeat age, with a STALE marker past ``health.stale_after_s``
  (no live health service: states may be outdated);
* the dead-letter count by reason, and the most recent failover events.

``--once`` prints one snapshot and exits; ``--json`` prints the same data as
JSON (with ``--once``: one indented document; without: one line per
interval, for piping). Everything is read from Kafka by
:mod:`regionguard.ops.statusdata`; no service needs to be reachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..core.config import UsageError, load_config
from .statusdata import StatusCollector, StatusError

STATE_STYLE = {"closed": "bold green", "half_open": "bold yellow", "open": "bold red", "unknown": "dim"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="print one snapshot and exit")
    p.add_argument("--json", action="store_true", help="machine-readable JSON (stable keys, see docs/drill.md)")
    p.add_argument("--interval", type=float, default=1.0, metavar="S", help="refresh every S seconds (default 1)")
    p.add_argument("--events", type=int, default=10, metavar="N", help="recent failover events to show (default 10)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="give up when Kafka does not answer within S seconds (default 10)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="no terminal view: export the status as Prometheus metrics on PORT (0: a free port), "
                        "refreshed every --interval (held backlog, router/replayer lag, heartbeat age, states)")


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _num(n: int, exact: bool) -> str:
    return f"{n:,}" if exact else f"~{n:,}"


def render(snap: dict[str, Any]):
    """The rich renderable for one snapshot."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    h = snap["health"]
    header = Text()
    header.append("regionguard status", style="bold")
    header.append(f"  kafka {snap['kafka']['bootstrap']}  prefix {snap['kafka']['topic_prefix']}  ")
    age = h["heartbeat_age_s"]
    header.append("health heartbeat ")
    header.append("never seen" if age is None else f"{_dur(age)} ago",
                  style="red" if h["stale"] else "green")
    if h["stale"]:
        header.append("  STALE", style="bold white on red")
        header.append(f" (no heartbeat for more than {h['stale_after_s']:g}s: states may be outdated)", style="red")
    header.append(f"  {snap['at']}", style="dim")

    regions = Table(title="Regions", title_justify="left", expand=False)
    right = {"justify": "right", "no_wrap": True}
    for col, kw in (("region", {"no_wrap": True}), ("state", {"no_wrap": True}), ("seq", right), ("since", right),
                    ("reason", {"overflow": "fold", "max_width": 40}), ("held", right),
                    ("router lag", right), ("replay lag", right), ("features off", {"overflow": "fold"})):
        regions.add_column(col, **kw)
    for name, r in snap["regions"].items():
        exact = r["exact"]
        backlog = Text(_num(r["held_backlog"], exact), style="bold yellow" if r["held_backlog"] else "")
        regions.add_row(
            name,
            Text(r["state"].upper() if r["state"] in ("open", "half_open") else r["state"],
                 style=STATE_STYLE.get(r["state"], "")),
            "-" if r["seq"] is None else str(r["seq"]),
            _dur(r["since_s"]),
            r["reason"] or "",
            backlog,
            _num(r["router_lag"], exact),
            _num(r["replayer_lag"], exact),
            ", ".join(r["disabled_features"]) or "-",
        )

    dl = snap["dead_letters"]
    dead = Text()
    dead.append("dead letters: ")
    dead.append(_num(dl["total"], dl["exact"]), style="bold red" if dl["total"] else "green")
    if dl["by_reason"]:
        dead.append("  (" + ", ".join(f"{k} {v}" for k, v in dl["by_reason"].items()) + ")")
    if snap.get("missing_topics"):
        dead.append(f"   missing topics: {len(snap['missing_topics'])} (no service has run yet?)", style="yellow")

    events = Table(title="Recent failover events", title_justify="left", expand=False)
    for col in ("at", "region", "kind", "service", "detail"):
        events.add_column(col, overflow="fold", max_width=60 if col == "detail" else None)
    for ev in reversed(snap["events"]):
        at = (ev["at"] or "")[11:23]
        style = "red" if ev["kind"] == "transition" and "-> open" in ev["summary"] else ""
        events.add_row(at, ev["region"], Text(ev["kind"], style=style), ev["service"], ev["summary"])
    if not snap["events"]:
        events.add_row("-", "", "no events yet", "", "")
    return Group(header, regions, dead, events)


def _quiet_logging() -> None:
    """status reports problems itself; librdkafka's reconnect chatter would garble the screen."""
    import logging

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("regionguard.rdkafka").setLevel(logging.CRITICAL + 1)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    _quiet_logging()
    if args.interval <= 0:
        raise UsageError("--interval must be > 0")
    collector = StatusCollector(cfg, events=max(1, args.events), read_timeout=args.timeout)
    try:
        collector.start(args.timeout)
        if args.metrics_port is not None and not args.once:
            return _export(cfg, collector, args.metrics_port, args.interval)
        if args.once:
            snap = collector.snapshot()
            if args.json:
                print(json.dumps(snap, indent=2, sort_keys=False))
            else:
                from rich.console import Console

                Console().print(render(snap))
            return 0
        if args.json:
            while True:
                print(json.dumps(collector.snapshot(), separators=(",", ":")), flush=True)
                time.sleep(args.interval)
        return _live(collector, args.interval)
    except StatusError as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `regionguard status --json | head`
        sys.stderr.close()
        return 0
    finally:
        collector.close()


def _live(collector: StatusCollector, interval: float) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with Live(render(collector.snapshot()), console=console, refresh_per_second=4, screen=False) as live:
        while True:
            t0 = time.monotonic()
            try:
                live.update(render(collector.snapshot()))
            except StatusError as exc:
                console.print(f"[red]{exc}[/red]")
            time.sleep(max(0.05, interval - (time.monotonic() - t0)))


def _export(cfg, collector: StatusCollector, port: int, interval: float) -> int:
    """Headless exporter: the numbers only Kafka offsets know, as gauges.

    A service's own gauges stop moving when it is stuck or dead, which is when
    they matter; these are computed from the outside, like a lag exporter:
    ``regionguard_consumer_lag{region,service="router"|"replayer"}``,
    ``regionguard_held_backlog{region}`` (exact, also while the region is
    open and the replayer waits), ``regionguard_health_heartbeat_age_seconds``
    (+Inf when no heartbeat was ever seen), ``regionguard_region_state{region}``,
    ``regionguard_held_oldest_age_seconds{region}`` (the oldest held write not
    replayed yet; 0 when none) beside ``regionguard_held_retention_seconds{region}``.
    """
    import logging
    import signal

    from ..core import metrics as m
    from ..core.log import setup_logging

    log = setup_logging("status")
    logging.getLogger("regionguard.rdkafka").setLevel(logging.CRITICAL + 1)
    try:
        bound = m.start_metrics(cfg.model_copy(update={"metrics": cfg.metrics.model_copy(update={"enabled": True})}),
                                "status", port)
    except OSError as exc:
        raise UsageError(f"metrics: cannot listen on {cfg.metrics.host}:{port}: {exc.strerror or exc}") from None
    log.info("metrics port %d: exporting status every %.1fs", bound, interval)
    from ..core.probes import PROBES
    PROBES.not_ready("no status collected yet")
    stop = {"now": False}

    def _stop(_sig, _frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stop["now"]:
        t0 = time.monotonic()
        try:
            snap = collector.snapshot()
        except StatusError as exc:
            log.warning("%s", exc)
            # /readyz (core/probes.py): ready while the last collection succeeded (its gauges are current)
            PROBES.not_ready("the last status collection failed")
        else:
            PROBES.ready_when(lambda: None)
            for region, r in snap["regions"].items():
                m.CONSUMER_LAG.labels(region, "router").set(r["router_lag"])
                m.CONSUMER_LAG.labels(region, "replayer").set(r["replayer_lag"])
                m.HELD_BACKLOG.labels(region).set(r["held_backlog"])
                m.HELD_RETENTION.labels(region).set(cfg.kafka.topics.held_retention_days * 86400)
                oldest = collector.held_oldest_age(region) if r["held_backlog"] else None
                m.HELD_OLDEST_AGE.labels(region).set(oldest or 0.0)
                if r["state"] in m.STATE_VALUE:
                    m.REGION_STATE.labels(region).set(m.STATE_VALUE[r["state"]])
                    m.REGION_STATE_SEQ.labels(region).set(r["seq"])
            age = snap["health"]["heartbeat_age_s"]
            m.HEARTBEAT_AGE.set(float("inf") if age is None else age)
        while not stop["now"] and time.monotonic() - t0 < interval:
            PROBES.heartbeat.beat()
            time.sleep(0.1)
    log.info("status exporter stopped")
    return 0
