"""One lane of one region's replayer: drain ``rg.held.<region>`` into the recovered region.

It waits while the region is not closed; on recovery it validates readiness
(connects, a writable primary, inbox and allow-listed tables present),
publishes the result, then drains in order, batched and rate-limited, with
the router's inbox-dedup and version rules (:func:`regionguard.core.db.apply_writes`).

Its committed offsets are what the router's fence-and-switch waits for, so
an offset is committed only after the batch's transaction and its dead
letters are durable.

A region has ``replay.lanes`` lanes, each owning a share of the held
partitions (as the router's lanes do); what they share -- pool, readiness,
rate limit, the replay session's events -- is in ``region.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone

from confluent_kafka import KafkaException, TopicPartition

from ..core import lag
from ..core import metrics as m
from ..core import publish
from ..core.batch import count_applied, next_offsets, plan_ahead, process_isolating
from ..core.config import Config
from ..core.db import ApplyResult, Plan
from ..core.errors import BadWrite, MissingPrivilege, RegionGuardError, RegionUnavailable
from ..core.guardlane import LaneGuard, commit_offset
from ..core.groupsession import client_timeouts
from ..core.kafka import Confirmer, make_consumer, make_producer, replayer_group
from ..core.outbox import GiveUp, Outbox, deliver
from ..core.models import DeadReason, FailoverEvent, Policy
from ..core.readahead import ReadAhead
from ..core.tracing import batch_span
from ..core.supervise import describe
from ..core.sizes import Limits, default_limits
from ..core.writes import Record, decode_write
from ..core.held import H_APPLIED_IN, H_FENCE
from .region import RegionReplay

log = logging.getLogger(__name__)

# how long a revocation waits for the dead letters of the batch in hand to be acknowledged before it
# commits the batch's position: they normally take milliseconds; past it the batch is read again
HANDOVER_DELIVERY_WAIT_S = 1.0


class Abandon(Exception):
    """Stop working on the batch in hand without committing it."""


class ReplayWorker:
    def __init__(self, cfg: Config, region: str, *, shared: RegionReplay, lane: int = 0,
                 limits: Limits | None = None, group: dict | None = None) -> None:
        """``group``: the group consumer's session settings (core/groupsession.py)."""
        self.cfg, self.region, self.lane = cfg, region, lane
        self.limits = limits or default_limits(cfg)
        self.topic = cfg.topic("held", region)
        self.producer = make_producer(cfg, ordered=True, **self.limits.producer_conf(),
                                      **client_timeouts(group, producer=True))
        self.shared = shared
        self.db = self.shared.db
        self.cache = self.shared.cache
        self.consumer = make_consumer(cfg, replayer_group(cfg, region), region=region,
                                      **{"queued.max.messages.kbytes": 4096, **(group or {})})
        self.assigned: set[int] = set()
        self.resume_due = False
        self._lane_tag = f" (lane {lane})" if cfg.replay.lanes > 1 else ""
        self.guard = LaneGuard(self.consumer, topic=self.topic, batch_max=cfg.replay.batch_size,
                               service="replayer", name=f"replayer {region}{self._lane_tag}")
        # partition -> next offset whose batch is handled for good (applied, dead letters confirmed) but
        # whose commit may still be in flight: a reset reads from here, not from the broker's older
        # commit, so a dead letter is never published twice by one owner
        self.settled: dict[int, int] = {}
        self.reader = ReadAhead(self.consumer, topic=self.topic, batch_max=cfg.replay.batch_size, wait_s=0.005,
                                owned=lambda: sorted(self.assigned), name=f"replayer {region}{self._lane_tag}",
                                decode=self._decode, prepare=self._plan, settled=lambda: self.settled,
                                guard=self.guard)
        self.paused = False
        self.backoff = cfg.router.retry_initial_s
        self.active = False
        self.last_record = 0.0
        self.touched: dict[int, int] = {}
        self._committing: asyncio.Future | None = None
        self.assignments = 0  # on_assign calls so far (core/leave.py waits on them)
        self.ownership = 0  # assign and revoke calls so far: a batch is ours to commit only if unchanged
        self._taken_in = 0  # ownership when the batch in hand was taken
        # the batch in hand once its writes are applied: the positions it settles and its dead letters'
        # rounds of produces; a revocation commits those positions if the rounds were acknowledged
        self._delivering: tuple[dict[int, int], list[Confirmer]] | None = None

    # ---------------------------------------------------------------- state
    def is_closed(self) -> bool:
        return self.shared.is_closed()

    def _on_assign(self, consumer, parts) -> None:
        log.info("region %s: assigned held partitions %s%s", self.region, [tp.partition for tp in parts], self._lane_tag)
        self.assigned |= {tp.partition for tp in parts}
        for tp in parts:
            self.settled.pop(tp.partition, None)  # settled in an earlier ownership: another owner came between
        self.guard.assigned(tp.partition for tp in parts)
        self.assignments += 1
        self.ownership += 1
        self.reader.invalidate()
        self.resume_due = True  # a pause can outlive a revoke/assign: resume explicitly when running
        if self.paused:
            consumer.pause(parts)

    def _on_revoke(self, consumer, parts) -> None:
        log.info("region %s: revoked held partitions %s%s", self.region, [tp.partition for tp in parts], self._lane_tag)
        ps = [tp.partition for tp in parts]
        self._settle_delivered()
        # leaving is no death: clear the crash guard's start markers of partitions not committed since
        handover = self.guard.handover(ps, {p: self.settled[p] for p in ps if p in self.settled})
        if handover:
            try:
                consumer.commit(offsets=handover, asynchronous=False)
            except KafkaException as exc:
                log.warning("region %s: crash-guard handover commit failed (%s)", self.region, exc)
        self.guard.revoked(ps)
        self.ownership += 1
        self.assigned -= set(ps)
        for p in ps:
            self.settled.pop(p, None)
        self.reader.invalidate()

    def _settle_delivered(self) -> None:
        """At a revocation: settle the batch in hand if its writes are applied and its dead letters acknowledged.

        Abandoned instead, the batch was read again by the partition's next owner -- another lane of
        this process, as often as not -- and its dead letters published a second time with no crash
        (seen under load when a second lane joined at start-up). So the callback, which runs on this
        lane's loop between two of its awaits, waits (bounded) for the round of dead letters in
        flight and hands the batch's position over with the rest (:meth:`_on_revoke`).
        """
        in_hand, self._delivering = self._delivering, None
        if in_hand is None or self.ownership != self._taken_in:
            return  # nothing applied yet, or taken in an earlier ownership: read again by the next owner
        nxt, rounds = in_hand
        # the last round decides: deliver() produces another only after one that failed in part
        last = rounds[-1] if rounds else None
        deadline = time.monotonic() + HANDOVER_DELIVERY_WAIT_S
        while last is not None and last.pending > 0 and time.monotonic() < deadline:
            self.producer.flush(max(0.0, deadline - time.monotonic()))  # serves the delivery reports
        if last is not None and (last.pending > 0 or last.errors):
            log.warning("region %s: revoked while a batch's dead letters were unconfirmed; the next owner "
                        "reads the batch again%s", self.region, self._lane_tag)
            return
        self.settled.update(nxt)

    def _plan(self, batch: list[Record], decoded: list) -> Plan | None:
        """Statements planned ahead when every record is a valid, unexpired write (the common case)."""
        return plan_ahead(self.db, decoded, want_rows=self.cache is not None,
                          plannable=lambda w: w is not None and not isinstance(w, BadWrite) and w.expires_at is None)

    def _decode(self, rec: Record):
        if rec.value is None and rec.header(H_FENCE) is not None:
            return None  # a router's fence (it has no value): only its offset matters
        return decode_write(rec.value, region=self.region, cfg=self.cfg)

    def _parts(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(self.assigned)]

    def _pause(self) -> None:
        # issued every time, not only on the first call: pausing inside on_assign is undone by the
        # assign that follows the callback, so partitions assigned while paused were not paused
        self.paused = True
        if self.assigned:
            self.consumer.pause(self._parts())

    def _serve(self) -> None:
        """Serve rebalance callbacks while not consuming; a record that is polled anyway is never dropped."""
        self._pause()
        msg = self.consumer.poll(0)
        if msg is not None and msg.error() is None:
            self.reader.invalidate()  # read everything again from the committed offsets, this record included

    def _resume(self) -> None:
        if self.paused or self.resume_due:
            self.paused = self.resume_due = False
            if self.assigned:
                self.consumer.resume(self._parts())
                # a resumed partition starts fetching ~0.5 s late unless it is sought to an
                # absolute offset: the reader seeks every partition to its commit (core/readahead.py)
                self.reader.invalidate()

    # ---------------------------------------------------------------- loop
    async def run(self, stop: asyncio.Event) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        self.reader.start(stop)
        clean = False
        try:
            while not stop.is_set():
                if not self.is_closed():
                    await self._wait_closed(stop)
                    continue
                if not self.shared.ready:
                    await self._check_ready(stop)
                    continue
                self._resume()
                item = await self.reader.get(0.05)
                if item is None:
                    try:
                        await self._maybe_finish()
                    except Abandon:
                        self.reader.invalidate()
                    continue
                gen, batch, decoded, plan = item
                self._taken_in = self.ownership
                try:
                    with batch_span("replayer", self.region, batch):
                        await self._process_isolating(batch, decoded, gen, stop, plan)
                except Abandon:
                    self.reader.invalidate()
                finally:
                    self.guard.batch_done()
            clean = True
        finally:
            self.reader.cancel()
            try:
                await self._committed()
            except Abandon:
                pass  # read again by whoever owns the partitions next
            if clean:
                await self._hand_over()
            else:
                self.guard.crashed()  # an exception is a death: the crash guard's markers stay
            self.producer.flush(5)
            # the group consumer stays open: the service closes the region's lanes in turn (core/leave.py)

    async def _hand_over(self) -> None:
        """Stopping cleanly: clear the crash guard's markers (no death), before the consumers close."""
        offsets = self.guard.handover(sorted(self.assigned), dict(self.settled))
        if offsets:
            try:
                await asyncio.to_thread(self.consumer.commit, offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("region %s: crash-guard handover commit failed (%s)", self.region, exc)

    async def _wait_closed(self, stop: asyncio.Event) -> None:
        self.shared.not_closed()
        self._pause()
        self._serve()
        await _sleep(0.05, stop)

    async def _check_ready(self, stop: asyncio.Event) -> None:
        if await self.shared.check_ready() is None:
            self.backoff = self.cfg.router.retry_initial_s
            return
        self._serve()
        await _sleep(min(self.backoff, 1.0), stop)
        self.backoff = min(self.backoff * 2, self.cfg.router.retry_max_s)

    # ---------------------------------------------------------------- one batch
    async def _process_isolating(self, batch: list[Record], decoded: list, gen: int, stop: asyncio.Event,
                                 plan: Plan | None = None) -> None:
        """:meth:`_process` under the rule for the unknown (core/batch.py ``process_isolating``)."""
        plans = iter([plan])  # planned for the whole batch: only the first pass may use it

        async def process(part: list[Record], part_decoded: list) -> None:
            await self._process(part, part_decoded, gen, stop, next(plans, None))

        async def poison(rec: Record, err: BaseException) -> None:
            bad = BadWrite(DeadReason.poison, f"the replayer failed on it: {describe(err)}")
            await self._dead_letters([(rec, bad, None)], gen, stop, settles=[rec])
            await self._commit([rec], gen)

        await process_isolating(process, poison, batch, decoded, passes=(Abandon,), stopping=stop.is_set,
                                stopped=lambda exc: Abandon(), what=f"for {self.region}", service="replayer")

    async def _process(self, batch: list[Record], decoded: list, gen: int, stop: asyncio.Event,
                       plan: Plan | None = None) -> None:
        if not self.active:
            self._start()
        now = datetime.now(timezone.utc)
        writes, recs, dead, doomed = [], [], [], []
        for rec, w in zip(batch, decoded):
            if w is None:
                continue  # fence
            if isinstance(w, BadWrite):
                dead.append((rec, w, None))
            elif (bad := self._dead_end(rec, w, now)) is not None:
                doomed.append((rec, w, bad))
            else:
                writes.append(w)
                recs.append(rec)
        applied_before = await self._retrying(
            lambda: self.db.applied([str(w.id) for _, w, _ in doomed]), gen, stop) if doomed else set()
        expired = 0
        for rec, w, bad in doomed:
            if str(w.id) not in applied_before:
                dead.append((rec, bad, str(w.id)))
                expired += bad.reason is DeadReason.expired
        await self.shared.bucket.take(len(writes))
        if plan is not None and len(writes) == len(decoded):
            writes = plan.writes  # same writes, same order: use the statements planned ahead
        else:
            plan = None
        res = await self._apply(writes, gen, stop, plan) if writes else ApplyResult()
        res.duplicates += sum(1 for _, w, _ in doomed if str(w.id) in applied_before)
        for i, err in res.failed:
            dead.append((recs[i], err, str(writes[i].id)))
            if writes[i].ops is not None:
                m.GROUPS.labels(self.region, "replayer", "dead_lettered").inc()
        count_applied(self.region, "replayer", res, groups_outcome="replayed")
        if recs:
            failed = {i for i, _ in res.failed}
            lag.observe(self.region, "replay", (r for i, r in enumerate(recs) if i not in failed), held=True)
        await self._dead_letters(dead, gen, stop, settles=batch)
        await self._commit(batch, gen)
        self.shared.lane_batch(res, dead=len(dead), expired=expired)
        outcome = {"applied": res.applied, "duplicate": res.duplicates, "stale": res.stale,
                   "dead_letter": len(dead)}
        for k, v in outcome.items():
            if v:
                m.REPLAYED.labels(self.region, k).inc(v)
        for rec in batch:
            self.touched[rec.partition] = max(self.touched.get(rec.partition, -1), rec.offset)
        self.last_record = time.monotonic()
        self._backlog_gauge()

    def _dead_end(self, rec: Record, w, now: datetime) -> BadWrite | None:
        """The dead letter a held write gets instead of an apply -- if the region has not applied it.

        Expired while held; or policy ``shed``, which the router only holds when an earlier owner
        of the partition may have applied it just before a crash (its ``rg-verify`` header says
        so; the policy tells the same without reading headers). Either way the inbox decides
        (``_process``): a dead letter never names an applied write.

        A failover write already applied in a fallback (``rg-applied-in``) never expires: it is
        synced back, or home would never converge with the fallback that has it. Only past
        ``expires_at`` are its headers read, so the common record never pays for them.
        """
        if w.policy is Policy.shed:
            return BadWrite(DeadReason.shed, f"region {self.region} was unavailable; policy shed")
        if w.expires_at is not None and w.expires_at <= now and rec.header(H_APPLIED_IN) is None:
            return BadWrite(DeadReason.expired, f"expired at {w.expires_at.isoformat()} while held")
        return None

    async def _apply(self, writes, gen: int, stop: asyncio.Event, plan: Plan | None = None) -> ApplyResult:
        async def call() -> ApplyResult:
            t0 = time.perf_counter()
            res = await self.db.apply(writes, source="replay", want_rows=self.cache is not None, plan=plan)
            if self.cache is not None:
                await self.cache.write(self.region, res.rows)
            m.BATCH_SECONDS.labels(self.region, "replayer").observe(time.perf_counter() - t0)
            return res

        return await self._retrying(call, gen, stop)

    async def _retrying(self, call, gen: int, stop: asyncio.Event):
        """``await call()`` against the region until it works, waiting while the region is not closed."""
        while True:
            if stop.is_set() or gen != self.reader.gen:
                raise Abandon()
            if not self.is_closed():
                self._pause()
                self._serve()
                await _sleep(0.1, stop)
                continue
            try:
                res = await call()
                self.backoff = self.cfg.router.retry_initial_s
                return res
            except RegionUnavailable as err:
                log.warning("region %s lost during replay: %s", self.region, err)
                self.shared.mark_down(err)
            except RegionGuardError as err:
                if not err.retriable:
                    raise  # about the writes, not the region: the batch is split (_process_isolating)
                log.warning("region %s: replay apply failed (%s); retrying", self.region, err)
                m.APPLY_ERRORS.labels(self.region, getattr(err, "kind", type(err).__name__)).inc()
                if isinstance(err, MissingPrivilege):
                    self.shared.observe_failure(err.kind)  # against the breaker: an operator must grant
                self._serve()
                await _sleep(self.backoff, stop)
                self.backoff = min(self.backoff * 2, self.cfg.router.retry_max_s)

    async def _dead_letters(self, dead, gen: int, stop: asyncio.Event, *, settles: list[Record]) -> None:
        """Deliver the dead letters of ``settles``, whose writes are applied; a revocation from here on settles it."""
        if self.ownership != self._taken_in:
            # revoked while the writes were applied: the next owner reads the batch again (the inbox
            # skips its writes) and dead-letters it; published here too, they were published twice
            raise Abandon()
        out = Outbox(self.cfg.topic("dead-letter"), self.region, self.limits.dead_letter_max)
        for rec, err, wid in dead:
            out.dead_letter(rec, err, write_id=wid)
        rounds: list[Confirmer] = []
        self._delivering = (next_offsets(settles), rounds)
        try:
            await deliver(self.producer, out, retry_s=1.0, retry_max_s=1.0, pause=lambda s: _sleep(s, stop),
                          still_ours=lambda: not stop.is_set() and gen == self.reader.gen, rounds=rounds.append)
        except GiveUp:
            self._delivering = None
            raise Abandon() from None

    async def _commit(self, batch: list[Record], gen: int) -> None:
        """Commit the batch; the router's switch back to direct reads these offsets.

        The broker's answer is awaited in a thread, and only before the next
        commit (commits stay in order): the next batch is applied meanwhile.
        A failed commit abandons the batch in hand, which is read again from
        the settled position (the failed commit's batch was handled for good:
        the next commit covers it). A batch reached here is handled for good
        even if the reader was reset meanwhile; only a change of ownership
        since it was taken abandons it uncommitted.
        """
        nxt = next_offsets(batch)
        self._delivering = None  # settled below, or abandoned (a revocation handed it over already)
        reset = gen != self.reader.gen
        if reset and self.ownership != self._taken_in:
            raise Abandon()  # the partitions changed hands meanwhile: whoever owns them reads them again
        self.settled.update(nxt)
        offsets = [commit_offset(self.topic, p, o, self.guard.metadata(p, o)) for p, o in nxt.items()]
        await self._committed()
        self.guard.committing(nxt)
        self._committing = asyncio.ensure_future(
            asyncio.to_thread(self.consumer.commit, offsets=offsets, asynchronous=False))
        if self.guard.one_at_a_time:
            await self._committed()  # the next record is read once this one is committed
        if reset:
            # the reader was reset (a resume, a re-seek) while this batch was handled: its writes are
            # applied and its dead letters delivered, so it is settled and committed like any other,
            # and the reader seeks again -- now to the settled position. Read again from the older
            # commit, the batch's dead letters were published a second time (seen in CI).
            self.reader.invalidate()

    async def _committed(self) -> None:
        """Wait for the commit in flight; raises :class:`Abandon` if the broker refused it."""
        task, self._committing = self._committing, None
        if task is None:
            return
        try:
            await task
        except KafkaException as exc:
            log.warning("region %s: replay commit failed (%s); the batch will be replayed again", self.region, exc)
            raise Abandon() from exc

    # ---------------------------------------------------------------- events
    def _start(self) -> None:
        self.active = True
        self.touched = {}
        self.shared.lane_active(self.lane)

    def _backlog_gauge(self) -> None:
        """Approximate: the broker's high watermark minus our position (tansu's watermark is coarse)."""
        total = 0
        try:
            for tp in self.consumer.position(self._parts()):
                _low, high = self.consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
                if tp.offset is not None and tp.offset >= 0 and high > tp.offset:
                    total += high - tp.offset
        except KafkaException:
            return
        self.shared.lane_backlog(self.lane, total)

    async def _maybe_finish(self) -> None:
        """Idle for a moment after activity: this lane's backlog is drained (for now)."""
        if not self.active or time.monotonic() - self.last_record < 0.3:
            return
        await self._committed()  # the drained markers name committed offsets
        self.active = False
        for p, off in sorted(self.touched.items()):
            publish.failover_event(self.cfg, self.producer, FailoverEvent(
                kind="drained", region=self.region, service="replayer", detail={"partition": p, "offset": off + 1}))
        self.shared.lane_idle(self.lane)
        self.producer.poll(0)


async def _sleep(seconds: float, stop: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
