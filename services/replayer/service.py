"""``regionguard replayer``: ``replay.lanes`` :class:`ReplayWorker` lanes per region until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket

from ..core import metrics
from ..core.config import load_config
from ..core.gctune import tune_for_throughput
from ..core.kafka import ensure_topics, make_producer, read_limits
from ..core.startup import wait_for_kafka
from ..core.leave import leave_in_turn
from ..core.dsn import tls_warnings
from ..core.rackstart import report_at_start
from ..core.groupsession import at_start as group_session
from ..core.log import setup_logging
from ..core.probes import PROBES, beat_while, lanes_reason
from ..core.service import install_signal_handlers, parse_regions, state_view, view_ready
from .region import RegionReplay
from .worker import ReplayWorker

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--regions", help="comma-separated subset of regions (default: all)")
    p.add_argument("--region", action="append", metavar="R", dest="region_list",
                   help="a region to serve (repeat; same as --regions R1,R2; default: all)")
    p.add_argument("--instance", default=None, help="instance id (default: host-pid)")
    p.add_argument("--metrics-port", type=int, default=None, help="override the metrics port (0: any free port)")
    p.add_argument("--no-health", action="store_true", help="ignore rg.region-state (own connection checks only)")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging("replayer", fmt=cfg.log.format)
    regions = parse_regions(cfg, args.regions, args.region_list)
    metrics.start_metrics(cfg, "replayer", args.metrics_port)
    instance = args.instance or f"{socket.gethostname()}-{os.getpid()}"

    async def _run() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        beating = asyncio.create_task(beat_while(stop), name="livez-heartbeat")
        try:
            await _replay(stop)
        finally:
            beating.cancel()

    async def _replay(stop: asyncio.Event) -> None:
        PROBES.not_ready("waiting for Kafka")
        if not await wait_for_kafka(cfg, stop, "replayer"):
            return
        PROBES.not_ready("creating topics and reading their limits")
        await asyncio.to_thread(ensure_topics, cfg)
        limits = await asyncio.to_thread(read_limits, cfg)
        for line in tls_warnings(cfg.regions):  # once started: a refusal to start stays one line
            log.warning(line)
        await asyncio.to_thread(report_at_start, cfg, "replayer", regions or list(cfg.regions), log)
        group = await asyncio.to_thread(group_session, cfg, "replayer")
        view = await asyncio.to_thread(state_view, cfg, not args.no_health)
        workers: list[ReplayWorker] = []
        # /readyz (core/probes.py): following -- the view read to its end and every lane in its group
        PROBES.ready_when(lambda: lanes_reason(None if view is None else view.ready,
                                               [(w.region, w.lane, w.assignments) for w in workers] or None))
        if not await view_ready(view, stop, "replayer"):
            if view is not None:
                view.stop()
            return

        def is_closed(region: str) -> bool:
            return True if view is None else view.is_closed(region)

        events = make_producer(cfg)  # the regions' session events and readiness records
        shared = {r: RegionReplay(cfg, r, producer=events, view_closed=is_closed, instance=instance) for r in regions}
        workers.extend(ReplayWorker(cfg, r, shared=shared[r], lane=lane, limits=limits, group=group)
                       for r in regions for lane in range(cfg.replay.lanes))
        log.info("replayer %s for regions %s (%d lane(s) each)", instance, ", ".join(regions), cfg.replay.lanes)
        tune_for_throughput()
        try:
            await asyncio.gather(*(w.run(stop) for w in workers))
        finally:
            await asyncio.gather(*(leave_in_turn([w for w in workers if w.region == r], service="replayer",
                                                 what=f"the replayer group of {r}") for r in regions))
            events.flush(5)
            for s in shared.values():
                await s.close()
            if view is not None:
                view.stop()
            log.info("replayer %s stopped", instance)

    asyncio.run(_run())
    return 0
