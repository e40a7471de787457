"""``regionguard breaker force-open|disable|release REGION``: operator control of a breaker.

Publishes ``ControlRecord(kind="breaker_command", region=R, detail={"action": ...})``
on ``<prefix>control`` (delivery confirmed); the health leader applies it and
publishes the resulting transition like any other (``force-open`` is published
as ``open`` with reason ``forced``, ``disable`` as ``closed`` with reason
``disabled``, ``release`` returns to ``closed``). A command sent while no
leader runs is applied by the next one.

With ``--wait S`` (default 10) the command waits until ``<prefix>region-state``
shows the result and prints it; exit 1 if it does not within S seconds.
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time

# ConfigError, not cli.UsageError: under ``python -m regionguard.cli`` the cli module is
# ``__main__``, so a UsageError imported from regionguard.cli would not be caught there.
from ..core.config import ConfigError, load_config
from ..core.kafka import Confirmer, KafkaDeliveryError, make_producer
from ..core.models import ControlRecord
from ..core.log import rdkafka_log
from ..core.stateview import RegionStateView

ACTIONS = {"force-open": "force_open", "disable": "disable", "release": "release"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=sorted(ACTIONS), help="force-open, disable or release")
    parser.add_argument("region", help="region name from the config")
    parser.add_argument("--reason", default="", help="free text recorded with the command")
    parser.add_argument("--wait", type=float, default=10.0, metavar="S",
                        help="wait up to S seconds for the new state (0: don't wait)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object: action, region, topic, applied, and the state when applied")


def _done(action: str, st) -> bool:
    if st is None:
        return False
    bs = (st.stats or {}).get("breaker_state")
    if action == "force_open":
        return bs == "forced_open"
    if action == "disable":
        return bs == "disabled"
    return bs not in ("forced_open", "disabled")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.region not in cfg.regions:
        raise ConfigError(f"unknown region {args.region!r} (config has: {', '.join(cfg.regions)})")
    action = ACTIONS[args.action]
    try:
        who = f"{getpass.getuser()}@{socket.gethostname()}"
    except (OSError, KeyError, ImportError):  # no user name (e.g. a container user without a passwd entry)
        who = socket.gethostname()
    rec = ControlRecord(kind="breaker_command", region=args.region, service=f"admin:{who}",
                        detail={"action": action, "reason": args.reason})
    view = None
    if args.wait > 0:
        view = RegionStateView(cfg)
        view.start()
        view.wait_ready(min(args.wait, 5.0))
        before = view.state(args.region)
    producer = make_producer(cfg, **{"logger": rdkafka_log})
    c = Confirmer()
    c.produce(producer, cfg.topic("control"), rec.model_dump_json().encode(), key=args.region.encode())
    try:
        c.wait(producer, timeout=15)
    except KafkaDeliveryError as exc:
        if view:
            view.stop()
        raise ConfigError(f"cannot publish to {cfg.topic('control')} at {cfg.kafka.bootstrap}: {exc}") from None
    doc = {"action": args.action, "region": args.region, "topic": cfg.topic("control"), "applied": None}
    if not args.json:
        print(f"published {args.action} for {args.region} on {cfg.topic('control')}")
    if view is None:
        if args.json:
            print(json.dumps(doc))
        return 0
    try:
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            st = view.state(args.region)
            if _done(action, st) and (before is None or st.seq > before.seq or _done(action, before)):
                if args.json:
                    print(json.dumps({**doc, "applied": True, "state": st.state.value, "reason": st.reason,
                                      "seq": st.seq, "observer": st.observer}))
                else:
                    print(f"{args.region}: {st.state.value} (reason {st.reason}, seq {st.seq}, by {st.observer})")
                return 0
            time.sleep(0.05)
        if args.json:
            print(json.dumps({**doc, "applied": False}))
        print(f"{args.region}: no health leader applied the command within {args.wait:g}s "
              "(it will be applied when one runs)", file=sys.stderr)
        return 1
    finally:
        view.stop()
