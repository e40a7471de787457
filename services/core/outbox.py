"""The deliver stage shared by router and replayer: produce a batch's records until Kafka has them all.

A batch's dead letters (and, in the router, its held copies) must be durable
before its source offsets are committed: a commit ahead of them would lose
the records if the process died in between. So the records are collected in
an :class:`Outbox` first and produced as one round; a round that is not fully
acknowledged is produced again whole. Some records may then be in Kafka twice;
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

from confluent_kafka import Producer

from . import metrics as m
from . import publish
from .errors import BadWrite
from .kafka import Confirmer, KafkaDeliveryError
from .writes import Record

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


class GiveUp(Exception):
    """Delivery was abandoned (shutting down, or the batch's partitions moved); commit nothing."""


@dataclass
class Outbox:
    """Records to produce for one batch, kept so a failed round can be redone whole."""

    dead_letter_topic: str
    region: str
    items: list[tuple[str, bytes | None, bytes | None, int | None, Headers | None]] = field(default_factory=list)
    dead_reasons: list[str] = field(default_factory=list)

    def dead_letter(self, rec: Record, err: BadWrite, *, write_id: str | None) -> None:
        value = publish.dead_letter_value(rec, err, region=self.region, write_id=write_id)
        # the producer's headers (a traceparent among them) stay on the dead letter
        self.items.append((self.dead_letter_topic, rec.key, value, None, rec.carried_headers() or None))
        self.dead_reasons.append(err.reason.value)

    def add(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
            headers: Headers | None = None) -> None:
        self.items.append((topic, key, value, partition, headers))


async def deliver(
    producer: Producer, out: Outbox, *, retry_s: float, retry_max_s: float,
    pause: Callable[[float], Awaitable[None]], still_ours: Callable[[], bool],
) -> dict[tuple[str, int], int]:
    """Produce every record of ``out`` until all are acknowledged; the highest offset per partition.

    ``pause(seconds)`` waits between rounds (the caller's way of sleeping without falling
    out of its consumer group); ``still_ours()`` is asked after each failed round, and
    :class:`GiveUp` raised once it says no.
    """
    delay = retry_s
    while out.items:
        confirmer = Confirmer()
        for topic, key, value, partition, headers in out.items:
            confirmer.produce(producer, topic, value, key=key, partition=partition, headers=headers)
        try:
            # in a thread: a slow broker must not stall the other regions' lanes on this loop
            await asyncio.to_thread(confirmer.wait, producer, 30.0)
        except KafkaDeliveryError as exc:
            log.warning("region %s: %s; producing again in %.2fs", out.region, exc, delay)
            await pause(delay)
            delay = min(delay * 2, retry_max_s)
            if not still_ours():
                raise GiveUp() from exc
            continue
        for reason in out.dead_reasons:
            m.DEAD_LETTERS.labels(out.region, reason).inc()
        return confirmer.offsets
    return {}
