"""The router's apply stage: one transaction for a batch's direct writes, retried until it settles.

The outcome is one of:

* applied (with per-write failures, which become dead letters);
* "hold these instead": the region stopped being closed before or while
  the batch was applied (the health service opened it, or this process lost
  its connection: passive health in :mod:`.region`);
* :class:`Revoked`: the batch's partitions moved, or the process is stopping.

Errors are told apart by type (:mod:`regionguard.core.errors`), never by
message: :class:`RegionUnavailable` takes the region out, any other
:class:`RegionGuardError` is retried with backoff on the same batch (a
:class:`~regionguard.core.errors.MissingPrivilege` is also reported as a failed
passive observation: a grant is missing, no row is at fault).

Every path on which the transaction may have committed (it did, or the
connection died or was cancelled with the COMMIT perhaps already at the server)
marks the batch's offsets *possibly applied* (:class:`Uncertain`): such a
record is never dead-lettered blind as shed or expired later, only held for
the replayer to look up in the inbox (``rg-verify``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from ..core import lag
from ..core import metrics as m
from ..core.batch import count_applied
from ..core.config import Config
from ..core.db import ApplyResult, Plan, RegionDB
from ..core.errors import BadWrite, MissingPrivilege, RegionGuardError, RegionUnavailable
from ..core.rowcache import RowCache
from ..core.writes import Record
from .region import RegionShare
from .sort import Routed
from .uncertain import Uncertain

log = logging.getLogger(__name__)


class Revoked(Exception):
    """The partitions of the batch in hand were taken away by a rebalance (or the lane is stopping)."""


class _OpenedMidBatch(Exception):
    """The region was declared open while its batch was being applied."""


class DirectApply:
    def __init__(self, cfg: Config, region: str, *, db: RegionDB, share: RegionShare,
                 view_closed: Callable[[str], bool], uncertain: Uncertain, cache: RowCache | None) -> None:
        self.cfg, self.region, self.db, self.share = cfg, region, db, share
        self.view_closed = view_closed
        self.uncertain = uncertain
        self.cache = cache
        self.backoff = cfg.router.retry_initial_s  # transient DB errors of this lane
        self.careful = False  # the last batch applied was redone in pieces (a row failed a statement)

    async def run(self, direct: list[Routed], dead: list[tuple[Record, BadWrite, str | None]], plan: Plan | None,
                  *, still_ours: Callable[[], bool], pause: Callable[[float], Awaitable[None]],
                  stopping: Callable[[], bool]) -> list[Routed]:
        """Apply ``direct`` in one transaction; failed writes are appended to ``dead``.

        Returns the writes to hold instead (all of them, or none).
        """
        writes = plan.writes if plan is not None else [w for _, w in direct]
        while True:
            if not still_ours():
                raise Revoked()
            if not self.share.is_closed(self.region):
                return direct
            t0 = time.perf_counter()
            try:
                res = await self.apply_watched(writes, plan)
            except _OpenedMidBatch:
                self.uncertain.mark(direct)  # cancelled mid-flight: its COMMIT may have gone through
                log.warning("region %s opened while a batch was in flight; holding it", self.region)
                continue
            except RegionUnavailable as err:
                self.uncertain.mark(direct)  # the connection died, perhaps after COMMIT reached the server
                self.share.mark_down(err)
                continue
            except RegionGuardError as err:
                if not err.retriable:
                    raise  # about the writes, not the region: the lane isolates the record (worker.py)
                m.APPLY_ERRORS.labels(self.region, getattr(err, "kind", type(err).__name__)).inc()
                if isinstance(err, MissingPrivilege):
                    self.share.observe_failure(err.kind)  # against the breaker: an operator must grant
                log.warning("region %s: %s; retrying in %.2fs", self.region, err, self.backoff)
                await pause(self.backoff)
                self.backoff = min(self.backoff * 2, self.cfg.router.retry_max_s)
                if stopping():
                    raise Revoked()  # shutting down: abandon the batch uncommitted
                continue
            break
        self.backoff = self.cfg.router.retry_initial_s
        self.uncertain.mark(direct)  # applied, offsets not committed yet: read again, possibly applied
        if self.cache is not None:
            await self.cache.write(self.region, res.rows)
        self._count(res, direct, dead, seconds=time.perf_counter() - t0)
        return []

    def _count(self, res: ApplyResult, direct: list[Routed], dead: list, *, seconds: float) -> None:
        self.careful = res.careful
        for i, err in res.failed:
            rec, w = direct[i]
            dead.append((rec, err, str(w.id)))
            if w.ops is not None:
                m.GROUPS.labels(self.region, "router", "dead_lettered").inc()
        count_applied(self.region, "router", res, seconds=seconds)
        failed = {i for i, _ in res.failed}
        lag.observe(self.region, "direct", (rec for i, (rec, _) in enumerate(direct) if i not in failed))
        if res.duplicates:
            log.info("region %s: skipped %d duplicate write(s) already applied", self.region, res.duplicates)

    async def apply_watched(self, writes: list, plan: Plan | None = None) -> ApplyResult:
        """Apply, but give up as soon as the health service opens the region.

        A blackholed database would otherwise hold the batch until the
        statement timeout; the inbox makes a later replay of a batch that did
        commit after all harmless. (The test kit's commit-window crash test
        patches this method: :mod:`regionguard_testkit.embedded.stall`.)
        """
        task = asyncio.ensure_future(self.db.apply(writes, source="router", want_rows=self.cache is not None,
                                                   plan=plan))
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.05)
            if done:
                return task.result()
            if not self.view_closed(self.region):
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, RegionGuardError):
                    pass
                raise _OpenedMidBatch()
