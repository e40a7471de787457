"""The read-ahead's generations: what an invalidation drops is read again, never skipped.

A small in-memory consumer stands in for confluent_kafka's, so a test can make
the committed-offset lookup fail on purpose -- something the real broker
can't be told to do. The read-ahead against the real broker runs in every
router and replayer integration test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from regionguard.core.readahead import ReadAhead

TOPIC = "rg.held.eu"


class Msg:
    def __init__(self, partition: int, offset: int) -> None:
        self._p, self._o = partition, offset

    def error(self):
        return None

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v%d" % self._o

    def headers(self):
        return None


class LogConsumer:
    """One partition's log, a fetch position and a group's committed offset."""

    def __init__(self, n: int, *, committed: int | None = None, failing_lookups: int = 0) -> None:
        self.n = n
        self.position = 0 if committed is None else committed
        self.committed_offset = committed
        self.failing_lookups = failing_lookups
        self.lookups = 0
        self.assigned = True

    def consume(self, num: int, timeout: float) -> list[Msg]:
        if not self.assigned:
            return []
        out = [Msg(0, o) for o in range(self.position, min(self.n, self.position + min(num, 10)))]
        self.position += len(out)
        return out

    def committed(self, parts, timeout: float):
        self.lookups += 1
        if self.lookups <= self.failing_lookups:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        off = -1001 if self.committed_offset is None else self.committed_offset
        return [TopicPartition(TOPIC, tp.partition, off) for tp in parts]

    def seek(self, tp: TopicPartition) -> None:
        self.position = tp.offset

    def get_watermark_offsets(self, tp, timeout: float = 5.0, cached: bool = False):
        return 0, self.n


def reader(consumer: LogConsumer) -> ReadAhead:
    return ReadAhead(consumer, topic=TOPIC, batch_max=10, wait_s=0.0, decode=lambda rec: rec.offset,
                     owned=lambda: [0], name="test reader")


@contextlib.asynccontextmanager
async def running(ra: ReadAhead):
    """The reader's task runs inside the block."""
    stop = asyncio.Event()
    ra.start(stop)
    try:
        yield ra
    finally:
        stop.set()
        ra.cancel()


async def next_batch(ra: ReadAhead) -> list[int]:
    for _ in range(100):
        item = await ra.get(0.05)
        if item is not None:
            return [rec.offset for rec in item[1]]
    raise AssertionError("no batch")


@pytest.mark.parametrize("failing_lookups", [0, 3])
async def test_invalidated_records_are_read_again_from_the_commit(failing_lookups):
    consumer = LogConsumer(100, committed=20, failing_lookups=failing_lookups)
    ra = reader(consumer)
    async with running(ra):
        first = await next_batch(ra)
        assert first[0] == 20
        ra.invalidate()  # e.g. a rebalance: everything read but not committed is dropped
        again = await next_batch(ra)
        # a failed lookup is retried; reading on from the fetch position would skip the dropped records
        assert again[0] == 20, f"read on from {again[0]} after the invalidation: records 20..{again[0] - 1} skipped"
        assert consumer.lookups == failing_lookups + 1


async def test_uncommitted_partition_is_read_from_its_first_offset():
    consumer = LogConsumer(50)
    consumer.position = 30  # wherever the fetcher happened to be
    ra = reader(consumer)
    async with running(ra):
        assert (await next_batch(ra))[0] == 30
        ra.invalidate()
        assert (await next_batch(ra))[0] == 0


async def test_a_jump_in_offsets_is_reported(caplog):
    consumer = LogConsumer(1000, committed=0)
    ra = reader(consumer)
    async with running(ra):
        assert (await next_batch(ra))[0] == 0
        consumer.position += 5  # the fetcher moves on its own (the read-ahead holds two batches at most)
        with caplog.at_level(logging.WARNING, logger="regionguard.core.readahead"):
            for _ in range(5):
                await next_batch(ra)
        assert any("skipped from offset" in r.getMessage() for r in caplog.records), caplog.text


async def test_seek_unread_moves_only_partitions_nothing_was_read_from(caplog):
    consumer = LogConsumer(1000, committed=500)
    consumer.assigned = False  # paused since it was assigned: nothing read yet
    consumer.position = 30  # wherever librdkafka would resolve it, later
    ra = reader(consumer)
    async with running(ra):
        with caplog.at_level(logging.WARNING, logger="regionguard.core.readahead"):
            await ra.seek_unread([0])
            assert consumer.position == 500
            consumer.assigned = True  # resumed
            first = await next_batch(ra)
            assert first[0] == 500
            consumer.committed_offset = 0
            await ra.seek_unread([0])  # read from already: left where it is, nothing read twice
            later = [await next_batch(ra) for _ in range(3)]
        assert all(b[0] > first[0] for b in later)
        assert not any("skipped" in r.getMessage() for r in caplog.records), caplog.text


