"""Read the next batch while the current one is being applied (router and replayer).

Decoding is Python work and applying is PostgreSQL work on another core, so
a queue of two decoded batches lets them overlap; the decode yields every
100 records so the applying batch's round trips get through.

Ordering is kept by *generations*: every batch carries the generation it was
read in. A rebalance or an abandoned batch calls :meth:`ReadAhead.invalidate`,
which bumps the generation and drops queued batches; the reader then seeks
every owned partition back to its committed offset -- or to the position its
owner has settled, when that is further (``settled``) -- before reading again.
So whatever was read but not settled is read again, in order, and never
applied out of order; the inbox makes a second apply of it harmless.

A lane's crash-loop guard (:mod:`.guardlane`), when given, sees every polled
batch before it is decoded: it commits its markers, may send the batch back
to be read one record at a time, and swaps the decode of a record found in
flight at repeated deaths for a ``poison`` dead letter.

Written by hand: this is the part of a consumer loop that is specific to
committing only after a DB transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from .errors import BadWrite
from .models import DeadReason
from .writes import Record

if TYPE_CHECKING:
    from .guardlane import LaneGuard

log = logging.getLogger(__name__)

Batch = tuple[int, list[Record], list[Any], Any]


class ReadAhead:
    def __init__(self, consumer: Consumer, *, topic: str, batch_max: int, wait_s: float,
                 decode: Callable[[Record], Any], owned: Callable[[], Iterable[int]], name: str,
                 prepare: Callable[[list[Record], list[Any]], Any] | None = None,
                 settled: Callable[[], Mapping[int, int]] | None = None,
                 guard: LaneGuard | None = None) -> None:
        self.consumer, self.topic = consumer, topic
        self.batch_max, self.wait_s = batch_max, wait_s
        self.decode, self.owned, self.name = decode, owned, name
        self.prepare = prepare  # more work that can be done ahead (the router's apply plan)
        # partition -> next offset whose records the owner has handled for good, committed or not yet:
        # the router paces its commits, and records it handled in one mode must not be handled again
        # in another (a write dead-lettered while held, applied once the partition is direct)
        self.settled = settled
        self.guard = guard
        self.gen = 0
        self.queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=2)
        self._task: asyncio.Task | None = None
        self._last_record = 0.0
        self._next: dict[int, int] = {}  # partition -> offset the next record should have
        self._napping: asyncio.Future | None = None  # an invalidation cuts the idle wait short

    # ------------------------------------------------------------ control
    def invalidate(self) -> None:
        """Drop everything read but not applied; the reader resumes from the commits."""
        self.gen += 1
        self._next.clear()  # positions are known again after the reset (or from the first record read)
        if self._napping is not None and not self._napping.done():
            self._napping.set_result(None)  # e.g. a replayer resuming: reset and read now, not after a nap
        while not self.queue.empty():
            self.queue.get_nowait()
            if self.guard is not None:
                self.guard.batch_done()  # dropped unprocessed

    async def seek_unread(self, partitions: Iterable[int]) -> None:
        """Seek those of ``partitions`` not read from since the last reset to their commits.

        For a partition paused before anything was read (the router's
        draining ones): resumed, librdkafka resolves its logical position and
        starts fetching ~0.5 s late; after a seek to an absolute offset it
        fetches at once. Nothing of it was read, so nothing is read twice.
        """
        unread = [p for p in partitions if p not in self._next]
        if unread and not await self._seek_to_commits(unread):
            log.info("%s: the consumer finds its place itself", self.name)

    def start(self, stop: asyncio.Event) -> None:
        self._task = asyncio.create_task(self._run(stop))

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def get(self, timeout: float) -> Batch | None:
        """The next batch of the current generation, or None after ``timeout``."""
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            if self._task is not None and self._task.done():
                self._task.result()  # re-raise a crash of the reader
            return None
        if item[0] != self.gen:
            if self.guard is not None:
                self.guard.batch_done()  # dropped unprocessed
            return None
        return item

    # ------------------------------------------------------------ the reader
    async def _run(self, stop: asyncio.Event) -> None:
        reset_gen = self.gen
        while not stop.is_set():
            if reset_gen != self.gen:
                target = self.gen
                if not await self._reset_to_committed():
                    # reading on would skip what the invalidation dropped: try the reset again
                    await asyncio.sleep(0.1)
                    continue
                reset_gen = target
                # invalidated again while the commits were read: reset again before reading. Read now, the
                # batch carried the new generation though the reset for it came after it -- and sought
                # back past it once the lane had handled it (a handover's new owner dead-lettered it twice)
                continue
            gen = self.gen
            batch = await self._poll(stop, gen)
            if not batch or gen != self.gen:
                continue  # anything read across a generation change is read again after the reset
            guard = self.guard
            if guard is not None:
                if not await guard.admit(batch):
                    self.invalidate()
                    continue
                if gen != self.gen:
                    continue
            self._check_contiguous(batch)
            decoded: list[Any] = []
            # the guard's verdict only matters while it holds a poison record: no call per record else
            decode = self._decode if guard is not None and guard.poison else self.decode
            for s in range(0, len(batch), 100):
                chunk = batch[s:s + 100]
                try:
                    decoded.extend([decode(rec) for rec in chunk])
                except Exception:  # noqa: BLE001 - a decoder that raises: that record's dead letter
                    decoded.extend(self._decode_alone(rec) for rec in chunk)
                await asyncio.sleep(0)
            extra = None
            if self.prepare is not None:
                await asyncio.sleep(0)
                try:
                    extra = self.prepare(batch, decoded)
                except Exception as exc:  # noqa: BLE001 - work done ahead is optional: the batch is planned again
                    log.warning("%s: planning ahead raised %s; the apply stage plans the batch", self.name,
                                type(exc).__name__)
            if gen == self.gen:
                await self.queue.put((gen, batch, decoded, extra))
                if guard is not None:
                    guard.batch_queued()
                    if guard.one_at_a_time:
                        await guard.wait_idle()  # nothing more is read until this record is settled

    def _decode(self, rec: Record) -> Any:
        if self.guard is not None and (poison := self.guard.verdict(rec)) is not None:
            return poison  # never decoded: it killed the process when it was
        return self.decode(rec)

    def _decode_alone(self, rec: Record) -> Any:
        """Decode one record; an error is the record's own ``poison`` dead letter, never the reader's end.

        The decoders catch what they know (core/writes.py); this is the backstop for what they
        don't, because a reader that dies takes its service down and a restart meets the same
        uncommitted record again.
        """
        try:
            return self._decode(rec)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.error("%s: decoding p%d@%d raised %s; dead-lettered as poison", self.name, rec.partition,
                      rec.offset, type(exc).__name__, extra={"partition": rec.partition})
            return BadWrite(DeadReason.poison, f"decoding raised {type(exc).__name__}: {str(exc)[:200]}")

    async def _poll(self, stop: asyncio.Event, gen: int) -> list[Record]:
        out: list[Record] = []
        start = time.monotonic()
        batch_max = 1 if self.guard is not None and self.guard.one_at_a_time else self.batch_max
        while len(out) < batch_max and not stop.is_set():
            if gen != self.gen:
                return []
            msgs = self.consumer.consume(batch_max - len(out), 0)
            topic = self.topic
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("%s: consume error %s", self.name, err)
                    continue
                value = msg.value()
                # headers are built up front only for records without a value (the router's fences);
                # building them for every record measured at an eighth of the replayer's CPU, so a
                # valued record reads them from its message only if asked (Record.header)
                out.append(Record(topic, msg.partition(), msg.offset(), msg.key(), value,
                                  msg.headers() if value is None else None, msg))
            elapsed = time.monotonic() - start
            if out and (elapsed >= self.wait_s or len(out) >= batch_max):
                break
            if not out and elapsed >= 0.05:
                break  # let the caller do housekeeping
            if not msgs:
                if out:
                    await asyncio.sleep(0.001)
                else:
                    await self._nap(self._idle_sleep(), gen)
        if out:
            self._last_record = time.monotonic()
        return out

    async def _nap(self, seconds: float, gen: int) -> None:
        """``asyncio.sleep(seconds)``, unless :meth:`invalidate` wakes it first."""
        if gen != self.gen:
            return
        loop = asyncio.get_running_loop()
        self._napping = fut = loop.create_future()
        timer = loop.call_later(seconds, lambda: fut.done() or fut.set_result(None))
        try:
            await fut
        finally:
            timer.cancel()
            self._napping = None

    def _idle_sleep(self) -> float:
        """Poll often while records flow, less after a quiet second: an idle lane costs little CPU."""
        return 0.01 if time.monotonic() - self._last_record < 1.0 else 0.03

    def _check_contiguous(self, batch: list[Record]) -> None:
        """Warn when a partition skips ahead: records were not read, which must never happen.

        Our topics are neither compacted nor transactional, so offsets are
        contiguous while we own a partition; every ownership change goes
        through :meth:`invalidate`, which forgets the positions (another
        consumer may have moved the partition on meanwhile). Going back is
        only a re-read, which the inbox makes harmless.
        """
        nxt = self._next
        for rec in batch:
            want = nxt.get(rec.partition)
            if want is not None and rec.offset != want:
                if rec.offset > want:
                    log.warning("%s: p%d skipped from offset %d to %d", self.name, rec.partition, want, rec.offset)
                else:
                    log.info("%s: p%d reads again from offset %d (was at %d)", self.name, rec.partition,
                             rec.offset, want)
            nxt[rec.partition] = rec.offset + 1

    async def _reset_to_committed(self) -> bool:
        """Seek every owned partition to its commit (or settled position); False if the commits could not be read."""
        return await self._seek_to_commits(list(self.owned()))

    async def _seek_to_commits(self, partitions: list[int]) -> bool:
        """Seek to the commit, or the first offset when there is none; False if the commits could not be read.

        A position the owner has settled beyond the commit wins: the commit may not have been sent yet.
        """
        parts = [TopicPartition(self.topic, p) for p in partitions]
        if not parts:
            return True
        try:
            committed = await asyncio.to_thread(self.consumer.committed, parts, 10.0)
        except KafkaException as exc:
            log.warning("%s: committed-offset lookup failed (%s)", self.name, exc)
            return False
        fresh = [tp.partition for tp in committed if tp.offset is None or tp.offset < 0]
        earliest = dict(zip(fresh, await asyncio.gather(*(self._earliest(p) for p in fresh))))
        settled = self.settled() if self.settled is not None else {}
        sought = []
        for tp in committed:
            target = earliest.get(tp.partition, tp.offset)
            floor = settled.get(tp.partition)
            if floor is not None and (target is None or target < 0 or floor > target):
                target = floor
            try:
                self.consumer.seek(TopicPartition(self.topic, tp.partition, target))
            except KafkaException as exc:
                # not fetching yet: it starts from the committed offset anyway
                sought.append(f"p{tp.partition}@{target}({exc.args[0].name() if exc.args else exc})")
                continue
            sought.append(f"p{tp.partition}@{target}")
            if target >= 0:
                self._next[tp.partition] = target
        log.info("%s: reading from the commits (or settled positions): %s", self.name, " ".join(sought))
        return True

    async def _earliest(self, partition: int) -> int:
        """The partition's first offset as a number (``auto.offset.reset: earliest``).

        Seeking to the logical OFFSET_BEGINNING makes librdkafka resolve it on
        its own schedule: the first record came ~0.5 s later, against ~5 ms
        for an absolute offset (measured on a resumed partition).
        """
        try:
            low, _high = await asyncio.to_thread(
                self.consumer.get_watermark_offsets, TopicPartition(self.topic, partition), 5.0)
            return low
        except KafkaException:
            return OFFSET_BEGINNING
