"""``regionguard drill --region R --fault blackhole|refuse|latency --for 30s``: rehearse a regional outage.

Runs against a running *local* setup: it switches the region's fault proxy
through the setup's drill control server (:mod:`regionguard_testkit.embedded.drillctl`;
found through the config, or ``--control``), then

1. prints what it did, and every region-state transition as it is published
   (read from ``<prefix>region-state``, like every service does);
2. waits ``--for``, printing a progress line every few seconds (state, writes
   held so far, held backlog);
3. heals the proxy (also on Ctrl-C / SIGTERM; the control server heals by
   itself as a last resort if the drill dies);
4. waits until the region is ``closed`` again and its held backlog is
   replayed (at most ``--recover-timeout``);
5. prints a summary: time to open, time to closed after healing, writes held
   during the drill, writes replayed, backlog left; and one machine-readable line
   ``DRILL region=.. fault=.. opened=yes|no time_to_open_s=.. time_to_closed_s=..
   held=.. replayed=.. backlog_left=.. result=pass|fail``.

Exit 0 when the drill passed (the region opened, unless ``--expect any``,
and came back closed with nothing left to replay), 1 when it did not, 2 for
usage problems (no local setup, unknown region, ...). docs/drill.md shows
how to run the same drill against real clusters.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from typing import Any

from ..core.config import UsageError, load_config
from ..core.models import FailoverEvent, RegionState, State
from ..core.supervise import swallowed
from .statusdata import StatusCollector, StatusError

FAULTS = ("blackhole", "refuse", "latency")
_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def duration(text: str) -> float:
    """``30s``, ``500ms``, ``2m``, ``1h`` or plain seconds."""
    m = _DUR.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30s, 500ms, 2m)")
    value = float(m.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[m.group(2) or "s"]
    if value <= 0:
        raise argparse.ArgumentTypeError("a duration must be > 0")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", required=True, help="region to take out")
    p.add_argument("--fault", required=True, choices=FAULTS,
                   help="blackhole: packets vanish (timeouts); refuse: connections refused and reset; "
                        "latency: every response delayed by --delay")
    p.add_argument("--for", dest="duration", type=duration, default=30.0, metavar="DURATION",
                   help="how long the fault lasts (default 30s)")
    p.add_argument("--delay", type=duration, default=0.5, metavar="DURATION",
                   help="added delay for --fault latency (default 500ms)")
    p.add_argument("--recover-timeout", type=duration, default=120.0, metavar="DURATION",
                   help="after healing, wait at most this long for closed and a drained backlog (default 120s)")
    p.add_argument("--expect", choices=("open", "any"), default="open",
                   help="open (default): the drill fails unless the region's breaker opened; any: only recovery counts")
    p.add_argument("--control", metavar="FILE|URL",
                   help="drill control state file or http://host:port#token (default: found from the config)")
    p.add_argument("--json", action="store_true", help="progress on stderr, then one JSON object with the "
                                                       "summary on stdout (the DRILL line's fields and more)")
    p.add_argument("--progress-every", type=duration, default=5.0, metavar="DURATION", help=argparse.SUPPRESS)


class _Out:
    """Timestamped lines relative to the fault's start, safe from several threads."""

    def __init__(self, stream=None) -> None:
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self.stream = stream  # None: stdout; --json sends the progress to stderr

    def __call__(self, text: str) -> None:
        with self._lock:
            print(f"[{time.monotonic() - self.t0:7.2f}s] {text}", file=self.stream or sys.stdout, flush=True)


class _Transitions:
    """Region-state changes of the drilled region, with the local time they were seen."""

    def __init__(self, region: str, out: _Out) -> None:
        self.region = region
        self.out = out
        self.seen: list[tuple[float, RegionState]] = []
        self._lock = threading.Lock()
        self.changed = threading.Event()
        self.armed = False

    def __call__(self, old: RegionState | None, new: RegionState) -> None:
        if not self.armed:
            return
        prev = old.state.value if old else "unknown"
        if old is not None and old.state == new.state:
            return
        mark = "" if new.region == self.region else "   (other region)"
        reason = f": {new.reason}" if new.reason else ""
        self.out(f"{new.region}: {prev} -> {new.state.value} (seq {new.seq}{reason}){mark}")
        if new.region == self.region:
            with self._lock:
                self.seen.append((time.monotonic(), new))
            self.changed.set()

    def first(self, states: tuple[State, ...], after: float) -> tuple[float, RegionState] | None:
        with self._lock:
            for t, st in self.seen:
                if t >= after and st.state in states:
                    return t, st
        return None


