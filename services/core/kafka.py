"""confluent-kafka helpers: topics, producers that confirm, consumers that join fast.

Any broker named by ``kafka.bootstrap`` (or ``$KAFKA_BOOTSTRAP``) works: Apache
Kafka, MSK, or tansu in tests. ``kafka.client`` is passed to librdkafka as is,
so TLS and SASL need no code here.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from confluent_kafka import KafkaError, KafkaException, Producer, Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from .config import Config
from .config import MIN_SESSION_TIMEOUT_MS
from .errors import RegionGuardError

log = logging.getLogger(__name__)


class KafkaDeliveryError(RegionGuardError):
    """A produce was not confirmed; the source offset must not be committed."""

    retriable = True


def topic_plan(cfg: Config) -> dict[str, tuple[int, bool]]:
    """Every topic regionguard uses: name -> (partitions, compacted)."""
    n = cfg.kafka.partitions
    plan: dict[str, tuple[int, bool]] = {}
    for region in cfg.regions:
        plan[cfg.topic("writes", region)] = (n, False)
        plan[cfg.topic("held", region)] = (n, False)
    plan[cfg.topic("region-state")] = (1, True)
    plan[cfg.topic("features")] = (1, True)
    plan[cfg.topic("failover-events")] = (1, False)
    plan[cfg.topic("dead-letter")] = (1, False)
    plan[cfg.topic("control")] = (1, False)
    plan[cfg.topic("observations")] = (1, False)
    return plan


def ensure_topics(cfg: Config, *, timeout: float = 30.0) -> list[str]:
    """Create any missing topic of :func:`topic_plan`; return the ones created.

    Topics are created explicitly because auto-created topics get the
    broker's default partition count, which breaks held-partition alignment.
    """
    admin = AdminClient(cfg.kafka_client_conf())
    existing = set(admin.list_topics(timeout=timeout).topics)
    new = []
    for name, (parts, compacted) in topic_plan(cfg).items():
        if name in existing:
            continue
        conf = {"cleanup.policy": "compact"} if compacted else {}
        if name == cfg.topic("observations"):
            conf["retention.ms"] = str(3600 * 1000)  # raw probe results: only the recent ones matter
        new.append(NewTopic(name, parts, cfg.kafka.replication_factor, config=conf))
    created = []
    for name, fut in (admin.create_topics(new, request_timeout=timeout).items() if new else []):
        try:
            fut.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.monotonic() + timeout
    while created and time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout).topics
        if all(t in md and md[t].partitions for t in created):
            break
        time.sleep(0.05)
    return created


def group_id(cfg: Config, name: str) -> str:
    return f"{cfg.kafka.topic_prefix}{name}"


def router_group(cfg: Config, region: str) -> str:
    """One consumer group per region, so a rebalance in one region never pauses another."""
    return group_id(cfg, f"{cfg.router.group_id}.{region}")


def replayer_group(cfg: Config, region: str) -> str:
    """Its committed offsets on ``rg.held.<region>`` are the fence-and-switch truth."""
    return group_id(cfg, f"{cfg.replay.group_id}.{region}")


#: librdkafka's Java-compatible partitioner: ``(murmur2(key) & 0x7fffffff) % partitions``, as
#: kafka-clients, kafkajs, franz-go and kafka-python compute it (DESIGN.md, "Partitioning (any
#: language)"; vectors in schemas/vectors/partitions.json). librdkafka's default
#: (consistent_random, CRC32) would put a row's writes in another partition than a Java producer.
PARTITIONER = "murmur2_random"

#: What every producer of the project sets, with or without a Config.
PRODUCER_ESSENTIALS: dict[str, Any] = {"enable.idempotence": True, "acks": "all", "partitioner": PARTITIONER}


def producer_conf(bootstrap: str, **extra: Any) -> dict[str, Any]:
    """Settings of a producer made without a Config (tests, benchmarks, examples).

    Idempotent, ``acks=all`` and the Java-compatible partitioner; ``extra`` may
    tune anything else but never changes the partitioner.
    """
    return {"bootstrap.servers": bootstrap, **PRODUCER_ESSENTIALS, **extra, "partitioner": PARTITIONER}


def make_producer(cfg: Config, **extra: Any) -> Producer:
    """Idempotent, acks=all: a confirmed delivery is durable and never duplicated.

    Keys are partitioned as Java's producer does (:data:`PARTITIONER`), whatever
    the caller passes. ``kafka.client`` wins over the tuning defaults here and in
    ``extra``; the settings a guarantee rests on cannot come from it.
    """
    conf = cfg.kafka_client_conf(
        **{
            **PRODUCER_ESSENTIALS,
            "linger.ms": 2,
            "compression.type": "none",
            "message.timeout.ms": 30000,
            # bounded memory: a producer never holds more than this; produce() then waits
            "queue.buffering.max.kbytes": 65536,
            **extra,
            "partitioner": PARTITIONER,
        }
    )
    return Producer(conf)


def make_consumer(cfg: Config, group: str, **extra: Any) -> Consumer:
    conf = cfg.kafka_client_conf(
        **{
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": MIN_SESSION_TIMEOUT_MS,  # the broker's minimum: fastest takeover it accepts
            "heartbeat.interval.ms": 1000,
            "max.poll.interval.ms": 300000,
            "partition.assignment.strategy": "range",
            "fetch.wait.max.ms": 10,
            # bounded memory: prefetch at most this much, whatever the backlog
            "queued.max.messages.kbytes": 8192,
            "fetch.max.bytes": 4 * 1024 * 1024,
            "max.partition.fetch.bytes": 512 * 1024,
            # when the prefetch above is full, librdkafka waits this long before fetching again
            # (default 1 s): a drain consumes 4 MB in well under that and then starved for
            # the rest of it (replayer idle for 0.3 s+ mid-backlog, measured)
            "fetch.queue.backoff.ms": 20,
            **extra,
        }
    )
    return Consumer(conf)


class Confirmer:
    """Collects delivery reports for one round of produces.

    Usage: ``c = Confirmer(); producer.produce(..., on_delivery=c.callback)``
    then ``c.wait(producer)`` raises :class:`KafkaDeliveryError` unless every
    record was acknowledged. ``offsets`` maps (topic, partition) to the highest
    offset confirmed, which the router uses to fence held partitions.
    """

    def __init__(self) -> None:
        self.pending = 0
        self.errors: list[str] = []
        self.offsets: dict[tuple[str, int], int] = {}

    def callback(self, err, msg) -> None:
        self.pending -= 1
        if err is not None:
            self.errors.append(str(err))
            return
        tp = (msg.topic(), msg.partition())
        off = msg.offset()
        if off is not None and off >= 0 and off > self.offsets.get(tp, -1):
            self.offsets[tp] = off

    def produce(self, producer: Producer, topic: str, value: bytes | None, key: bytes | None = None,
                partition: int | None = None, headers: Iterable[tuple[str, bytes]] | None = None) -> None:
        kw: dict[str, Any] = {"key": key, "value": value, "on_delivery": self.callback}
        if partition is not None:
            kw["partition"] = partition
        if headers:
            kw["headers"] = list(headers)
        while True:
            try:
                producer.produce(topic, **kw)
                break
            except BufferError:
                producer.poll(0.05)
        self.pending += 1

    def wait(self, producer: Producer, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pending > 0 and time.monotonic() < deadline:
            producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))
        if self.errors:
            raise KafkaDeliveryError(f"{len(self.errors)} produce(s) failed: {self.errors[0]}")
        if self.pending > 0:
            raise KafkaDeliveryError(f"{self.pending} produce(s) unconfirmed after {timeout}s")
