"""One lane of one region's router: consume ``rg.writes.<region>``, apply or hold, commit.

Each region has its own consumers, pool and tasks (a bulkhead): a slow or dead
region never slows the others. A region is served by ``router.lanes`` lanes,
each a member of the region's consumer group, so each owns a share of the
partitions and applies on its own connection: PostgreSQL works on one lane's
batch while Python decodes and plans another's (measured: one lane left both
the router and PostgreSQL half idle, waiting on each other). A key lives in
one partition, so per-key order is still one lane's order. What the lanes of
a region share (passive health, the hold summary) is in ``region.py``.

A batch goes through named stages, each in its own module; the lane only
wires them together and owns the consumer:

1. **read and decode** ahead of time (:mod:`regionguard.core.readahead`,
   :mod:`regionguard.core.writes`), **plan** too when every record is valid
   (:func:`regionguard.core.batch.plan_ahead`);
2. **sort** (:mod:`.sort`, pure): direct, held, dead or read again, from the
   partition modes (:mod:`.modes`, pure);
3. **apply** the direct writes in one transaction (:mod:`.apply`);
4. **divert** the rest: held copies, failover applies, dead letters (:mod:`.divert`);
5. **deliver** held copies and dead letters until Kafka has them (:mod:`regionguard.core.outbox`);
6. **commit** the source offsets (here), only after all of the above is durable;
   sent at most ten times a second (:mod:`.commits`).

Between batches :mod:`.switch` drives the fence-and-switch of the partition modes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Callable

from confluent_kafka import KafkaException, Producer, TopicPartition

from ..core.batch import next_batch_max, next_offsets, plan_ahead, process_isolating
from ..core.config import Config
from ..core.db import Plan, RegionDB
from ..core.guardlane import LaneGuard, commit_offset
from ..core.groupsession import client_timeouts
from ..core.kafka import make_consumer, replayer_group, router_group
from ..core.outbox import GiveUp, Outbox, deliver
from ..core.readahead import ReadAhead
from ..core.tracing import batch_span
from ..core.rowcache import RowCache
from ..core.errors import BadWrite
from ..core.models import DeadReason
from ..core.sizes import Limits, default_limits, too_large
from ..core.supervise import describe, swallowed
from ..core.writes import Record, decode_write
from .apply import DirectApply, Revoked
from .commits import CommitPacer
from .uncertain import Uncertain
from .divert import Divert
from .handled import Handled, mark_headers
from .modes import PartitionModes
from .region import RegionShare
from .sort import merge_in_order, sort_batch
from .switch import Switch

log = logging.getLogger(__name__)

__all__ = ["RegionWorker", "Revoked"]


class RegionWorker:
    def __init__(
        self, cfg: Config, region: str, *, dbs: dict[str, RegionDB], producer: Producer,
        is_closed: Callable[[str], bool], instance: str, share: RegionShare, lane: int = 0,
        cache: RowCache | None = None, limits: Limits | None = None, group: dict | None = None,
    ) -> None:
        """``group``: the group consumer's session settings (core/groupsession.py)."""
        self.cfg, self.region, self.dbs, self.producer = cfg, region, dbs, producer
        self.limits = limits or default_limits(cfg)
        self.db = dbs[region]
        self.share = share
        self.lane = lane
        self.instance = instance if cfg.router.lanes == 1 else f"{instance}/{lane}"
        self.cache = cache
        self.topic = cfg.topic("writes", region)
        self.modes = PartitionModes()
        self.paused: set[int] = set()          # paused for draining
        self.done: dict[int, int] = {}         # partition -> next offset to commit (its batch is settled)
        self.assignments = 0                   # on_assign calls so far (core/leave.py waits on them)
        self.pacer = CommitPacer()             # settled offsets not sent to the coordinator yet
        self.uncertain = Uncertain()
        self.handled = Handled()
        self.consumer = make_consumer(cfg, router_group(cfg, region), region=region,
                                      **{"queued.max.messages.kbytes": 4096, **(group or {})})
        self.offsets_reader = make_consumer(cfg, replayer_group(cfg, region), region=region, **client_timeouts(group))
        self.guard = LaneGuard(self.consumer, topic=self.topic, batch_max=cfg.router.batch_max,
                               service="router", name=self._name())
        self.reader = ReadAhead(self.consumer, topic=self.topic, batch_max=cfg.router.batch_max,
                                wait_s=cfg.router.batch_wait_ms / 1000, owned=lambda: list(self.modes.parts),
                                decode=self._decode,
                                prepare=self._plan, name=self._name(), settled=lambda: self.done,
                                guard=self.guard)
        self.apply = DirectApply(cfg, region, db=self.db, share=share, view_closed=is_closed,
                                 uncertain=self.uncertain, cache=cache)
        self.divert = Divert(cfg, region, dbs=dbs, share=share, uncertain=self.uncertain, cache=cache)
        self.switch = Switch(cfg, region, consumer=self.consumer, offsets_reader=self.offsets_reader,
                             producer=producer, modes=self.modes, uncertain=self.uncertain, paused=self.paused,
                             share=share, reader=self.reader, instance=self.instance, lane=lane,
                             lane_tag=self._lane_tag, handled=self.handled)

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
            self.handled.revoked(p)  # learnt again with the partition's mode (switch.py)
        self.pacer.drop(ps)
        self.guard.assigned(ps)
        self.modes.assigned(ps)

    def _on_revoke(self, consumer, parts) -> None:
        ps = [tp.partition for tp in parts]
        log.info("region %s: revoked partitions %s%s", self.region, ps, self._lane_tag())
        # Batch commits are asynchronous; one still in flight when a partition moves would make the
        # new owner read the batch again (harmless for writes, the inbox skips them, but a dead letter
        # or held copy would be published twice). So hand over the settled position synchronously,
        # also where only the crash guard's start marker was committed: leaving is no death.
        settled = self.guard.handover(ps, {p: self.done.pop(p) for p in ps if p in self.done})
        self.pacer.drop(ps)
        self.guard.revoked(ps)
        if settled:
            try:
                consumer.commit(offsets=settled, asynchronous=False)
            except KafkaException as exc:
                log.warning("region %s: commit at revocation failed (%s); the new owner re-reads the last batch",
                            self.region, exc)
        self.modes.revoked(ps)
        for p in ps:
            self.uncertain.revoked(p)
            self.handled.revoked(p)
        self.paused.difference_update(ps)
        self.reader.invalidate()

    # main loop ----------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Apply batch after batch; the next one is read and decoded meanwhile (core/readahead.py)."""
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        self.reader.start(stop)
        clean = False
        try:
            while not stop.is_set():
                await self.switch.step()
                item = await self.reader.get(0.05)
                if item is None:
                    self._send_commits()  # idle: what the pacer held back goes now
                    continue
                gen, batch, decoded, plan = item
                if self.modes.pending_lookup():
                    # assigned while this batch was read: learn each new partition's mode (held topic
                    # empty or not) before routing it; a record of a partition still in mode ``new``
                    # would be diverted to the held topic, and the partition then stayed held until a
                    # replayer drained it (for good without one; seen in bench/takeover.py on Apache Kafka)
                    await self.switch.step()
                try:
                    with batch_span("router", self.region, batch):
                        await self._process_isolating(batch, decoded, stop, gen, plan)
                except Revoked:
                    self.reader.invalidate()
                    log.info("region %s: batch abandoned; it will be read again", self.region)
                finally:
                    self.guard.batch_done()
            clean = True
        finally:
            try:
                if clean:
                    await self._hand_over()
                else:
                    self.guard.crashed()  # an exception is a death: the crash guard's markers stay
                    self._send_commits(force=True)
            except Exception as exc:  # noqa: BLE001 - never hides why the lane stopped (reported)
                swallowed("router", exc, what=f"the last offset commit of {self.region}", logger=log)
            self.reader.cancel()
            # the group consumer stays open: the service closes the region's lanes in turn (core/leave.py)

    def close(self) -> None:
        """Close what is ours alone (the group consumer is closed by :func:`leave_in_turn`)."""
        try:
            self.offsets_reader.close()
        except Exception as exc:  # noqa: BLE001 - shutting down goes on (reported)
            swallowed("router", exc, what=f"closing the held-offsets reader of {self.region}", logger=log)

    # one batch ---------------------------------------------------------------------
    def _decode(self, rec: Record):
        """Checked for size first: a write over ``writes.max_bytes`` could not be held (core/sizes.py)."""
        return (too_large(rec.key, rec.value, self.limits.write(self.region))
                or decode_write(rec.value, region=self.region, cfg=self.cfg))

    def _plan(self, batch: list[Record], decoded: list) -> Plan | None:
        """Statements planned in the read-ahead, for the common case: all valid, all direct."""
        return plan_ahead(self.db, decoded, want_rows=self.cache is not None)

    async def _process_isolating(self, batch: list[Record], decoded: list, stop: asyncio.Event, epoch: int,
                                 plan: Plan | None = None) -> None:
        """:meth:`_process` under the rule for the unknown (core/batch.py ``process_isolating``)."""
        plans = iter([plan])  # planned for the whole batch: only the first pass may use it

        async def process(part: list[Record], part_decoded: list) -> None:
            await self._process(part, part_decoded, stop, epoch, next(plans, None))

        await process_isolating(process, lambda rec, err: self._poison(rec, err, stop, epoch), batch, decoded,
                                passes=(Revoked,), stopping=stop.is_set, stopped=lambda exc: Revoked(),
                                what=f"for {self.region}", service="router")

    async def _poison(self, rec: Record, exc: BaseException, stop: asyncio.Event, epoch: int) -> None:
        """Dead-letter one record that made a stage fail, then commit past it."""
        out = Outbox(self.cfg.topic("dead-letter"), self.region, self.limits.dead_letter_max)
        out.dead_letter(rec, BadWrite(DeadReason.poison, f"the router failed on it: {describe(exc)}"),
                        write_id=None)
        try:
            await deliver(self.producer, out, retry_s=self.cfg.router.retry_initial_s,
                          retry_max_s=self.cfg.router.retry_max_s, pause=lambda s: self._wait(s, stop),
                          still_ours=lambda: self.reader.gen == epoch and not stop.is_set())
        except GiveUp:
            raise Revoked() from None
        self._commit([rec], epoch)

    async def _process(self, batch: list[Record], decoded: list, stop: asyncio.Event, epoch: int,
                       plan: Plan | None = None) -> None:
        now = datetime.now(timezone.utc)
        still_ours = lambda: self.reader.gen == epoch  # noqa: E731 - no rebalance since the batch was read
        pause = lambda seconds: self._wait(seconds, stop)  # noqa: E731
        todo, todo_decoded = batch, decoded
        if self.handled.below:
            # an earlier owner held or dead-lettered these and died before its commit (handled.py)
            keep = [i for i, rec in enumerate(batch) if not self.handled.covers(rec)]
            if len(keep) < len(batch):
                todo, todo_decoded, plan = [batch[i] for i in keep], [decoded[i] for i in keep], None
        routes = sort_batch(todo, todo_decoded, self.modes, region_closed=self.share.is_closed(self.region))
        held, dead = routes.held, routes.dead
        if routes.direct:
            if plan is not None and (len(routes.direct) != len(decoded) or routes.deferred):
                plan = None  # planned for every record going direct; this batch is split
            moved = await self.apply.run(routes.direct, dead, plan, still_ours=still_ours, pause=pause,
                                         stopping=stop.is_set)
            if not moved:
                self.reader.batch_max = next_batch_max(self.reader.batch_max, self.cfg.router.batch_max,
                                                       careful=self.apply.careful)
            for rec, _ in moved:
                self.modes.divert(rec.partition)
            held = merge_in_order(moved, held)
        if not still_ours():
            raise Revoked()  # a rebalance during the apply: the new owner (maybe us) reads the rest again
        out = Outbox(self.cfg.topic("dead-letter"), self.region, self.limits.dead_letter_max)
        if held:
            await self.divert.run(held, dead, out, now)
        for rec, err, wid in dead:
            out.dead_letter(rec, err, write_id=wid)
        self._mark(todo, dead, out)
        try:
            offsets = await deliver(self.producer, out, retry_s=self.cfg.router.retry_initial_s,
                                    retry_max_s=self.cfg.router.retry_max_s, pause=pause,
                                    still_ours=lambda: still_ours() and not stop.is_set())
        except GiveUp:
            raise Revoked() from None
        for (topic, p), off in offsets.items():
            if topic == self.divert.held_topic:
                self.modes.held_confirmed(p, off)
        self._commit(batch, epoch, skip=routes.deferred)
        if self.guard.one_at_a_time:
            await self._send_commits_now()  # the next record is read once this one is committed
        if routes.deferred:
            await self._read_again(routes.deferred)

    def _mark(self, batch: list[Record], dead: list, out: Outbox) -> None:
        """A mark in held[p] after a dead letter whose reason a later owner could judge otherwise.

        ``shed`` and ``expired`` depend on the region's state and the clock: read again by the next
        owner once the region is closed, the write would be applied (handled.py). Other reasons are
        about the record itself: read again, it gets the same dead letter.
        """
        parts = {rec.partition for rec, err, _ in dead if err.reason in (DeadReason.shed, DeadReason.expired)}
        for p in sorted(parts):
            last = max(rec.offset for rec in batch if rec.partition == p)
            out.add(self.divert.held_topic, b"fence", None, p, mark_headers(self.instance, self.topic, p, last))

    # commit ----------------------------------------------------------------------------
    def _commit(self, batch: list[Record], epoch: int, skip: set[int] = frozenset()) -> None:
        if self.reader.gen != epoch:
            raise Revoked()
        offsets = next_offsets(batch, keep=lambda p: p in self.modes.parts and p not in skip)
        if not offsets:
            return
        self.done.update(offsets)
        self.pacer.settled(offsets)
        self._send_commits()

    def _owned_commits(self, offsets: dict[int, int]) -> list[TopicPartition]:
        owned = {p: o for p, o in offsets.items() if p in self.modes.parts}
        out = [commit_offset(self.topic, p, o, self.guard.metadata(p, o)) for p, o in owned.items()]
        self.guard.committing(owned)
        return out

    async def _hand_over(self) -> None:
        """Stopping cleanly: commit every owned position, clearing the crash guard's markers (no death).

        Synchronously and before the consumers close: once a lane of the group has left, the others'
        commits at revocation can fail (unknown member), and a marker left would count as a death.
        """
        self.pacer.flush()
        owned = self.guard.handover(list(self.modes.parts),
                                    {p: o for p, o in self.done.items() if p in self.modes.parts})
        if owned:
            try:
                await asyncio.to_thread(self.consumer.commit, offsets=owned, asynchronous=False)
            except KafkaException as exc:
                log.warning("region %s: last offset commit failed (%s); records will be redelivered",
                            self.region, exc)

    async def _send_commits_now(self) -> None:
        """Read one record at a time (crash guard): commit it before reading the next one."""
        owned = self._owned_commits(self.pacer.flush())
        if owned:
            try:
                await asyncio.to_thread(self.consumer.commit, offsets=owned, asynchronous=False)
            except KafkaException as exc:
                log.warning("region %s: offset commit failed (%s); records will be redelivered", self.region, exc)

    def _send_commits(self, force: bool = False) -> None:
        owned = self._owned_commits(self.pacer.flush() if force else self.pacer.due())
        if not owned:
            return
        try:
            # asynchronous: commits go out in order and a lost one only means a redelivery
            # that the inbox skips; waiting for it would stall the loop
            self.consumer.commit(offsets=owned, asynchronous=True)
        except KafkaException as exc:
            # redelivery is safe: the inbox skips what was applied
            log.warning("region %s: offset commit failed (%s); records will be redelivered", self.region, exc)

    async def _read_again(self, deferred: set[int]) -> None:
        """Leave the deferred partitions' records unread: settle the other commits, then read from them."""
        settled = self._owned_commits({p: o for p, o in self.done.items() if p not in deferred})
        if settled:
            try:  # synchronously: the broker then has this batch too, should the lane stop before its next commit
                await asyncio.to_thread(self.consumer.commit, offsets=settled, asynchronous=False)
                self.pacer.drop(tp.partition for tp in settled)
            except KafkaException as exc:
                log.warning("region %s: commit before a re-read failed (%s); records may be read twice",
                            self.region, exc)
        log.info("region %s: p%s fetched while draining; read again once direct", self.region,
                 ",".join(map(str, sorted(deferred))))
        self.reader.invalidate()

    # waiting ---------------------------------------------------------------------------
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