def _install_sigterm() -> None:
    def _raise(_signum, _frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _raise)
    except ValueError:  # not the main thread (called as a library)
        pass


def main(args: argparse.Namespace) -> int:
    from .kit import require_testkit

    require_testkit()  # its control client lives in the test kit, a separate distribution
    from regionguard_testkit.embedded.drillctl import DrillClient, DrillControlError

    cfg = load_config(args.config)
    region = args.region
    if region not in cfg.regions:
        raise UsageError(f"unknown region {region!r} (config has: {', '.join(cfg.regions)})")
    try:
        client = DrillClient.discover(cfg, args.control)
        proxies = client.proxies()
    except DrillControlError as exc:
        raise UsageError(str(exc)) from None
    if region not in proxies:
        raise UsageError(f"the local setup at {client.source} has no fault proxy for region {region!r} "
                         f"(it has: {', '.join(sorted(proxies)) or 'none'})")
    if proxies[region]["mode"] != "pass":
        raise UsageError(f"region {region}'s proxy is already in mode {proxies[region]['mode']!r}; "
                         f"heal it or wait for its auto-heal first")
    import logging

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("regionguard.rdkafka").setLevel(logging.CRITICAL + 1)

    out = _Out(sys.stderr if args.json else None)
    trans = _Transitions(region, out)
    collector = StatusCollector(cfg, read_timeout=10.0, on_change=trans)
    try:
        collector.start(10.0)
    except StatusError as exc:
        collector.close()
        raise UsageError(str(exc)) from None
    _install_sigterm()
    try:
        return _run(args, cfg, client, proxies[region], collector, trans, out)
    finally:
        collector.close()


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}s"


