"""What the lanes of one region share inside one router process.

A region is served by ``router.lanes`` workers (see ``worker.py``), each a
member of the region's consumer group with its own share of the partitions.
Two things are about the region as a whole, not about a lane:

* **Passive health**: a connection failure seen by any lane takes the region
  out for every lane of this process (hold, don't hammer), and one probe with
  backoff brings it back. The health service sees one observer,
  ``router:<instance>``, however many lanes there are: its quorum counts
  processes, not lanes.
* **The drain probe**: while a lane waits, paused, for the replayer to drain
  a held partition, it applies nothing, so nothing it does would tell it the
  region is down. A router started during an outage that no health service
  reports (``--no-health``, or a health view that still says closed) would
  wait there until the heal, and the partition's new writes would be neither
  held nor failed over. So one ping at most every ``DRAIN_PROBE_S`` runs in
  the background while partitions drain; a failure is the ordinary passive
  mark-down, which sends the partitions back to held.
* **The hold summary**: the ``regionguard_held_partitions`` and ``regionguard_direct_partitions`` gauges and the
  ``hold_started`` / ``direct_resumed`` events sum over the lanes, so a
  dashboard or the demo sees one region, not one lane.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from confluent_kafka import Producer

from ..core import metrics as m
from ..core import publish
from ..core.config import Config
from ..core.db import RegionDB
from ..core.errors import RegionGuardError, RegionUnavailable
from ..core.models import FailoverEvent, Observation, row_ops

log = logging.getLogger(__name__)

#: Seconds between two pings of the region while partitions wait for the replayer (see the docstring).
DRAIN_PROBE_S = 1.0


class RegionShare:
    def __init__(self, cfg: Config, region: str, *, db: RegionDB, producer: Producer,
                 view_closed: Callable[[str], bool], instance: str) -> None:
        self.cfg, self.region, self.db, self.producer = cfg, region, db, producer
        self.view_closed = view_closed
        self.instance = instance
        self.down_until = 0.0         # our own connection failures (passive health)
        self.down_kind = ""
        self.backoff = cfg.router.retry_initial_s
        self._probing = False
        self._drain_probe: asyncio.Task | None = None
        self._next_drain_probe = 0.0
        self._lanes: dict[int, tuple[int, int]] = {}  # lane -> (held or draining, direct)
        self._holding = False

    # passive health -------------------------------------------------------------
    def is_closed(self, region: str) -> bool:
        if region == self.region and self.down_kind:
            return False  # our own connection failed: hold until a probe of ours succeeds
        return self.view_closed(region)

    def mark_down(self, err: RegionUnavailable) -> None:
        log.warning("region %s: %s; holding its writes", self.region, err)
        self.down_until = time.monotonic() + max(self.backoff, 0.5)
        self.down_kind = err.kind
        self.backoff = min(self.backoff * 2, self.cfg.router.retry_max_s)
        m.APPLY_ERRORS.labels(self.region, err.kind).inc()
        self._observe(ok=False, kind=err.kind)

    def observe_failure(self, kind: str) -> None:
        """A failure about the region that is not a lost connection (a missing grant): tell the breaker."""
        self._observe(ok=False, kind=kind)

    async def probe_if_due(self) -> None:
        """After a connection failure, probe with backoff until the region answers (one lane probes)."""
        if not self.down_kind or self._probing or time.monotonic() < self.down_until:
            return
        self._probing = True
        try:
            await self.db.ping()
        except RegionUnavailable as err:
            self.mark_down(err)
            return
        except RegionGuardError as err:
            log.warning("region %s: probe answered with %s", self.region, err)
        finally:
            self._probing = False
        log.info("region %s answers again", self.region)
        self.down_kind = ""
        self.backoff = self.cfg.router.retry_initial_s
        self._observe(ok=True, kind="ok")

    def probe_while_draining(self) -> None:
        """Ping the region in the background, at most once per ``DRAIN_PROBE_S`` (see the docstring).

        Not awaited: a ping into a black hole takes the health timeout, and the lane's other,
        direct partitions must not wait for it.
        """
        now = time.monotonic()
        if self.down_kind or self._probing or now < self._next_drain_probe:
            return
        if self._drain_probe is not None and not self._drain_probe.done():
            return
        self._next_drain_probe = now + DRAIN_PROBE_S
        self._drain_probe = asyncio.ensure_future(self._ping_draining())

    async def aclose(self) -> None:
        """Cancel a drain probe still in flight, before the pools close under it."""
        if self._drain_probe is not None and not self._drain_probe.done():
            self._drain_probe.cancel()
            await asyncio.gather(self._drain_probe, return_exceptions=True)

    async def _ping_draining(self) -> None:
        try:
            await self.db.ping()
        except RegionUnavailable as err:
            if not self.down_kind:
                self.mark_down(err)
        except RegionGuardError as err:
            log.warning("region %s: drain probe answered with %s", self.region, err)

    def _observe(self, *, ok: bool, kind: str) -> None:
        publish.observation(self.cfg, self.producer, Observation(
            region=self.region, observer=f"router:{self.instance}", ok=ok, kind=kind))

    # hold summary ---------------------------------------------------------------
    def report(self, lane: int, held: int, direct: int) -> None:
        """A lane's partition counts after its housekeeping; publishes region-level changes."""
        self._lanes[lane] = (held, direct)
        held_now = sum(h for h, _ in self._lanes.values())
        direct_now = sum(d for _, d in self._lanes.values())
        m.HELD_PARTITIONS.labels(self.region).set(held_now)
        m.DIRECT_PARTITIONS.labels(self.region).set(direct_now)
        if held_now and not self._holding:
            self._holding = True
            self._event("hold_started")
        elif not held_now and self._holding and direct_now:
            self._holding = False
            self._event("direct_resumed")

    def _event(self, kind: str, **detail) -> None:
        publish.failover_event(self.cfg, self.producer, FailoverEvent(
            kind=kind, region=self.region, service="router", detail={"instance": self.instance, **detail}))

    def residency_held(self, refused: dict[str, list]) -> None:
        """Failover writes held for home because their closed fallbacks may not hold their tables.

        ``refused`` maps each refused fallback region to the writes; one event per batch and region.
        """
        for fb, writes in refused.items():
            tables = sorted({op.table for w in writes for op in row_ops(w)
                             if not self.cfg.allowed_in(op.table, fb)})
            self._event("residency_hold", refused_region=fb, tables=tables, writes=len(writes),
                        write_ids=[str(w.id) for w in writes[:10]],
                        reason=f"{', '.join(tables)} may not be stored in {fb} (allowed_regions); held for "
                               f"{self.region}")
