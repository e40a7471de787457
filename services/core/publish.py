"""Building and sending the records every service publishes.

Dead letters are produced by the caller with delivery confirmed, because a
source offset may only be committed once its dead letter is durable.
Failover events, control records and observations are best-effort
notifications: they are produced without blocking the hot path.
"""

from __future__ import annotations

import logging

from confluent_kafka import Producer

from . import sizes
from .config import Config
from .errors import BadWrite
from .models import ControlRecord, DeadLetter, FailoverEvent, Observation
from .supervise import swallowed
from .writes import Record

log = logging.getLogger(__name__)


def dead_letter_value(rec: Record, err: BadWrite, *, region: str | None, write_id: str | None = None,
                      limit: int | None = None) -> bytes:
    """The DeadLetter JSON for a record; ``original`` keeps its exact bytes, or their start when the
    whole would exceed ``limit`` bytes (:func:`regionguard.core.sizes.fit`)."""
    original, encoding = DeadLetter.encode_original(rec.value)
    dl = DeadLetter(
        reason=err.reason,
        detail=err.detail[:500],
        topic=rec.topic,
        partition=rec.partition,
        offset=rec.offset,
        original=original,
        original_encoding=encoding,
        key=rec.key.decode("utf-8", "replace") if rec.key else None,
        region=region,
        write_id=write_id,
        original_size=len(rec.value or b""),
    )
    if limit is None:
        return dl.model_dump_json().encode()
    return sizes.fit(dl, rec.value, limit - len(rec.key or b""))


def _send(producer: Producer, topic: str, key: str, value: bytes) -> None:
    try:
        producer.produce(topic, key=key.encode(), value=value)
        producer.poll(0)
    except BufferError as exc:  # reported: a line (rate-limited) and a metric
        swallowed("publish", exc, what=f"producer queue full; dropped a notification on {topic}: publishing it",
                  logger=log)
    except Exception as exc:  # noqa: BLE001 - a notification must never break the caller (reported)
        swallowed("publish", exc, what=f"publishing to {topic}", logger=log)


def failover_event(cfg: Config, producer: Producer, ev: FailoverEvent) -> None:
    _send(producer, cfg.topic("failover-events"), ev.region, ev.model_dump_json().encode())


def control(cfg: Config, producer: Producer, rec: ControlRecord) -> None:
    key = rec.region if rec.partition is None else f"{rec.region}/{rec.partition}"
    _send(producer, cfg.topic("control"), key, rec.model_dump_json().encode())


def observation(cfg: Config, producer: Producer, obs: Observation) -> None:
    _send(producer, cfg.topic("observations"), obs.region, obs.model_dump_json().encode())