def _run(args, cfg, client, proxy: dict[str, Any], collector: StatusCollector, trans: _Transitions,
         out: _Out) -> int:
    from regionguard_testkit.embedded.drillctl import DrillControlError

    region, fault = args.region, args.fault
    human = sys.stderr if args.json else sys.stdout  # --json: stdout holds the one JSON result
    view = collector.view
    st0 = view.state(region)
    if st0 is not None and st0.state is not State.closed:
        raise UsageError(f"region {region} is {st0.state.value} already (seq {st0.seq}); "
                         f"drill a closed region, or wait for it to recover")
    age = view.last_heartbeat_age()
    if age is None or age > cfg.health.stale_after_s:
        out("warning: no recent health heartbeat on region-state: is the health service running? "
            "(transitions will not show without it)")
    held_topic = cfg.topic("held", region)
    held_pos, _ = collector.read_from(held_topic)
    events_pos, _ = collector.read_from(cfg.topic("failover-events"))
    held_total = 0

    what = {"blackhole": "blackhole (packets vanish, connections hang)",
            "refuse": "refuse (connections refused, live ones reset)",
            "latency": f"latency (+{args.delay:g}s on every response)"}[fault]
    print(f"drill: region {region}, fault {what}, for {args.duration:g}s", file=human)
    print(f"       database path {proxy['listen']} -> {proxy['target']} (control: {client.source})", file=human)
    print(f"       state before: {st0.state.value if st0 else 'unknown (no state published yet)'}"
          f"{f' (seq {st0.seq})' if st0 else ''}", file=human)
    trans.armed = True
    healed = False
    t_fault = t_heal = None
    try:
        out.t0 = time.monotonic()
        t_fault = time.monotonic()
        client.set(region, fault, delay_s=args.delay if fault == "latency" else None,
                   heal_after_s=args.duration + 60.0)
        out(f"fault injected: {region} {fault}")
        end = t_fault + args.duration
        next_progress = t_fault + args.progress_every
        while time.monotonic() < end:
            trans.changed.wait(min(0.2, max(0.0, end - time.monotonic())))
            trans.changed.clear()
            if time.monotonic() >= next_progress and time.monotonic() < end - 0.5:
                next_progress += args.progress_every
                held_pos, n = collector.read_from(held_topic, held_pos)
                held_total += n
                st = view.state(region)
                out(f"{region} {st.state.value if st else 'unknown'}; writes held so far {held_total}")
        client.set(region, "pass")
        healed = True
        t_heal = time.monotonic()
        out(f"healed: {region} proxy back to pass")
    except DrillControlError as exc:
        out(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        out("interrupted")
    finally:
        if not healed:
            try:
                client.set(region, "pass")
                out(f"healed: {region} proxy back to pass")
            except DrillControlError as exc:
                out(f"could not heal {region} ({exc}); the control server heals it by itself shortly")
    if t_heal is None:
        return 130

    # recovery: closed again and nothing left to replay
    deadline = t_heal + args.recover_timeout
    next_progress = time.monotonic() + args.progress_every
    closed_at: float | None = None
    backlog, exact = 0, True
    try:
        while time.monotonic() < deadline:
            st = view.state(region)
            if st is None or st.state is State.closed:
                if closed_at is None:
                    hit = trans.first((State.closed,), t_heal)
                    closed_at = hit[0] if hit else time.monotonic()
                backlog, exact = collector.held_backlog(region)
                if backlog == 0:
                    break
            if time.monotonic() >= next_progress:
                next_progress += args.progress_every
                backlog, exact = collector.held_backlog(region)
                out(f"{region} {st.state.value if st else 'unknown'}; held backlog {backlog}")
            trans.changed.wait(0.25)
            trans.changed.clear()
    except KeyboardInterrupt:
        out("interrupted while waiting for recovery")
    held_pos, n = collector.read_from(held_topic, held_pos)
    held_total += n

    events: list[FailoverEvent] = []

    def on_event(msg: Any) -> None:
        try:
            ev = FailoverEvent.model_validate_json(msg.value())
        except Exception as exc:  # noqa: BLE001 - skipped (reported)
            swallowed("drill", exc, what=f"ignoring an invalid failover event at offset {msg.offset()}: reading it")
            return
        if ev.region == region:
            events.append(ev)

    collector.read_from(cfg.topic("failover-events"), events_pos, on_event)
    replay = {"applied": 0, "duplicates": 0, "stale": 0, "expired": 0, "dead_lettered": 0}
    for ev in events:
        if ev.kind == "replay_finished":
            for k in replay:
                replay[k] += int(ev.detail.get(k, 0) or 0)
    replayed = replay["applied"] + replay["duplicates"] + replay["stale"]

    opened = trans.first((State.open,), t_fault)
    half = trans.first((State.half_open,), t_fault)
    t_open = opened[0] - t_fault if opened else None
    # the decision time as published, against our wall clock at injection (same host for a local setup)
    t_closed = (closed_at - t_heal) if closed_at is not None else None
    recovered = closed_at is not None and backlog == 0
    ok = recovered and (opened is not None or args.expect == "any")
    print(file=human)
    print(f"drill summary: region {region}, fault {fault} for {args.duration:g}s", file=human)
    rows = [
        ("time to open", _fmt(t_open) if opened else "never opened"),
        ("time to half_open", _fmt(half[0] - t_fault) if half else "-"),
        ("time to closed after heal", _fmt(t_closed) if closed_at else f"not closed within {args.recover_timeout:g}s"),
        ("transitions", " -> ".join([st0.state.value if st0 else "unknown"]
                                    + [s.state.value for t, s in trans.seen if t >= t_fault]) or "-"),
        ("writes held during drill", str(held_total)),
        ("writes replayed", f"{replayed} (applied {replay['applied']}, duplicates {replay['duplicates']}, "
                            f"stale {replay['stale']}, expired {replay['expired']}, "
                            f"dead-lettered {replay['dead_lettered']})"),
        ("held backlog left", f"{backlog}{'' if exact else ' (approximate)'}"),
        ("result", "PASS" if ok else "FAIL" + ("" if opened or args.expect == "any" else ": the breaker never opened")
         + ("" if recovered else ": not recovered")),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}", file=human)
    if args.json:
        print(json.dumps({"region": region, "fault": fault, "duration_s": args.duration, "opened": bool(opened),
                          "time_to_open_s": t_open, "time_to_half_open_s": (half[0] - t_fault) if half else None,
                          "time_to_closed_s": t_closed, "held": held_total, "replayed": replayed,
                          "replay": replay, "backlog_left": backlog, "backlog_exact": exact,
                          "result": "pass" if ok else "fail"}), flush=True)
        return 0 if ok else 1
    print(f"DRILL region={region} fault={fault} opened={'yes' if opened else 'no'} "
          f"time_to_open_s={'%.3f' % t_open if t_open is not None else 'none'} "
          f"time_to_closed_s={'%.3f' % t_closed if t_closed is not None else 'none'} "
          f"held={held_total} replayed={replayed} backlog_left={backlog} result={'pass' if ok else 'fail'}",
          flush=True)
    return 0 if ok else 1


if __name__ == "__main__":  # pragma: no cover
    from ..cli import main as cli_main

    sys.exit(cli_main(["drill", *sys.argv[1:]]))
