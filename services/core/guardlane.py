"""A lane's crash-loop guard: commits the markers of :mod:`.crashguard` through the lane's consumer.

The read-ahead (:mod:`.readahead`) asks :meth:`LaneGuard.admit` about every
polled batch before decoding it, and :meth:`LaneGuard.verdict` about every
record; the lane (router or replayer) tells it when partitions are assigned
or revoked and when a batch is settled, and asks :meth:`LaneGuard.metadata`
what its commits carry.

While some partition is read one record at a time (serial), a record is
marked in flight only once the lane has no batch in hand, and nothing more is
read until the lane has settled and committed it: a death then blames the one
record in flight, whichever stage it died in.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition

from . import crashguard as rules
from .errors import BadWrite
from .models import DeadReason
from .writes import Record

log = logging.getLogger(__name__)


@dataclass
class Serial:
    deaths: int
    end: int


def commit_offset(topic: str, partition: int, offset: int, metadata: str | None) -> TopicPartition:
    """A commit of ``offset``; without metadata it clears a marker (confluent-kafka takes no None)."""
    if metadata is None:
        return TopicPartition(topic, partition, offset)
    return TopicPartition(topic, partition, offset, metadata=metadata)


class LaneGuard:
    def __init__(self, consumer: Consumer, *, topic: str, batch_max: int, service: str, name: str) -> None:
        self.consumer, self.topic, self.batch_max = consumer, topic, batch_max
        self.service, self.name = service, name
        self.checked: set[int] = set()          # partitions whose start was decided in this assignment
        self.serial: dict[int, Serial] = {}     # partitions read one record at a time
        self.poison: dict[int, tuple[int, int]] = {}  # partition -> (offset, deaths) to dead-letter
        self.marked: dict[int, int] = {}        # partition -> offset our last commit put a marker on
        self._crashed = False                   # the lane died of an exception: its markers stay
        self._in_hand = 0                       # batches queued for the lane or being processed by it
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------ the lane tells
    def assigned(self, partitions) -> None:
        self._forget(partitions)

    def revoked(self, partitions) -> None:
        self._forget(partitions)

    def _forget(self, partitions) -> None:
        for p in partitions:
            self.checked.discard(p)
            self.serial.pop(p, None)
            self.poison.pop(p, None)
            self.marked.pop(p, None)

    def metadata(self, partition: int, next_offset: int) -> str | None:
        """What a commit of ``next_offset`` carries: a serial marker while inside the extent, else nothing."""
        s = self.serial.get(partition)
        if s is None:
            return None
        m = rules.after(next_offset, deaths=s.deaths, end=s.end)
        return m.encode() if m is not None else None

    def committing(self, offsets: dict[int, int]) -> None:
        """The lane sends these offsets (with :meth:`metadata`): its own markers are superseded."""
        for p, off in offsets.items():
            self.marked.pop(p, None)
            if p in self.poison and off > self.poison[p][0]:
                del self.poison[p]
            s = self.serial.get(p)
            if s is not None and off >= s.end:
                log.info("%s: p%d read one record at a time up to offset %d; batches again", self.name, p, s.end)
                del self.serial[p]

    def crashed(self) -> None:
        """The lane dies of an exception: that is a death, so the revoke at close leaves the markers."""
        self._crashed = True

    def handover(self, partitions, settled: dict[int, int]) -> list[TopicPartition]:
        """The commits a clean revoke or stop sends: the settled position, or the marked one, without a death."""
        out = []
        for p in partitions:
            if self._crashed and p in self.marked:
                continue
            off = settled.get(p, self.marked.get(p))
            if off is not None:
                out.append(commit_offset(self.topic, p, off, self.metadata(p, off)))
        self.committing({tp.partition: tp.offset for tp in out})
        return out

    def batch_queued(self) -> None:
        """The read-ahead queued a batch for the lane."""
        self._in_hand += 1
        self._idle.clear()

    def batch_done(self) -> None:
        """A queued batch is settled (committed), abandoned or dropped unprocessed."""
        self._in_hand = max(0, self._in_hand - 1)
        if self._in_hand == 0:
            self._idle.set()

    # ------------------------------------------------------------ the read-ahead asks
    @property
    def one_at_a_time(self) -> bool:
        return bool(self.serial)

    async def wait_idle(self) -> None:
        """Until the lane has no batch in hand."""
        await self._idle.wait()

    async def admit(self, batch: list[Record]) -> bool:
        """Decide (and commit) before ``batch`` is decoded; False: drop it and read again from the commits."""
        new = sorted({r.partition for r in batch} - self.checked)
        if new and not await self._start(new, batch):
            return False
        if new and self.serial and len(batch) > 1:
            return False  # read again one record at a time
        if self.serial:
            rec = batch[0]
            s = self.serial.get(rec.partition)
            await self.wait_idle()  # a batch read before reading turned serial must not die in its name
            if s is not None and self.poison.get(rec.partition, (None,))[0] != rec.offset:
                mark = rules.inflight(s.deaths, s.end).encode()
                if not await self._commit([commit_offset(self.topic, rec.partition, rec.offset, mark)]):
                    return False
                self.marked[rec.partition] = rec.offset
        return True

    def verdict(self, rec: Record) -> BadWrite | None:
        """The poison dead letter for a record found in flight at a death; None for every other record."""
        found = self.poison.get(rec.partition)
        if found is None:
            return None
        offset, deaths = found
        if rec.offset != offset:
            if rec.offset > offset:
                del self.poison[rec.partition]  # past it: it was dead-lettered, or is gone (retention)
            return None
        # kept until the lane commits past it: a record read again (deferred, abandoned) is still poison
        detail = rules.poison_detail(topic=self.topic, partition=rec.partition, offset=offset, deaths=deaths,
                                     service=self.service)
        log.error("%s: %s", self.name, detail)
        return BadWrite(DeadReason.poison, detail)

    async def _start(self, partitions: list[int], batch: list[Record]) -> bool:
        try:
            committed = await asyncio.to_thread(
                self.consumer.committed, [TopicPartition(self.topic, p) for p in partitions], 10.0)
        except KafkaException as exc:
            log.warning("%s: committed-offset lookup failed (%s); reading again", self.name, exc)
            return False
        first = {}
        for rec in batch:
            first.setdefault(rec.partition, rec.offset)
        commits, decided = [], {}
        for tp in committed:
            at = tp.offset if tp.offset is not None and tp.offset >= 0 else first[tp.partition]
            start = rules.on_start(at, tp.metadata, batch_max=self.batch_max)
            decided[tp.partition] = (at, start)
            if start.commit is not None:
                commits.append(commit_offset(self.topic, tp.partition, at, start.commit.encode()))
        if commits and not await self._commit(commits):
            return False
        for p, (at, start) in decided.items():
            self.checked.add(p)
            if start.commit is not None:
                self.marked[p] = at
            if start.serial_end is not None:
                self.serial[p] = Serial(start.deaths, start.serial_end)
                log.warning("%s: p%d at offset %d was in flight at %d deaths; reading one record at a time "
                            "up to offset %d", self.name, p, at, start.deaths, start.serial_end)
            if start.poison is not None:
                self.poison[p] = (start.poison, start.deaths)
        return True

    async def _commit(self, offsets: list[TopicPartition]) -> bool:
        try:
            await asyncio.to_thread(self.consumer.commit, offsets=offsets, asynchronous=False)
            return True
        except KafkaException as exc:
            log.warning("%s: crash-guard commit failed (%s); reading again", self.name, exc)
            return False
