"""How the SDK's producer rides out a leader move, and the one error it gives when it can't.

The settings are the ones docs/producers.md ("When brokers fail") states for every language:
``acks=all`` and idempotence (core's :data:`~regionguard.core.kafka.PRODUCER_ESSENTIALS`), a
bounded delivery timeout, retries left to that timeout, at most 5 requests in flight (what
idempotence allows while keeping each partition's order) and a request timeout well below the
delivery timeout, so a request stuck on a leader that vanished without a reset (a region cut off)
is abandoned and retried to the new leader in time.

:class:`WriteNotAcknowledged` is ours, not librdkafka's: librdkafka reports one error per record,
while an application needs one error per flush that says which writes to send again (with the
same ids: the inbox applies each id once) and whether sending them again can help.
"""

from __future__ import annotations

import math
from typing import Any

from confluent_kafka import KafkaError

from .core.kafka import Confirmer, KafkaDeliveryError, record_level
from .core.models import WriteEvent

#: How long Kafka has to acknowledge a write before the app hears it failed. A leader move takes
#: the broker session timeout (``broker.session.timeout.ms``: 9 s by default, 3 s advised in
#: docs/topology.md) to fence the dead broker, then an election and a metadata refresh: about 10-12 s
#: at the defaults, plus one request timeout for a request caught in flight. 30 s rides that out
#: with a margin on a loaded host, and still tells the app of a dead region within half a minute.
DELIVERY_TIMEOUT_MS = 30_000
#: A request in flight to a leader that stopped answering is given up after this, then retried.
REQUEST_TIMEOUT_MS = 10_000

#: librdkafka settings of the SDK's producer (``kafka.client`` may override them).
DELIVERY_SETTINGS: dict[str, Any] = {
    "message.timeout.ms": DELIVERY_TIMEOUT_MS,  # librdkafka's name of delivery.timeout.ms
    "request.timeout.ms": REQUEST_TIMEOUT_MS,   # the broker's wait for acks=all
    "socket.timeout.ms": REQUEST_TIMEOUT_MS,    # the client's wait for any answer (default 60 s)
    "max.in.flight.requests.per.connection": 5,  # the most idempotence keeps in order
    "retries": 2_147_483_647,                   # left to the delivery timeout
}


def delivery_timeout_s(conf: dict[str, Any]) -> float:
    """The delivery timeout of a librdkafka producer conf, in seconds (either of its two names: the last set wins)."""
    ms = DELIVERY_TIMEOUT_MS
    for name, value in conf.items():
        if name in ("delivery.timeout.ms", "message.timeout.ms"):
            ms = int(value)
    return ms / 1000 if ms > 0 else math.inf  # 0: librdkafka never times a record out


class WriteNotAcknowledged(KafkaDeliveryError):
    """Kafka did not acknowledge some writes of a flush: they are not guaranteed.

    ``writes`` are the events not acknowledged (failed, or still unconfirmed at the deadline),
    in the order they were sent; ``region`` and ``topic`` are the first one's, ``cause`` is
    librdkafka's error (or ``unconfirmed``). ``retriable`` is False only when every failure is the
    record's own (too large, invalid): sending it again would fail the same way. Otherwise send the
    same events again (``WriteProducer.send(ev)``): a write that did reach Kafka is applied once.
    """

    def __init__(self, writes: list[WriteEvent], topic: str, cause: str, *, sent: int, timeout_s: float,
                 retriable: bool, code: int | None = None) -> None:
        self.writes, self.region, self.topic, self.cause = writes, writes[0].region, topic, cause
        self.retriable, self.code = retriable, code
        regions = sorted({w.region for w in writes})
        where = f"region {self.region} (topic {topic})" + (
            f" and {len(regions) - 1} other region(s)" if len(regions) > 1 else "")
        line = f"{len(writes)} of {sent} write(s) to {where} not acknowledged (delivery timeout {timeout_s:g} s): {cause}"
        super().__init__(" ".join(line.split()))  # one line, whatever the cause's text holds


def not_acknowledged(confirmer: Confirmer, sent: list[tuple[str, WriteEvent]], timeout_s: float,
                     broker_error: str | None, *, waited_s: float | None = None) -> WriteNotAcknowledged | None:
    """The error for one flush round's writes (``sent``: topic and event by index), or None if all were acked.

    ``timeout_s`` is the delivery timeout, ``waited_s`` how long the flush waited (it names the
    writes still unconfirmed then)."""
    missing = [i for i in range(len(sent)) if i not in confirmer.confirmed]
    if not missing:
        return None
    failed: list[KafkaError] = [confirmer.failed[i] for i in missing if i in confirmer.failed]
    first = failed[0] if failed else None
    cause = first.str() if first is not None else f"unconfirmed after {waited_s or timeout_s:g} s"
    if broker_error:  # name the broker and why it can't be reached, not just "timed out"
        cause = f"{cause}; {broker_error}"
    retriable = len(failed) < len(missing) or not all(record_level(e) for e in failed)
    topic, _ev = sent[missing[0]]
    return WriteNotAcknowledged([sent[i][1] for i in missing], topic, cause, sent=len(sent), timeout_s=timeout_s,
                                retriable=retriable, code=first.code() if first is not None else None)