async def test_a_partition_moved_on_by_another_owner_is_not_a_skip(caplog):
    consumer = LogConsumer(1000, committed=0)
    owned = [0]
    ra = ReadAhead(consumer, topic=TOPIC, batch_max=10, wait_s=0.0, decode=lambda rec: rec.offset,
                   owned=lambda: list(owned), name="test reader")
    async with running(ra):
        await next_batch(ra)
        with caplog.at_level(logging.INFO, logger="regionguard.core.readahead"):
            owned.clear()
            consumer.assigned = False
            ra.invalidate()  # revoked (the router's reset then finds nothing to seek)
            await asyncio.sleep(0.05)
            consumer.committed_offset = consumer.position = 700  # another owner applied up to 700
            owned.append(0)  # assigned back: librdkafka starts from the commit by itself
            consumer.assigned = True
            assert (await next_batch(ra))[0] == 700
        assert not any("skipped" in r.getMessage() for r in caplog.records), caplog.text


async def test_an_invalidation_wakes_an_idle_reader():
    consumer = LogConsumer(0, committed=0)  # nothing to read yet
    ra = reader(consumer)
    ra._idle_sleep = lambda: 60.0  # a long nap: only the wake-up can end it within the test
    async with running(ra):
        await asyncio.sleep(0.05)  # the reader found nothing and naps
        consumer.n = 10
        ra.invalidate()  # e.g. the replayer resumes after an outage
        assert (await next_batch(ra))[0] == 0


@pytest.mark.parametrize("committed", [20, None])
async def test_a_reset_starts_from_the_owners_settled_position_when_the_commit_lags(committed):
    """The router paces its commits: records it settled but has not committed yet must not be read again
    (handled again in another mode, a write dead-lettered while held would be applied once direct)."""
    consumer = LogConsumer(100, committed=committed)
    settled: dict[int, int] = {}
    ra = ReadAhead(consumer, topic=TOPIC, batch_max=10, wait_s=0.0, decode=lambda rec: rec.offset,
                   owned=lambda: [0], name="test reader", settled=lambda: settled)
    async with running(ra):
        first = await next_batch(ra)
        settled[0] = first[-1] + 1  # this batch handled for good; its commit still in the pacer
        ra.invalidate()  # e.g. a draining partition's records left to be read again
        again = await next_batch(ra)
        assert again[0] == first[-1] + 1, f"read again from {again[0]}: records the owner settled are read twice"
        settled[0] = 5  # behind the commit (never the case in the router): the commit wins
        ra.invalidate()
        if committed is not None:
            assert (await next_batch(ra))[0] == committed


class HeldLookup(LogConsumer):
    """Its next committed-offset lookup answers what was committed when asked, but only once let go."""

    def __init__(self, n: int, *, committed: int | None = None) -> None:
        super().__init__(n, committed=committed)
        self.hold = False
        self.asked, self.go = threading.Event(), threading.Event()

    def committed(self, parts, timeout: float):
        answer = super().committed(parts, timeout)
        if self.hold:
            self.hold = False
            self.asked.set()
            self.go.wait(5)
        return answer


async def test_an_invalidation_while_a_reset_reads_the_commits_gets_its_own_reset():
    """A replayer lane assigned a partition resets its reader twice in a row (the assignment, then the
    resume). Reading on after the first reset, the reader tagged a batch with the second generation
    though that generation's reset was still to come: the lane handled it, then the late reset sought
    back to the older commit and the batch was handled again (its dead letters published twice)."""
    consumer = HeldLookup(100, committed=0)
    ra = reader(consumer)
    async with running(ra):
        assert (await next_batch(ra))[0] == 0
        consumer.hold = True
        ra.invalidate()  # the assignment: the reset reads the commits (0) ...
        assert await asyncio.to_thread(consumer.asked.wait, 5)
        consumer.committed_offset = 10  # ... while what it dropped is handled elsewhere and committed
        ra.invalidate()  # the resume
        consumer.go.set()
        first = (await next_batch(ra))[0]
        assert first == 10, f"read from {first} under the second generation before its reset"


class HeaderedMsg(Msg):
    """A held record with headers; counts how often they are built."""

    built = 0

    def headers(self):
        HeaderedMsg.built += 1
        return [("rg-applied-in", b"us")]


class HeaderedConsumer(LogConsumer):
    def consume(self, num: int, timeout: float) -> list[Msg]:
        return [HeaderedMsg(m.partition(), m.offset()) for m in super().consume(num, timeout)]


async def test_a_valued_records_headers_are_built_only_when_asked():
    """The replayer asks a held write past expires_at for ``rg-applied-in``; no other record pays for headers."""
    HeaderedMsg.built = 0
    ra = reader(HeaderedConsumer(5, committed=0))
    async with running(ra):
        for _ in range(100):
            if (item := await ra.get(0.05)) is not None:
                break
        else:
            raise AssertionError("no batch")
    batch = item[1]
    assert batch and HeaderedMsg.built == 0
    assert batch[0].header("rg-applied-in") == b"us" and batch[0].header("rg-verify") is None
    assert HeaderedMsg.built == 1  # built once, then kept
    assert all(rec.header("rg-applied-in") == b"us" for rec in batch) and HeaderedMsg.built == len(batch)
