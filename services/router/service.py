"""``regionguard router``: run one :class:`RegionWorker` per region until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket

from ..core import metrics
from ..core.config import Config, load_config
from ..core.db import RegionDB
from ..core.gctune import tune_for_throughput
from ..core.groupsession import at_start as group_session, client_timeouts
from ..core.inbox import InboxPruner
from ..core.kafka import ensure_topics, make_producer, read_limits
from ..core.leave import leave_in_turn
from ..core.dsn import tls_warnings
from ..core.rackstart import report_at_start
from ..core.log import setup_logging
from ..core.probes import PROBES, beat_while, lanes_reason
from ..core.rowcache import RowCache
from ..core.startup import wait_for_kafka
from ..core.service import install_signal_handlers, parse_regions, state_view, view_ready
from .region import RegionShare
from .worker import RegionWorker

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--regions", help="comma-separated subset of regions to route (default: all)")
    p.add_argument("--region", action="append", metavar="R", dest="region_list",
                   help="a region to serve (repeat; same as --regions R1,R2; default: all)")
    p.add_argument("--instance", default=None, help="instance id (default: host-pid)")
    p.add_argument("--metrics-port", type=int, default=None, help="override the metrics port (0: any free port)")
    p.add_argument("--no-health", action="store_true", help="ignore rg.region-state (own connection checks only)")


class Router:
    def __init__(self, cfg: Config, *, regions: list[str] | None = None, instance: str | None = None,
                 follow_health: bool = True) -> None:
        self.cfg = cfg
        self.regions = regions or list(cfg.regions)
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}"
        self.follow_health = follow_health
        self.view = None
        self.dbs: dict[str, RegionDB] = {}
        self.workers: list[RegionWorker] = []
        self.lanes_started = False

    def readiness(self) -> str | None:
        """/readyz (core/probes.py): the view read to its end, and every lane had its assignment."""
        lanes = [(w.region, w.lane, w.assignments) for w in self.workers] if self.lanes_started else None
        return lanes_reason(None if self.view is None else self.view.ready, lanes)

    def is_closed(self, region: str) -> bool:
        return True if self.view is None else self.view.is_closed(region)

    async def run(self, stop: asyncio.Event) -> None:
        PROBES.not_ready("waiting for Kafka")
        if not await wait_for_kafka(self.cfg, stop, "router"):
            return
        PROBES.not_ready("creating topics and reading their limits")
        await asyncio.to_thread(ensure_topics, self.cfg)
        limits = await asyncio.to_thread(read_limits, self.cfg)
        for line in tls_warnings(self.cfg.regions):  # once started: a refusal to start stays one line
            log.warning(line)
        await asyncio.to_thread(report_at_start, self.cfg, "router", self.regions, log)
        group = await asyncio.to_thread(group_session, self.cfg, "router")
        self.view = await asyncio.to_thread(state_view, self.cfg, self.follow_health)
        PROBES.ready_when(self.readiness)
        if not await view_ready(self.view, stop, "router"):
            if self.view is not None:
                self.view.stop()  # stopped while reading the region states: nothing was routed
            return
        # every region gets a pool: fallback applies (policy failover) may target any of them
        self.dbs = {r: RegionDB(self.cfg, r) for r in self.cfg.regions}
        cache = RowCache.maybe(self.cfg)
        shares: list[RegionShare] = []
        for region in self.regions:
            # a producer per lane: a lane waits for its own deliveries in a thread (Confirmer)
            producers = [make_producer(self.cfg, ordered=True, **limits.producer_conf(),
                                       **client_timeouts(group, producer=True))
                         for _ in range(self.cfg.router.lanes)]
            share = RegionShare(self.cfg, region, db=self.dbs[region], producer=producers[0],
                                view_closed=self.is_closed, instance=self.instance)
            shares.append(share)
            for lane, producer in enumerate(producers):
                self.workers.append(RegionWorker(
                    self.cfg, region, dbs=self.dbs, producer=producer, is_closed=self.is_closed,
                    instance=self.instance, cache=cache, share=share, lane=lane, limits=limits, group=group))
        self.lanes_started = True
        log.info("router %s routing regions %s (%d lane(s) each)", self.instance, ", ".join(self.regions),
                 self.cfg.router.lanes)
        tune_for_throughput()
        # inbox retention: a background round per routed region, on a connection of its own
        pruning = [asyncio.create_task(InboxPruner(self.cfg, r, self.dbs[r].dsn).run(stop), name=f"inbox-prune-{r}")
                   for r in (self.regions if self.cfg.inbox.prune else ())]
        try:
            await asyncio.gather(*(w.run(stop) for w in self.workers))
        finally:
            for t in pruning:
                t.cancel()  # a batch in flight is cancelled by PostgreSQL: nothing half-done
            await asyncio.gather(*pruning, return_exceptions=True)
            lanes: dict[str, list[RegionWorker]] = {}
            for w in self.workers:
                lanes.setdefault(w.region, []).append(w)
            await asyncio.gather(*(leave_in_turn(ws, service="router", what=f"the router group of {r}")
                                   for r, ws in lanes.items()))
            for w in self.workers:
                w.close()
                w.producer.flush(5)
            await asyncio.gather(*(share.aclose() for share in shares))
            for db in self.dbs.values():
                await db.close()
            if cache is not None:
                await cache.close()
            if self.view is not None:
                self.view.stop()
            log.info("router %s stopped", self.instance)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging("router", fmt=cfg.log.format)
    regions = parse_regions(cfg, args.regions, args.region_list)
    metrics.start_metrics(cfg, "router", args.metrics_port)

    async def _run() -> None:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        beating = asyncio.create_task(beat_while(stop), name="livez-heartbeat")
        try:
            await Router(cfg, regions=regions, instance=args.instance, follow_health=not args.no_health).run(stop)
        finally:
            beating.cancel()

    asyncio.run(_run())
    return 0
