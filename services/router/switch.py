"""Fence and switch: the I/O around the pure partition-mode machine (:mod:`.modes`).

Between batches a lane asks Kafka what the mode machine needs and performs
the actions it returns:

* a newly assigned partition: is its held partition empty (``direct``) or
  not (``held``), and up to which offset an earlier owner may have applied
  records without committing them (:class:`~.apply.Uncertain`). A lookup that
  fails is tried again (:data:`LOOKUP_RETRY_S`, after a metadata refresh of the
  held topic: the usual cause is a leader that moved) while the partition stays
  paused, for up to :data:`LOOKUP_GIVE_UP_S`; only then is it taken for held.
  Taking it for held at once sent every later write of a healthy region through
  the held topic and the replayer until the next drain, which during a network
  partition (the held partition's leader cut off) meant until the heal;
* the region closed again: produce a *fence* into each held partition and
  pause it (``draining``);
* draining: has the replayer's committed offset passed the fence -- or is
  everything left between them fences (:mod:`.fences`)? Then resume direct.

Kafka answers are awaited in threads, so a slow broker never stalls the
other regions' lanes on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from ..core.config import Config
from ..core.held import H_FENCE
from ..core.kafka import Confirmer, KafkaDeliveryError, watermarks_exact
from ..core.readahead import ReadAhead
from . import fences
from .handled import Handled, last_sources
from .uncertain import ALL_OFFSETS, Uncertain
from .modes import Action, Mode, PartitionModes
from .region import RegionShare

log = logging.getLogger(__name__)

#: Records past tansu's high watermark that still count as possibly applied by an earlier owner:
#: its watermark is the last batch's base offset + 1, and a producer batch holds thousands of writes.
INEXACT_MARGIN = 100_000

#: Seconds before a held range found to hold records to replay is read again (the replayer
#: normally moves first; reading again covers a read that failed or timed out).
RESCAN_S = 5.0

#: Seconds before a new partition whose held-topic lookup failed is looked up again (it stays paused).
LOOKUP_RETRY_S = 0.5

#: Seconds of failed lookups after which a new partition is taken for held after all (it is never
#: left paused for good when the lookup cannot succeed; held is always safe, only slower).
LOOKUP_GIVE_UP_S = 15.0

#: Seconds between two looks at the replayer's committed offsets while partitions drain.
DRAIN_CHECK_S = 0.05


class Switch:
    def __init__(self, cfg: Config, region: str, *, consumer: Consumer, offsets_reader: Consumer,
                 producer: Producer, modes: PartitionModes, uncertain: Uncertain, paused: set[int],
                 share: RegionShare, reader: ReadAhead, instance: str, lane: int = 0,
                 lane_tag: Callable[[], str] = lambda: "", handled: Handled | None = None) -> None:
        self.cfg, self.region = cfg, region
        self.handled = handled if handled is not None else Handled()
        self.consumer, self.offsets_reader, self.producer = consumer, offsets_reader, producer
        self.modes, self.uncertain, self.paused = modes, uncertain, paused
        self.share, self.reader, self.instance = share, reader, instance
        self.lane, self.lane_tag = lane, lane_tag
        self.topic = cfg.topic("writes", region)
        self.held_topic = cfg.topic("held", region)
        self._last_drain_check = 0.0
        self._exact: bool | None = None       # the broker's high watermarks are record positions
        # held partition -> (offsets, when) of the last read by _only_fences_left that found a record to replay
        self._scanned: dict[int, tuple[tuple[int, int], float]] = {}
        self._replayer = fences.ReplayerWatch()
        self._lookup_after: dict[int, float] = {}   # new partition -> when its failed lookup is tried again
        self._lookup_failing: dict[int, float] = {}  # new partition -> when its lookups started failing

    async def step(self) -> None:
        """One round between batches: look up new partitions, fence, check draining ones, report."""
        now = time.monotonic()
        new = self.modes.pending_lookup()
        for p in set(self._lookup_failing) - set(new):  # revoked meanwhile: a later ownership starts afresh
            del self._lookup_failing[p]
        pending = [p for p in new if self._lookup_after.get(p, 0.0) <= now]
        if pending:
            await self._look_up(pending)
        await self.share.probe_if_due()
        closed = self.share.is_closed(self.region)
        await self.perform(self.modes.region_changed(closed))
        if closed:
            await self.perform(self.modes.unfenced())
        if closed and self.modes.draining():
            self.share.probe_while_draining()
        if closed and self.modes.draining() and time.monotonic() - self._last_drain_check > DRAIN_CHECK_S:
            self._last_drain_check = time.monotonic()
            await self._check_draining()
        counts = self.modes.counts()
        self.share.report(self.lane, counts["held"] + counts["draining"], counts["direct"])

    async def _look_up(self, ps: list[int]) -> None:
        """Each new partition: held topic empty or not, what an earlier owner handled (:mod:`.handled`)."""
        ends: dict[int, tuple[int, int]] = {}
        given_up: list[int] = []   # taken for held, as if the held partition had records
        failed = False
        for p in ps:
            try:
                ends[p] = await asyncio.to_thread(
                    self.consumer.get_watermark_offsets, TopicPartition(self.held_topic, p), 5.0, False)
                self._lookup_after.pop(p, None)
                self._lookup_failing.pop(p, None)
            except KafkaException as exc:
                failed = True
                now = time.monotonic()
                if now - self._lookup_failing.setdefault(p, now) >= LOOKUP_GIVE_UP_S:
                    log.warning("region %s: held watermark lookup failed (%s) for %.0f s; treating p%d as held",
                                self.region, exc, LOOKUP_GIVE_UP_S, p)
                    given_up.append(p)
                    self._lookup_failing.pop(p, None)
                    continue
                log.warning("region %s: held watermark lookup failed (%s); p%d stays paused, looked up again "
                            "in %.1f s", self.region, exc, p, LOOKUP_RETRY_S)
                self._lookup_after[p] = now + LOOKUP_RETRY_S
        if failed:
            try:  # a leader that moved is the usual cause: the next lookup asks the new one
                await asyncio.to_thread(self.consumer.list_topics, self.held_topic, 5.0)
            except KafkaException:
                pass
        if not ends and not given_up:
            return
        await self._handled_by_earlier_owners(ends)
        for p in [*ends, *given_up]:
            self.modes.looked_up(p, ends[p][1] if p in ends else 1)
            self.uncertain.assigned(p, await self._end_at_assignment(p))
            if p not in self.paused:  # a pause from an earlier ownership of p outlives the rebalance
                self.consumer.resume([TopicPartition(self.topic, p)])

    async def _handled_by_earlier_owners(self, ends: dict[int, tuple[int, int]]) -> None:
        if self._exact is None and any(high > 0 for _, high in ends.values()):
            try:
                md = await asyncio.to_thread(self.consumer.list_topics, self.topic, 5.0)
                self._exact = watermarks_exact(md.cluster_id)
            except KafkaException:
                pass  # read until idle: right on any broker, only slower
        last = await asyncio.to_thread(last_sources, self.offsets_reader, self.held_topic, self.topic, ends,
                                       exact=self._exact is True)
        for p in ends:
            self.handled.assigned(p, last.get(p))
            if p not in last:
                log.warning("region %s: could not read the tail of held p%d; records an earlier owner held or "
                            "dead-lettered without committing may be handled again", self.region, p)
            elif last[p] is not None:
                log.info("region %s: held p%d names source offsets up to %d: records of p%d up to it that are "
                         "read again are committed, not handled again%s", self.region, p, last[p], p,
                         self.lane_tag())

    async def _check_draining(self) -> None:
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
            busy = self._replayer.busy(tp.partition, off)
            if moved:
                self._replayer.forget(tp.partition)  # a later outage starts from a first look again
            switching += moved or ([] if busy else await self._only_fences_left(tp.partition, off))
        if switching:
            await self.perform(switching)
            # a partition paused since it was assigned would start fetching ~0.5 s late
            await self.reader.seek_unread([p for _, p in switching if p in self.modes.parts])

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

    async def perform(self, actions: list[tuple[Action, int]]) -> None:
        """Pause, resume and fence as the mode machine says; fences wait for their offsets."""
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
                    log.info("region %s: partition %d back in direct mode%s", self.region, p, self.lane_tag())
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
            # they stay draining and paused; step() fences them again (PartitionModes.unfenced)
            log.warning("region %s: fences on %s not confirmed: %s", self.region, fenced, exc)
            return
        for p in fenced:
            off = confirm.offsets.get((self.held_topic, p))
            if off is not None:
                self.modes.held_confirmed(p, off)
