"""What the replay lanes of one region share inside one replayer process.

A region's held topic is drained by ``replay.lanes`` workers (``worker.py``),
each a member of the region's replayer group with its own share of the
partitions. The rest is about the region, not a lane:

* the database pool and the Redis write-through, the readiness check (run once, by one lane, and
  published once as ``replay_ready`` / ``replay_not_ready``) and passive
  health after a lost connection;
* the ``replay.max_rate`` token bucket, so the rate is per region as
  documented, however many lanes there are;
* the replay *session*: one ``replay_started`` when the first lane finds
  held writes, ``replay_progress`` at most once a second, and one
  ``replay_finished`` with the summed counts when every lane is idle.
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
from ..core.db import ApplyResult, RegionDB
from ..core.errors import RegionGuardError, RegionUnavailable
from ..core.models import FailoverEvent, Observation
from ..core.rowcache import RowCache
from .ratelimit import TokenBucket

log = logging.getLogger(__name__)


class RegionReplay:
    def __init__(self, cfg: Config, region: str, *, producer: Producer, view_closed: Callable[[str], bool],
                 instance: str) -> None:
        self.cfg, self.region, self.producer, self.instance = cfg, region, producer, instance
        self.view_closed = view_closed
        self.db = RegionDB(cfg, region)
        self.cache = RowCache.maybe(cfg)  # Redis write-through, when configured
        self.bucket = TokenBucket(cfg.replay.max_rate, burst=cfg.replay.batch_size)
        self.ready = False
        self.down_until = 0.0
        self.backoff = cfg.router.retry_initial_s
        self._check = asyncio.Lock()
        # the session
        self.active: set[int] = set()
        self.counts = ApplyResult()
        self.expired = 0
        self.dead = 0
        self.started = 0.0
        self.last_progress = 0.0
        self.backlog: dict[int, int] = {}

    # availability ---------------------------------------------------------------
    def is_closed(self) -> bool:
        return time.monotonic() >= self.down_until and self.view_closed(self.region)

    def not_closed(self) -> None:
        if self.ready:
            log.info("region %s is not closed: replay waits", self.region)
        self.ready = False

    async def check_ready(self) -> RegionGuardError | None:
        """Validate readiness once for all lanes; returns the error if the region is not ready."""
        async with self._check:
            if self.ready:
                return None
            try:
                await self.db.check_ready()
            except RegionGuardError as err:
                log.warning("region %s not ready for replay: %s", self.region, err)
                publish.failover_event(self.cfg, self.producer, FailoverEvent(
                    kind="replay_not_ready", region=self.region, service="replayer",
                    detail={"reason": str(err)[:300]}))
                if isinstance(err, RegionUnavailable):
                    self.mark_down(err)
                return err
            self.ready = True
            self.backoff = self.cfg.router.retry_initial_s
            log.info("region %s ready for replay", self.region)
            publish.failover_event(self.cfg, self.producer, FailoverEvent(
                kind="replay_ready", region=self.region, service="replayer"))
            return None

    def observe_failure(self, kind: str) -> None:
        """A failure about the region that is not a lost connection (a missing grant): tell the breaker."""
        publish.observation(self.cfg, self.producer, Observation(
            region=self.region, observer=f"replayer:{self.instance}", ok=False, kind=kind))

    def mark_down(self, err: RegionUnavailable) -> None:
        self.down_until = time.monotonic() + max(self.backoff, 0.5)
        self.backoff = min(self.backoff * 2, self.cfg.router.retry_max_s)
        self.ready = False
        m.APPLY_ERRORS.labels(self.region, err.kind).inc()
        publish.observation(self.cfg, self.producer, Observation(
            region=self.region, observer=f"replayer:{self.instance}", ok=False, kind=err.kind))

    # the session ------------------------------------------------------------------
    def lane_active(self, lane: int) -> None:
        if not self.active:
            self.started = time.monotonic()
            self.counts = ApplyResult()
            self.expired = self.dead = 0
            m.REPLAY_ACTIVE.labels(self.region).set(1)
            log.info("region %s: replay started", self.region)
            self._event("replay_started", {"instance": self.instance})
        self.active.add(lane)

    def lane_batch(self, res: ApplyResult, *, dead: int, expired: int) -> None:
        self.counts.add(ApplyResult(res.applied, res.duplicates, res.stale, res.groups))
        self.dead += dead
        self.expired += expired
        m.REPLAY_LAST_PROGRESS.labels(self.region).set(time.time())
        now = time.monotonic()
        if now - self.last_progress >= 1.0:
            self.last_progress = now
            self._event("replay_progress", self.summary())

    def lane_backlog(self, lane: int, records: int) -> None:
        self.backlog[lane] = records
        m.HELD_BACKLOG.labels(self.region).set(sum(self.backlog.values()))

    def lane_idle(self, lane: int) -> None:
        """A lane found nothing for a while; the session ends when no lane is active."""
        self.active.discard(lane)
        self.backlog[lane] = 0
        if self.active:
            return
        m.REPLAY_ACTIVE.labels(self.region).set(0)
        m.HELD_BACKLOG.labels(self.region).set(0)
        summary = self.summary()
        log.info("region %s: replay finished %s", self.region, summary)
        self._event("replay_finished", summary)
        self.producer.poll(0)

    def summary(self) -> dict:
        c = self.counts
        return {"applied": c.applied, "duplicates": c.duplicates, "stale": c.stale, "expired": self.expired,
                "groups": c.groups, "dead_lettered": self.dead, "seconds": round(time.monotonic() - self.started, 3),
                "instance": self.instance}

    def _event(self, kind: str, detail: dict) -> None:
        publish.failover_event(self.cfg, self.producer, FailoverEvent(
            kind=kind, region=self.region, service="replayer", detail=detail))

    async def close(self) -> None:
        await self.db.close()
        if self.cache is not None:
            await self.cache.close()
