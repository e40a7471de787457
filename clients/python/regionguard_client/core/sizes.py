"""How big a record may be on each topic, and dead letters that always fit (pure, no I/O).

Kafka refuses a record larger than the topic's ``max.message.bytes`` (the
broker) or the producer's ``message.max.bytes`` (librdkafka, before sending).
A refused record must never stop a partition, so the limits are read at start
(:func:`regionguard_client.core.kafka.read_limits`) and applied before producing:

* a write larger than ``writes.max_bytes`` is dead-lettered as ``too_large``;
  the default leaves room for the headers its held copy carries on top, so a
  write the router accepts can always be held;
* a dead letter embeds its original (base64 for binary, a third larger), so an
  original too big for the dead-letter topic is stored truncated, flagged, with
  its size; the record itself stays in its source topic (topic, partition,
  offset) for ``regionguard dead-letters redrive`` while retained.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from .errors import BadWrite
from .models import DeadLetter, DeadReason

#: the producer's ``message.max.bytes`` when ``kafka.client`` does not set it (librdkafka's default)
PRODUCER_DEFAULT_MAX = 1_000_000
#: a topic's ``max.message.bytes`` when the broker does not say (Apache Kafka's default)
TOPIC_DEFAULT_MAX = 1_048_588
#: what a record costs beyond its key, value and headers: its batch's header (61 bytes) and its own
#: varint fields, with margin
RECORD_OVERHEAD = 512
#: the headers of a held copy (core/held.py: names and values, the source topic's name among them)
HELD_HEADROOM = 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes in bytes: the largest write accepted per region, the largest dead-letter value."""

    write_max: dict[str, int]
    dead_letter_max: int
    #: the smallest ``max.message.bytes`` of the topics the services produce to, when the broker said
    smallest_topic_max: int | None = None

    def write(self, region: str) -> int:
        return self.write_max.get(region, self.dead_letter_max)

    def producer_conf(self) -> dict[str, int]:
        """``batch.size`` for the services' producers: librdkafka never splits a batch the broker
        refuses as too large, so on a topic smaller than its 1,000,000-byte batches every record of
        such a batch would be refused (and taken for too large itself)."""
        if self.smallest_topic_max is None or self.smallest_topic_max - RECORD_OVERHEAD >= PRODUCER_DEFAULT_MAX:
            return {}
        return {"batch.size": max(1, self.smallest_topic_max - RECORD_OVERHEAD)}


def default_limits(cfg) -> Limits:
    """The limits of topics left at Apache Kafka's defaults (for a worker made without reading them)."""
    w = write_max(cfg.writes.max_bytes, writes_max=None, held_max=None, producer_max=None)
    return Limits({r: w for r in cfg.regions}, dead_letter_max(None, None))


def record_max(topic_max: int | None, producer_max: int | None) -> int:
    """The largest key + value + headers one record of a topic may carry."""
    limit = min(topic_max or TOPIC_DEFAULT_MAX, producer_max or PRODUCER_DEFAULT_MAX)
    return max(0, limit - RECORD_OVERHEAD)


def write_max(configured: int | None, *, writes_max: int | None, held_max: int | None,
              producer_max: int | None) -> int:
    """``writes.max_bytes``, or what fits in the writes topic and, with its headers, in the held topic."""
    if configured is not None:
        return configured
    fits = min(record_max(writes_max, producer_max), record_max(held_max, producer_max) - HELD_HEADROOM)
    return max(0, fits)


def dead_letter_max(topic_max: int | None, producer_max: int | None) -> int:
    return record_max(topic_max, producer_max)


def write_size(key: bytes | None, value: bytes | None) -> int:
    """What a write weighs against ``writes.max_bytes``: its key and value (a held copy carries both)."""
    return len(key or b"") + len(value or b"")


def too_large(key: bytes | None, value: bytes | None, limit: int) -> BadWrite | None:
    size = write_size(key, value)
    if size <= limit:
        return None
    return BadWrite(DeadReason.too_large, f"write of {size} bytes (key and value) exceeds writes.max_bytes ({limit})")


def fit(dl: DeadLetter, raw: bytes | None, limit: int) -> bytes:
    """``dl`` as JSON bytes within ``limit`` (key included): whole if it fits, else with the longest prefix of ``raw``.

    A truncated text original is cut at a character boundary and stays text; a binary one stays base64.
    When not even an empty original fits (a huge key or detail), the dead letter with an empty original
    is returned anyway: the caller's produce then fails as record-level and is reported.
    """
    raw = raw or b""
    whole = dl.model_dump_json().encode()
    if len(whole) <= limit:
        return whole
    lo, hi, best = 0, len(raw), None
    # the JSON grows monotonically with the prefix; ~20 serialisations for a megabyte, on rare records only
    while lo <= hi:
        mid = (lo + hi) // 2
        cand = _with_prefix(dl, raw, mid)
        if len(cand) <= limit:
            best, lo = cand, mid + 1
        else:
            hi = mid - 1
    return best if best is not None else _with_prefix(dl, raw, 0)


def _with_prefix(dl: DeadLetter, raw: bytes, n: int) -> bytes:
    prefix = raw[:n]
    if dl.original_encoding == "text":
        # raw is valid UTF-8, so only a character cut at the end can be incomplete
        original = prefix.decode("utf-8", "ignore")
    else:  # base64 even when the prefix alone happens to be UTF-8: the encoding is the whole record's
        original = base64.b64encode(prefix).decode()
    return dl.model_copy(update={"original": original, "original_truncated": True,
                                 "original_size": len(raw)}).model_dump_json().encode()
