"""The router's divert stage: what happens to the writes of a batch that do not go direct.

Each write is routed by :func:`.decide.route_held` (pure): held for its home
region, applied in a permitted fallback region and held too (policy
``failover``), refused a fallback by residency and held, or dead-lettered
(``shed``, ``expired``; but an expired failover write that an earlier owner
of its partition applied in a fallback is held for sync-back instead: only a
write applied nowhere expires). This stage does the I/O those routes need --
the failover transactions, that lookup -- and puts the held copies and dead
letters in the batch's :class:`~regionguard.core.outbox.Outbox`.

A held copy keeps the record's exact key and bytes on the same partition of
``rg.held.<region>``, with :mod:`regionguard.core.held` headers saying where
it came from, whether it was applied elsewhere, and (``rg-verify``) that it
may already be applied at home, so the replayer asks the inbox before it
dead-letters it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from ..core import metrics as m
from ..core.config import Config
from ..core.db import RegionDB
from ..core.errors import BadWrite, RegionGuardError
from ..core import lag
from ..core.held import (
    H_APPLIED_IN, H_HELD_AT, H_REASON, H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TIMESTAMP, H_SOURCE_TOPIC,
    H_VERIFY,
)
from ..core.models import DeadReason, Policy
from ..core.outbox import Outbox
from ..core.rowcache import RowCache
from ..core.writes import Record
from . import decide
from .uncertain import Uncertain
from .decide import Route
from .region import RegionShare
from .sort import Routed

log = logging.getLogger(__name__)


class Divert:
    def __init__(self, cfg: Config, region: str, *, dbs: dict[str, RegionDB], share: RegionShare,
                 uncertain: Uncertain, cache: RowCache | None) -> None:
        self.cfg, self.region, self.dbs, self.share = cfg, region, dbs, share
        self.uncertain = uncertain
        self.cache = cache
        self.held_topic = cfg.topic("held", region)

    async def run(self, held: list[Routed], dead: list[tuple[Record, BadWrite, str | None]], out: Outbox,
                  now: datetime) -> None:
        """Route ``held``: held copies go to ``out``, dead ends to ``dead``."""
        routes = [(rec, w, *decide.route_held(w, now=now, is_closed=self.share.is_closed,
                                              allowed=self.cfg.allowed_in)) for rec, w in held]
        # id(rec) -> the fallback that has it: only a write applied nowhere may expire
        applied_in = await self._applied_elsewhere(
            [(rec, w) for rec, w, route, _ in routes
             if route is Route.expired and w.policy is Policy.failover and self.uncertain.covers(rec)])
        failover: dict[str, list[Routed]] = {}
        plain: list[tuple[Record, object, str | None]] = []
        verify: dict[int, Route] = {}  # id(rec) -> the dead letter the replayer gives it unless applied
        refused: dict[str, list] = {}  # fallback region -> failover writes its residency refused
        for rec, w, route, fb in routes:
            if id(rec) in applied_in:
                plain.append((rec, w, applied_in[id(rec)]))  # held for sync-back, as when applied just now
            elif route in decide.DEAD_ROUTES and self.uncertain.covers(rec):
                verify[id(rec)] = route
                plain.append((rec, w, None))
            elif route is Route.expired:
                dead.append((rec, BadWrite(DeadReason.expired, f"expired at {w.expires_at.isoformat()}"), str(w.id)))
            elif route is Route.shed:
                dead.append((rec, BadWrite(DeadReason.shed, f"region {self.region} unavailable; policy shed"),
                             str(w.id)))
            elif route is Route.failover:
                failover.setdefault(fb, []).append((rec, w))
                plain.append((rec, w, fb))
            elif route is Route.residency:
                refused.setdefault(fb, []).append(w)
                plain.append((rec, w, None))
            else:
                plain.append((rec, w, None))
        if refused:
            self.share.residency_held(refused)
            m.HELD_RESIDENCY.labels(self.region).inc(sum(len(ws) for ws in refused.values()))
        for fb, items in failover.items():
            applied_in.update(await self._failover(fb, items))
        self._hold(plain, applied_in, verify, out, now)

    async def _applied_elsewhere(self, items: list[Routed]) -> dict[int, str]:
        """id(rec) -> the fallback region whose inbox has the write, for expired failover writes.

        An earlier owner of the partition may have applied such a write in a fallback and died
        before it held the copy for home (or committed its offset): dead-lettered now as
        ``expired``, home would never converge with that fallback. Only closed fallbacks that
        residency permits are asked (where the write could have gone); one that cannot answer
        leaves the write to the usual rule (held with ``rg-verify``, dead-lettered unless home has it).
        """
        asks: dict[str, list[Routed]] = {}
        for rec, w in items:
            for fb in decide.permitted_fallbacks(w, self.cfg.allowed_in):
                if self.share.is_closed(fb):
                    asks.setdefault(fb, []).append((rec, w))
        found: dict[int, str] = {}
        for fb, routed in asks.items():
            routed = [(rec, w) for rec, w in routed if id(rec) not in found]
            if not routed:
                continue
            try:
                have = await self.dbs[fb].applied([str(w.id) for _, w in routed])
            except RegionGuardError as err:
                log.warning("region %s: could not ask %s which expired failover writes it applied (%s)",
                            self.region, fb, err)
                continue
            found.update((id(rec), fb) for rec, w in routed if str(w.id) in have)
        return found

    async def _failover(self, fb: str, items: list[Routed]) -> dict[int, str]:
        """Apply failover writes in fallback ``fb``; id(rec) -> ``fb`` for those applied there."""
        try:
            res = await self.dbs[fb].apply([w for _, w in items], source=f"failover:{self.region}",
                                           want_rows=self.cache is not None)
        except RegionGuardError as err:
            log.warning("region %s: failover apply in %s failed (%s); holding only", self.region, fb, err)
            return {}
        if self.cache is not None:
            await self.cache.write(fb, res.rows)
        failed = {i for i, _ in res.failed}
        m.FAILOVER_APPLIED.labels(self.region, fb).inc(len(items) - len(failed))
        lag.observe(self.region, "failover", (rec for i, (rec, _) in enumerate(items) if i not in failed))
        if res.groups:
            m.GROUPS.labels(self.region, "router", "failover_applied").inc(res.groups)
        return {id(rec): fb for i, (rec, _) in enumerate(items) if i not in failed}

    def _hold(self, plain, applied_in: dict[int, str], verify: dict[int, Route], out: Outbox, now: datetime) -> None:
        held_at = now.isoformat().encode()
        reason = (self.share.down_kind or "region_not_closed").encode()
        for rec, w, fb in plain:
            headers = [
                *rec.carried_headers(),  # the producer's (a traceparent among them): ours go beside them
                (H_REASON, reason),
                (H_HELD_AT, held_at),
                (H_SOURCE_TOPIC, rec.topic.encode()),
                (H_SOURCE_PARTITION, str(rec.partition).encode()),
                (H_SOURCE_OFFSET, str(rec.offset).encode()),
            ]
            if (ts := lag.source_timestamp_ms(rec)) is not None:
                headers.append((H_SOURCE_TIMESTAMP, str(ts).encode()))
            if id(rec) in applied_in:
                headers.append((H_APPLIED_IN, applied_in[id(rec)].encode()))
            if id(rec) in verify:
                headers.append((H_VERIFY, verify[id(rec)].value.encode()))
            out.add(self.held_topic, rec.key, rec.value, rec.partition, headers, source=rec, write_id=str(w.id))
            m.HELD.labels(self.region, "failover" if fb else "hold").inc()
            if w.ops is not None:
                m.GROUPS.labels(self.region, "router", "held").inc()
