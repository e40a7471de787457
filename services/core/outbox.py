"""The deliver stage shared by router and replayer: produce a batch's records until Kafka has them all.

A batch's dead letters (and, in the router, its held copies) must be durable
before its source offsets are committed: a commit ahead of them would lose
the records if the process died in between. So the records are collected in
an :class:`Outbox` first and produced as one round; a round that is not fully
acknowledged is produced again whole (unless only records Kafka refused for
themselves failed: those become dead letters, :func:`deliver`). Some records may then be in Kafka twice;
that is harmless for held copies (the inbox skips a write applied twice) and
for dead letters (a redrive is deduplicated by the inbox too).

Written here rather than taken from a library: it is the project's rule for
"durable before commit", around confluent-kafka's delivery reports
(:class:`~regionguard.core.kafka.Confirmer`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from confluent_kafka import KafkaError, Producer

from . import metrics as m
from . import publish
from .errors import BadWrite
from .kafka import Confirmer, KafkaDeliveryError, record_level
from .models import DeadReason
from .writes import Record

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class GiveUp(Exception):
    """Delivery was abandoned (shutting down, or the batch's partitions moved); commit nothing."""


@dataclass(slots=True)
class Item:
    """One record to produce; ``source`` is the write it carries (a held copy's, a dead letter's)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: Headers | None = None
    source: Record | None = None
    write_id: str | None = None
    dead: BadWrite | None = None  # a dead letter's error


@dataclass
class Outbox:
    """Records to produce for one batch, kept so a failed round can be redone whole.

    ``dead_letter_max`` bounds a dead letter's value (core/sizes.py): a larger original is truncated.
    """

    dead_letter_topic: str
    region: str
    dead_letter_max: int | None = None
    items: list[Item] = field(default_factory=list)

    def dead_letter(self, rec: Record, err: BadWrite, *, write_id: str | None, limit: int | None = None) -> None:
        limit = self.dead_letter_max if limit is None else limit
        value = publish.dead_letter_value(rec, err, region=self.region, write_id=write_id, limit=limit)
        # the producer's headers (a traceparent among them) stay on the dead letter
        self.items.append(Item(self.dead_letter_topic, rec.key, value, None, rec.carried_headers() or None,
                               source=rec, write_id=write_id, dead=err))

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
            headers: Headers | None = None, source: Record | None = None, write_id: str | None = None) -> None:
        self.items.append(Item(topic, key, value, partition, headers, source=source, write_id=write_id))

    def refused(self, item: Item, err: KafkaError) -> bool:
        """Replace ``item``, which Kafka refused for itself (too large, invalid), by a dead letter.

        A held copy becomes a ``too_large`` dead letter of its write; a dead letter is made again
        with an empty original (the record stays in its source topic for a redrive). False, and
        ``item`` kept, when there is nothing smaller to send.
        """
        rec = item.source
        if rec is None:
            return False
        at = next(i for i, x in enumerate(self.items) if x is item)
        if item.dead is None:
            bad = BadWrite(DeadReason.too_large, f"its copy for {item.topic} ({len(item.value or b'')} bytes and "
                                                 f"headers) was refused: {err.name()}")
            self.dead_letter(rec, bad, write_id=item.write_id)
        else:
            self.dead_letter(rec, item.dead, write_id=item.write_id, limit=0)
            if self.items[-1].value == item.value:
                self.items.pop()
                return False
        del self.items[at]
        return True

    def dead_reasons(self, items: list[Item] | None = None) -> list[str]:
        return [it.dead.reason.value for it in (self.items if items is None else items) if it.dead is not None]


async def deliver(
    producer: Producer, out: Outbox, *, retry_s: float, retry_max_s: float,
    pause: Callable[[float], Awaitable[None]], still_ours: Callable[[], bool], wait_s: float = 30.0,
    rounds: Callable[[Confirmer], None] | None = None,
) -> dict[tuple[str, int], int]:
    """Produce every record of ``out`` until all are acknowledged; the highest offset per partition.

    A record Kafka refuses for itself (:func:`~regionguard.core.kafka.record_level`: too large,
    invalid) is replaced by its dead letter (:meth:`Outbox.refused`); when every other record of
    the round was acknowledged, only the replacements are produced next, at once. Any other failure
    (the topic's: authorization, unknown topic, a broker away) redoes the round whole after
    ``pause(seconds)`` (the caller's way of sleeping without falling out of its consumer group),
    growing to ``retry_max_s``. Every failed produce is logged and counted
    (``regionguard_produce_errors_total``); ``still_ours()`` is asked after each paused round, and
    :class:`GiveUp` raised once it says no.
    ``rounds(confirmer)``, when given, is told each round's :class:`Confirmer` as it is produced: the
    replayer's revocation callback reads the last one's delivery reports (replayer/worker.py).

    A round that is only *unconfirmed* (the broker away, nothing refused) is waited on, never
    produced again: the router's and replayer's producers never time a record out
    (:func:`~regionguard.core.kafka.make_producer`, ``ordered``), so what is queued is written
    in order or not at all. A resend while an earlier copy may still be written could put a
    later write of a key ahead of an earlier one in the held topic (r1, r3, r1', r2', r3': the
    replayer would apply r3 before r2; issue 25, finding 7).
    """
    delay = retry_s
    offsets: dict[tuple[str, int], int] = {}
    dead_reasons: list[str] = []  # of dead letters already acknowledged in an earlier round
    while out.items:
        confirmer = Confirmer()
        if rounds is not None:
            rounds(confirmer)
        sent = list(out.items)
        for it in sent:
            confirmer.produce(producer, it.topic, it.value, key=it.key, partition=it.partition, headers=it.headers)
        try:
            # in a thread: a slow broker must not stall the other regions' lanes on this loop
            await asyncio.to_thread(confirmer.wait, producer, wait_s)
        except KafkaDeliveryError as exc:
            if confirmer.pending:  # some unconfirmed: wait until every record settled, never resend them
                delay = await _wait_unconfirmed(producer, confirmer, out.region, wait_s=wait_s, delay=delay,
                                                retry_max_s=retry_max_s, pause=pause, still_ours=still_ours)
                exc = None if not confirmer.errors else exc
            if exc is None:
                _merge(offsets, confirmer.offsets)
                for reason in dead_reasons + out.dead_reasons():
                    m.DEAD_LETTERS.labels(out.region, reason).inc()
                return offsets
            replaced: list[Item] = []
            retry = confirmer.pending > 0 or len(confirmer.errors) > len(confirmer.failed)
            for i, err in sorted(confirmer.failed.items()):
                m.PRODUCE_ERRORS.labels(out.region, sent[i].topic, err.name()).inc()
                if record_level(err) and out.refused(sent[i], err):
                    log.warning("region %s: %s refused a record of %s[%s]@%s (%s); dead-lettering it instead",
                                out.region, sent[i].topic, sent[i].source.topic, sent[i].source.partition,
                                sent[i].source.offset, err.str())
                    replaced.append(out.items[-1])
                else:
                    retry = True
            if not retry:
                # the rest is in Kafka: produce only what replaced the refused records
                _merge(offsets, confirmer.offsets)
                dead_reasons += out.dead_reasons([it for i, it in enumerate(sent) if i not in confirmer.failed])
                out.items = replaced
                continue
            log.warning("region %s: %s; producing again in %.2fs", out.region, exc, delay)
            await pause(delay)
            delay = min(delay * 2, retry_max_s)
            if not still_ours():
                raise GiveUp() from exc
            continue
        _merge(offsets, confirmer.offsets)
        for reason in dead_reasons + out.dead_reasons():
            m.DEAD_LETTERS.labels(out.region, reason).inc()
        return offsets
    return offsets


async def _wait_unconfirmed(producer: Producer, confirmer: Confirmer, region: str, *, wait_s: float, delay: float,
                            retry_max_s: float, pause: Callable[[float], Awaitable[None]],
                            still_ours: Callable[[], bool]) -> float:
    """Wait until every record of the round is acknowledged or failed; :class:`GiveUp` once not ours.

    Abandoned, they stay queued in the producer and are written in order later, or never.
    """
    while confirmer.pending > 0:
        log.warning("region %s: %d produce(s) unconfirmed after %.0fs; waiting for them (never resent: a resend "
                    "could overtake them)", region, confirmer.pending, wait_s)
        await pause(delay)
        delay = min(delay * 2, retry_max_s)
        if not still_ours():
            raise GiveUp()
        try:
            await asyncio.to_thread(confirmer.wait, producer, wait_s)
        except KafkaDeliveryError:
            pass  # still unconfirmed, or failed: the loop and the caller tell which
    return delay


def _merge(into: dict[tuple[str, int], int], offsets: dict[tuple[str, int], int]) -> None:
    for tp, off in offsets.items():
        if off > into.get(tp, -1):
            into[tp] = off
