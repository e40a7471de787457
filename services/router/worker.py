"""One lane of one region's router: consume ``rg.writes.<region>``, apply or hold, commit.

Each region has its own consumers, pool and tasks (a bulkhead): a slow or dead
region never slows the others. A region is served by ``router.lanes`` lanes,
each a member of the region's consumer group, so each owns a share of the
partitions and applies on its own connection: PostgreSQL works on one lane's
batch while Python decodes and plans another's (measured: one lane left both
the router and PostgreSQL half idle, waiting on each other). A key lives in
one partition, so per-key order is still one lane's order. What the lanes of
a region share (passive health, the hold summary) is in ``region.py``.

A batch goes through three steps, and the source offsets are committed only
after all of them are durable:

1. direct writes: one DB transaction (inbox dedup, per-key order, savepoints);
2. held writes: produced to ``rg.held.<region>`` on the same partition;
3. bad writes: produced to ``rg.dead-letter`` with a reason.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Callable

from confluent_kafka import KafkaException, Producer, TopicPartition

from ..core import metrics as m
from ..core import publish
from ..core.config import Config
from ..core.db import Plan, RegionDB, plan_writes
from ..core.errors import BadWrite, RegionGuardError, RegionUnavailable
from ..core.kafka import (Confirmer, KafkaDeliveryError, make_consumer, replayer_group, router_group,
                          watermarks_exact)
from ..core.held import (H_APPLIED_IN, H_FENCE, H_HELD_AT, H_REASON, H_SOURCE_OFFSET, H_SOURCE_PARTITION,
                         H_SOURCE_TOPIC, H_VERIFY)
from ..core.rowcache import RowCache
from ..core.readahead import ReadAhead
from ..core.supervise import swallowed
from ..core.models import DeadReason, WriteEvent
from ..core.writes import Record, decode_write
from . import decide, fences
from .decide import Route
from .modes import Action, Mode, PartitionModes
from .region import RegionShare

log = logging.getLogger(__name__)

#: Records past tansu's high watermark that still count as possibly applied by an earlier owner:
#: its watermark is the last batch's base offset + 1, and a producer batch holds thousands of writes.
INEXACT_MARGIN = 100_000

#: Seconds before a held range found to hold records to replay is read again (the replayer
#: normally moves first; reading again covers a read that failed or timed out).
RESCAN_S = 5.0

#: An offset above any real one: "every record of the partition may have been applied already".
ALL_OFFSETS = 1 << 62


class _OpenedMidBatch(Exception):
    """The region was declared open while its batch was being applied."""


class Revoked(Exception):
    """The partitions of the batch in hand were taken away by a rebalance."""


class RegionWorker:
    def __init__(
        self, cfg: Config, region: str, *, dbs: dict[str, RegionDB], producer: Producer,
        is_closed: Callable[[str], bool], instance: str, share: RegionShare, lane: int = 0,
        cache: RowCache | None = None,
    ) -> None:
        self.cfg, self.region, self.dbs, self.producer = cfg, region, dbs, producer
        self.db = dbs[region]
        self.view_closed = is_closed
        self.share = share
        self.lane = lane
        self.instance = instance if cfg.router.lanes == 1 else f"{instance}/{lane}"
        self.cache = cache
        self.topic = cfg.topic("writes", region)
        self.held_topic = cfg.topic("held", region)
        self.modes = PartitionModes()
        self.paused: set[int] = set()          # paused for draining
        self.done: dict[int, int] = {}         # partition -> next offset to commit (its batch is settled)
        self.assignments = 0                   # on_assign calls so far (core/leave.py waits on them)
        self.backoff = cfg.router.retry_initial_s  # transient DB errors of this lane
        self.consumer = make_consumer(cfg, router_group(cfg, region), **{"queued.max.messages.kbytes": 4096})
        self.offsets_reader = make_consumer(cfg, replayer_group(cfg, region))
        self.reader = ReadAhead(self.consumer, topic=self.topic, batch_max=cfg.router.batch_max,
                                wait_s=cfg.router.batch_wait_ms / 1000, owned=lambda: list(self.modes.parts),
                                decode=lambda rec: decode_write(rec.value, region=region, cfg=cfg),
                                prepare=self._plan, name=self._name())
        self._last_drain_check = 0.0
        self.uncertain: dict[int, int] = {}    # partition -> offsets below may be applied already (earlier owner)
        self._exact: bool | None = None       # the broker's high watermarks are record positions
        # held partition -> (offsets, when) of the last read by _only_fences_left that found a record to replay
        self._scanned: dict[int, tuple[tuple[int, int], float]] = {}
        self.stats = {"applied": 0, "duplicates": 0, "stale": 0, "held": 0, "dead": 0, "failover": 0}

    # availability ----------------------------------------------------------
    def is_closed(self, region: str) -> bool:
        return self.share.is_closed(region)

    def _lane_tag(self) -> str:
        return f" (lane {self.lane})" if self.cfg.router.lanes > 1 else ""

    def _name(self) -> str:
        return f"router {self.region}{self._lane_tag()}"

    # rebalances -------------------------------------------------------------
    def _on_assign(self, consumer, parts) -> None:
        ps = [tp.partition for tp in parts]
        log.info("region %s: assigned partitions %s%s", self.region, ps, self._lane_tag())
        self.assignments += 1
        for p in ps:
            self.done.pop(p, None)  # a position settled in an earlier ownership is not ours to commit
        self.modes.assigned(ps)

    def _on_revoke(self, consumer, parts) -> None:
        ps = [tp.partition for tp in parts]
        log.info("region %s: revoked partitions %s%s", self.region, ps, self._lane_tag())
        # Batch commits are asynchronous; one still in flight when a partition moves would make the
        # new owner read the batch again (harmless for writes, the inbox skips them, but a dead letter
        # or held copy would be published twice). So hand over the settled position synchronously.
        settled = [TopicPartition(self.topic, p, self.done.pop(p)) for p in ps if p in self.done]
        if settled:
            try:
                consumer.commit(offsets=settled, asynchronous=False)
            except KafkaException as exc:
                log.warning("region %s: commit at revocation failed (%s); the new owner re-reads the last batch",
                            self.region, exc)
        self.modes.revoked(ps)
        for p in ps:
            self.uncertain.pop(p, None)
        self.paused.difference_update(ps)
        self.reader.invalidate()

    # main loop ----------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Apply batch after batch; the next one is read and decoded meanwhile (core/readahead.py)."""
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        self.reader.start(stop)
        try:
            while not stop.is_set():
                await self._housekeeping()
                item = await self.reader.get(0.05)
                if item is None:
                    continue
                gen, batch, decoded, plan = item
                if self.modes.pending_lookup():
                    # assigned while this batch was read: learn each new partition's mode (held topic
                    # empty or not) before routing it; a record of a partition still in mode ``new``
                    # would be diverted to the held topic, and the partition then stayed held until a
                    # replayer drained it (for good without one; seen in bench/takeover.py on Apache Kafka)
                    await self._housekeeping()
                try:
                    await self._process(batch, decoded, stop, gen, plan)
                except Revoked:
                    self.reader.invalidate()
                    log.info("region %s: batch abandoned; it will be read again", self.region)
        finally:
            self.reader.cancel()
            # the group consumer stays open: the service closes the region's lanes in turn (core/leave.py)

    def close(self) -> None:
        """Close what is ours alone (the group consumer is closed by :func:`leave_in_turn`)."""
        try:
            self.offsets_reader.close()
        except Exception as exc:  # noqa: BLE001 - shutting down goes on (reported)
            swallowed("router", exc, what=f"closing the held-offsets reader of {self.region}", logger=log)

    async def _housekeeping(self) -> None:
        # new partitions: is anything possibly pending in their held partition?
        for p in self.modes.pending_lookup():
            try:
                _low, high = await asyncio.to_thread(
                    self.consumer.get_watermark_offsets, TopicPartition(self.held_topic, p), 5.0, False)
            except KafkaException as exc:
                log.warning("region %s: held watermark lookup failed (%s); treating p%d as held", self.region, exc, p)
                high = 1
            self.modes.looked_up(p, high)
            self.uncertain[p] = await self._end_at_assignment(p)
            if p not in self.paused:  # a pause from an earlier ownership of p outlives the rebalance
                self.consumer.resume([TopicPartition(self.topic, p)])
        await self.share.probe_if_due()
        closed = self.is_closed(self.region)
        await self._do(self.modes.region_changed(closed))
        if closed:
            await self._do(self.modes.unfenced())
        if closed and self.modes.draining() and time.monotonic() - self._last_drain_check > 0.05:
            self._last_drain_check = time.monotonic()
            parts = [TopicPartition(self.held_topic, p) for p in self.modes.draining()]
            try:
                committed = await asyncio.to_thread(self.offsets_reader.committed, parts, 5.0)
            except KafkaException as exc:
                log.warning("region %s: replayer offsets lookup failed: %s", self.region, exc)
                committed = []
            switching = []
            for tp in committed:
                off = tp.offset if tp.offset is not None and tp.offset >= 0 else None
                moved = self.modes.replayer_progress(tp.partition, off)
                switching += moved or await self._only_fences_left(tp.partition, off)
            if switching:
                await self._do(switching)
                # a partition paused since it was assigned would start fetching ~0.5 s late
                await self.reader.seek_unread([p for _, p in switching if p in self.modes.parts])
        counts = self.modes.counts()
        self.share.report(self.lane, counts["held"] + counts["draining"], counts["direct"])

    async def _end_at_assignment(self, p: int) -> int:
        """The first offset of ``writes[p]`` that no earlier owner of p can have read.

        Below it, a record may have been applied by an owner that crashed (or was revoked)
        before committing; one the router would dead-letter as shed or expired is held for
        the replayer to check instead (H_VERIFY). On a broker whose high watermark is
        not a record position (tansu) a margin covers the gap: a fresh record taken for
        uncertain only reaches its dead letter later, through the replayer.
        """
        try:
            if self._exact is None:
                md = await asyncio.to_thread(self.consumer.list_topics, self.topic, 5.0)
                self._exact = watermarks_exact(md.cluster_id)
            _low, high = await asyncio.to_thread(
                self.consumer.get_watermark_offsets, TopicPartition(self.topic, p), 5.0, False)
        except KafkaException as exc:
            log.warning("region %s: watermark lookup of p%d failed (%s); all of it counts as possibly applied",
                        self.region, p, exc)
            return ALL_OFFSETS
        return high if self._exact else high + INEXACT_MARGIN

    async def _only_fences_left(self, p: int, committed: int | None) -> list[tuple[Action, int]]:
        """Direct without the replayer when all it has left to step over in held[p] is fences (fences.py)."""
        rng = self.modes.unreplayed(p, committed)
        if rng is None:
            return []
        seen = self._scanned.get(p)
        if seen is not None and seen[0] == rng and time.monotonic() - seen[1] < RESCAN_S:
            return []  # read lately, and it was not only fences: the replayer has work there
        # offsets_reader is never subscribed and never commits, so it can read by assignment
        ok = await asyncio.to_thread(fences.only_fences, self.offsets_reader, self.held_topic, p, *rng)
        if not ok:
            log.debug("region %s: held p%d has records to replay in %s", self.region, p, rng)
            self._scanned[p] = (rng, time.monotonic())
            return []
        # a rebalance during the read may have reset p (then the scan proves nothing: read again later)
        actions = self.modes.only_fences_left(p, *rng)
        log.info("region %s: held p%d has only fences left past the replayer's offset %d%s", self.region, p,
                 rng[0], "" if actions else " (but p changed meanwhile)")
        return actions

    async def _do(self, actions: list[tuple[Action, int]]) -> None:
        confirm = Confirmer()
        fenced: list[int] = []
        for action, p in actions:
            tp = [TopicPartition(self.topic, p)]
            if action is Action.pause:
                self.consumer.pause(tp)
                self.paused.add(p)
            elif action is Action.resume:
                if p in self.paused:
                    self.consumer.resume(tp)
                    self.paused.discard(p)
                if self.modes.parts.get(p) and self.modes.mode(p) is Mode.direct:
                    log.info("region %s: partition %d back in direct mode", self.region, p)
            elif action is Action.fence:
                confirm.produce(self.producer, self.held_topic, None, key=b"fence", partition=p,
                                headers=[(H_FENCE, self.instance.encode())])
                fenced.append(p)
        if not fenced:
            return
        try:
            # in a thread: a slow broker answer must not stall the other regions' lanes on this loop
            await asyncio.to_thread(confirm.wait, self.producer, 10)
        except KafkaDeliveryError as exc:
            # they stay draining and paused; housekeeping fences them again (PartitionModes.unfenced)
            log.warning("region %s: fences on %s not confirmed: %s", self.region, fenced, exc)
            return
        for p in fenced:
            off = confirm.offsets.get((self.held_topic, p))
            if off is not None:
                self.modes.held_confirmed(p, off)

    # one batch ---------------------------------------------------------------------
    def _plan(self, batch: list[Record], decoded: list) -> Plan | None:
        """Group the batch into statements ahead of time, for the common case: all valid, all direct."""
        if not self.db.ready or any(isinstance(w, BadWrite) for w in decoded):
            return None
        try:
            return plan_writes(self.db.schemas, decoded, want_rows=self.cache is not None)
        except RegionGuardError:
            return None  # e.g. a table missing in the region: the apply path reports it

    async def _process(self, batch: list[Record], decoded: list, stop: asyncio.Event, epoch: int,
                       plan: Plan | None = None) -> None:
        now = datetime.now(timezone.utc)
        direct: list[tuple[Record, WriteEvent]] = []
        held: list[tuple[Record, WriteEvent]] = []
        dead: list[tuple[Record, BadWrite, str | None]] = []
        region_closed = self.is_closed(self.region)
        deferred: set[int] = set()  # draining partitions: their records are read again once direct
        for rec, w in zip(batch, decoded):
            if rec.partition not in self.modes.parts:
                continue  # revoked while we held it; the new owner gets it
            mode = self.modes.mode(rec.partition)
            if mode is Mode.new or (region_closed and mode is Mode.draining):
                # fetched before its pause took effect (just assigned, or the region just closed), or
                # revoked and assigned back while the batch was read: held now, it would become a backlog
                # only a replayer can clear
                deferred.add(rec.partition)
                continue
            if isinstance(w, BadWrite):
                dead.append((rec, w, None))
            elif region_closed and self.modes.mode(rec.partition) is Mode.direct:
                direct.append((rec, w))
            else:
                self.modes.divert(rec.partition)
                held.append((rec, w))

        if direct:
            if plan is not None and (len(direct) != len(decoded) or deferred):
                plan = None  # planned for every record going direct; this batch is split
            moved = await self._apply_direct(direct, dead, stop, epoch, plan)
            held = self._merge_in_order(moved, held)
        if self.reader.gen != epoch:
            raise Revoked()  # a rebalance during the apply: the new owner (maybe us) reads the rest again
        out = Outbox()
        if held:
            await self._divert(held, dead, out, now)
        for rec, err, wid in dead:
            out.dead_letter(self.cfg, rec, err, region=self.region, write_id=wid)
            m.DEAD_LETTERS.labels(self.region, err.reason.value).inc()
            self.stats["dead"] += 1
        offsets = await self._confirm(out, stop, epoch)
        for (topic, p), off in offsets.items():
            if topic == self.held_topic:
                self.modes.held_confirmed(p, off)
        self._commit(batch, epoch, skip=deferred)
        if deferred:
            await self._read_again(deferred)

    async def _read_again(self, deferred: set[int]) -> None:
        """Leave the deferred partitions' records unread: settle the other commits, then read from them."""
        settled = [TopicPartition(self.topic, p, o) for p, o in self.done.items() if p not in deferred]
        if settled:
            try:  # synchronously: the re-read starts from the commits, which must include this batch
                await asyncio.to_thread(self.consumer.commit, offsets=settled, asynchronous=False)
            except KafkaException as exc:
                log.warning("region %s: commit before a re-read failed (%s); records may be read twice",
                            self.region, exc)
        log.info("region %s: p%s fetched while draining; read again once direct", self.region,
                 ",".join(map(str, sorted(deferred))))
        self.reader.invalidate()

    @staticmethod
    def _merge_in_order(moved, held):
        if not moved:
            return held
        return sorted(moved + held, key=lambda rw: (rw[0].partition, rw[0].offset))

    async def _apply_direct(self, direct, dead, stop, epoch, plan: Plan | None = None) -> list:
        """Apply in one transaction, retrying transient errors; returns writes to hold instead."""
        writes = plan.writes if plan is not None else [w for _, w in direct]
        while True:
            if self.reader.gen != epoch:
                raise Revoked()
            if not self.is_closed(self.region):
                for rec, _ in direct:
                    self.modes.divert(rec.partition)
                return direct
            t0 = time.perf_counter()
            try:
                res = await self._apply_watched(writes, plan)
            except _OpenedMidBatch:
                self._possibly_applied(direct)  # cancelled mid-flight: its COMMIT may have gone through
                log.warning("region %s opened while a batch was in flight; holding it", self.region)
                continue
            except RegionUnavailable as err:
                self._possibly_applied(direct)  # the connection died, perhaps after COMMIT reached the server
                self.share.mark_down(err)
                continue
            except RegionGuardError as err:
                kind = getattr(err, "kind", type(err).__name__)
                m.APPLY_ERRORS.labels(self.region, kind).inc()
                log.warning("region %s: %s; retrying in %.2fs", self.region, err, self.backoff)
                await self._wait(self.backoff, stop)
                self.backoff = min(self.backoff * 2, self.cfg.router.retry_max_s)
                if stop.is_set():
                    raise Revoked()  # shutting down: abandon the batch uncommitted
                continue
            break
        self.backoff = self.cfg.router.retry_initial_s
        self._possibly_applied(direct)  # applied, offsets not committed yet: read again, possibly applied
        if self.cache is not None:
            await self.cache.write(self.region, res.rows)
        m.BATCH_SECONDS.labels(self.region, "router").observe(time.perf_counter() - t0)
        for i, err in res.failed:
            rec, w = direct[i]
            dead.append((rec, err, str(w.id)))
            if w.ops is not None:
                m.GROUPS.labels(self.region, "router", "dead_lettered").inc()
        if res.groups:
            m.GROUPS.labels(self.region, "router", "applied").inc(res.groups)
        m.APPLIED.labels(self.region, "router").inc(res.applied)
        m.DUPLICATES.labels(self.region, "router").inc(res.duplicates)
        m.STALE.labels(self.region, "router").inc(res.stale)
        self.stats["applied"] += res.applied
        self.stats["duplicates"] += res.duplicates
        self.stats["stale"] += res.stale
        if res.duplicates:
            log.info("region %s: skipped %d duplicate write(s) already applied", self.region, res.duplicates)
        return []

    def _possibly_applied(self, direct) -> None:
        """These records may be applied in the region: one the router would shed or expire is held
        for the replayer to check in the inbox instead (``rg-verify``), never dead-lettered blind."""
        for rec, _ in direct:
            if rec.offset >= self.uncertain.get(rec.partition, 0):
                self.uncertain[rec.partition] = rec.offset + 1

    async def _apply_watched(self, writes, plan: Plan | None = None):
        """Apply, but give up as soon as the health service opens the region.

        A blackholed database would otherwise hold the batch until the
        statement timeout; the inbox makes a later replay of a batch that did
        commit after all harmless.
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

    async def _divert(self, held, dead, out: "Outbox", now: datetime) -> None:
        failover: dict[str, list[tuple[Record, WriteEvent]]] = {}
        plain: list[tuple[Record, WriteEvent, str | None]] = []
        verify: dict[int, Route] = {}  # id(rec) -> the dead letter the replayer gives it unless applied
        refused: dict[str, list] = {}  # fallback region -> failover writes its residency refused
        for rec, w in held:
            route, fb = decide.route_held(w, now=now, is_closed=self.is_closed, allowed=self.cfg.allowed_in)
            if route in decide.DEAD_ROUTES and rec.offset < self.uncertain.get(rec.partition, ALL_OFFSETS):
                verify[id(rec)] = route
                plain.append((rec, w, None))
            elif route is Route.expired:
                dead.append((rec, BadWrite(DeadReason.expired, f"expired at {w.expires_at.isoformat()}"), str(w.id)))
            elif route is Route.shed:
                dead.append((rec, BadWrite(DeadReason.shed, f"region {self.region} unavailable; policy shed"), str(w.id)))
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
        applied_in: dict[int, str] = {}
        for fb, items in failover.items():
            try:
                res = await self.dbs[fb].apply([w for _, w in items], source=f"failover:{self.region}",
                                               want_rows=self.cache is not None)
            except RegionGuardError as err:
                log.warning("region %s: failover apply in %s failed (%s); holding only", self.region, fb, err)
                continue
            if self.cache is not None:
                await self.cache.write(fb, res.rows)
            failed = {i for i, _ in res.failed}
            for i, (rec, _) in enumerate(items):
                if i not in failed:
                    applied_in[id(rec)] = fb
            m.FAILOVER_APPLIED.labels(self.region, fb).inc(len(items) - len(failed))
            if res.groups:
                m.GROUPS.labels(self.region, "router", "failover_applied").inc(res.groups)
            self.stats["failover"] += len(items) - len(failed)
        held_at = now.isoformat().encode()
        reason = (self.share.down_kind or "region_not_closed").encode()
        for rec, w, fb in plain:
            headers = [
                (H_REASON, reason),
                (H_HELD_AT, held_at),
                (H_SOURCE_TOPIC, rec.topic.encode()),
                (H_SOURCE_PARTITION, str(rec.partition).encode()),
                (H_SOURCE_OFFSET, str(rec.offset).encode()),
            ]
            if id(rec) in applied_in:
                headers.append((H_APPLIED_IN, applied_in[id(rec)].encode()))
            if id(rec) in verify:
                headers.append((H_VERIFY, verify[id(rec)].value.encode()))
            out.items.append((self.held_topic, rec.key, rec.value, rec.partition, headers))
            m.HELD.labels(self.region, "failover" if fb else "hold").inc()
            if w.ops is not None:
                m.GROUPS.labels(self.region, "router", "held").inc()
            self.stats["held"] += 1

    async def _confirm(self, out: "Outbox", stop: asyncio.Event, epoch: int) -> dict:
        """Produce held records and dead letters until every one is acknowledged."""
        delay = self.cfg.router.retry_initial_s
        while True:
            if not out.items:
                return {}
            confirmer = Confirmer()
            for topic, key, value, partition, headers in out.items:
                confirmer.produce(self.producer, topic, value, key=key, partition=partition, headers=headers)
            try:
                await asyncio.to_thread(confirmer.wait, self.producer, 30.0)
                return confirmer.offsets
            except KafkaDeliveryError as exc:
                # some records may now be in Kafka twice; the inbox makes that harmless
                log.warning("region %s: %s; producing again in %.2fs", self.region, exc, delay)
                await self._wait(delay, stop)
                delay = min(delay * 2, self.cfg.router.retry_max_s)
                if stop.is_set() or self.reader.gen != epoch:
                    raise Revoked() from exc

    def _commit(self, batch: list[Record], epoch: int, skip: set[int] = frozenset()) -> None:
        if self.reader.gen != epoch:
            raise Revoked()
        last: dict[int, int] = {}
        for rec in batch:
            if rec.partition in self.modes.parts and rec.partition not in skip:
                last[rec.partition] = max(last.get(rec.partition, -1), rec.offset)
        if not last:
            return
        for p, o in last.items():
            self.done[p] = o + 1
        try:
            # asynchronous: commits go out in order and a lost one only means a redelivery
            # that the inbox skips; waiting for it would stall the loop on every batch
            self.consumer.commit(offsets=[TopicPartition(self.topic, p, o + 1) for p, o in last.items()],
                                 asynchronous=True)
        except KafkaException as exc:
            # redelivery is safe: the inbox skips what was applied
            log.warning("region %s: offset commit failed (%s); records will be redelivered", self.region, exc)

    def _owned_unpaused(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in self.modes.parts if p not in self.paused]

    async def _wait(self, seconds: float, stop: asyncio.Event) -> None:
        """Sleep without falling out of the consumer group.

        The owned partitions are paused meanwhile -- also ones a rebalance assigns during the wait --
        and every owned one is resumed at the end: a pause outlives a rebalance, so a partition
        revoked and assigned back while waiting would otherwise stay paused for good. A record
        polled anyway is read again from its partition's commit, never dropped.
        """
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end and not stop.is_set():
                owned = self._owned_unpaused()
                if owned:
                    self.consumer.pause(owned)
                msg = self.consumer.poll(0)  # serves rebalance callbacks
                if msg is not None and msg.error() is None:
                    self.reader.invalidate()
                await asyncio.sleep(min(0.05, max(0.0, end - time.monotonic())))
        finally:
            owned = self._owned_unpaused()
            if owned:
                self.consumer.resume(owned)


class Outbox:
    """Records to produce for one batch; kept so a failed delivery can be redone whole."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes | None, bytes | None, int | None, list | None]] = []

    def dead_letter(self, cfg: Config, rec: Record, err: BadWrite, *, region: str, write_id: str | None) -> None:
        value = publish.dead_letter_value(rec, err, region=region, write_id=write_id)
        self.items.append((cfg.topic("dead-letter"), rec.key, value, None, None))
