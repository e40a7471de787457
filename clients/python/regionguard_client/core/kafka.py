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
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from .config import Config, ConfigError
from .config import MIN_SESSION_TIMEOUT_MS
from . import sizes
from .errors import RegionGuardError
from .racks import consumer_rack
from .sizes import Limits

log = logging.getLogger("regionguard.core.kafka")  # its name before the move (loggers stay in the regionguard tree)


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


class TopicMismatchError(ConfigError):
    """An existing topic contradicts the config (docs/contract.md, topic settings); one line naming the topic."""


def _ms(seconds: float) -> str:
    return str(int(round(seconds * 1000)))


DAY_S = 86400.0


def topic_configs(cfg: Config) -> dict[str, dict[str, str]]:
    """The topic-level settings each topic of :func:`topic_plan` is created with.

    Always explicit where the broker's default would be wrong: held writes must
    outlive an outage (``kafka.topics.held_retention_days``, never the broker's
    7 days), and the compacted topics roll segments often enough
    (``segment.ms``) for the log cleaner to ever run, so a starting reader
    reads about the latest record per key, not the whole history.
    """
    t = cfg.kafka.topics
    isr = {"min.insync.replicas": str(cfg.kafka.min_insync_replicas)}
    compact = {
        **isr,
        "cleanup.policy": "compact",
        "segment.ms": _ms(t.compact_segment_s),
        "min.cleanable.dirty.ratio": str(t.compact_dirty_ratio),
        "delete.retention.ms": _ms(t.compact_delete_retention_s),
    }
    out: dict[str, dict[str, str]] = {}
    for region in cfg.regions:
        out[cfg.topic("writes", region)] = {**isr, "cleanup.policy": "delete",
                                             "retention.ms": _ms(t.writes_retention_days * DAY_S)}
        out[cfg.topic("held", region)] = {**isr, "cleanup.policy": "delete",
                                           "retention.ms": _ms(t.held_retention_days * DAY_S),
                                           "retention.bytes": "-1"}
    out[cfg.topic("region-state")] = dict(compact)
    out[cfg.topic("features")] = dict(compact)
    out[cfg.topic("failover-events")] = dict(isr)
    out[cfg.topic("dead-letter")] = {**isr, "retention.ms": _ms(t.dead_letter_retention_days * DAY_S)}
    out[cfg.topic("control")] = dict(isr)
    # raw probe results: only the recent ones matter
    out[cfg.topic("observations")] = {**isr, "retention.ms": _ms(3600)}
    return out


def _describe(admin: AdminClient, topics: list[str], timeout: float) -> dict[str, dict[str, str]] | None:
    """Topic configs by name, or None when the broker does not answer DescribeConfigs (logged once)."""
    if not topics:
        return {}
    try:
        futs = admin.describe_configs([ConfigResource("topic", t) for t in topics], request_timeout=timeout)
        out = {}
        for res, fut in futs.items():
            entries = fut.result(timeout=timeout)
            out[res.name] = {k: v.value for k, v in entries.items() if v.value is not None}
        return out
    except Exception as exc:  # noqa: BLE001 - ACLs, or a broker without DescribeConfigs
        log.warning("topic check: cannot describe topic configs (%s); cleanup.policy, retention and "
                    "min.insync.replicas of existing topics not checked", str(exc).splitlines()[0][:200])
        return None


def check_topics(cfg: Config, admin: AdminClient, *, names: Iterable[str] | None = None, timeout: float = 30.0,
                 metadata=None) -> None:
    """Raise :class:`TopicMismatchError` when an existing topic contradicts the config.

    Checked (docs/contract.md, "Topic settings"): a region's writes and held topics both
    have ``kafka.partitions`` partitions; every topic has ``kafka.replication_factor``
    replicas; compacted topics are compacted (and only compacted); writes and held
    topics are not; held topics keep records at least ``held_retention_days`` and
    have no size limit; ``min.insync.replicas`` is not below the configured one.
    Settings that only cost start-up time (segment.ms, dirty ratio) or disk are
    logged as warnings. Topics in ``names`` only (default: every topic of the plan).
    """
    plan = topic_plan(cfg)
    wanted = topic_configs(cfg)
    md = (metadata or admin.list_topics(timeout=timeout)).topics
    names = [n for n in (plan if names is None else names)
             if n in plan and n in md and md[n].error is None and md[n].partitions]
    if not names:
        return

    def fail(topic: str, what: str) -> None:
        raise TopicMismatchError(f"topic {topic}: {what}")

    n = cfg.kafka.partitions
    for name in names:
        parts = md[name].partitions
        want_parts, _compacted = plan[name]
        if len(parts) != want_parts:
            if want_parts == n:
                fail(name, f"{len(parts)} partitions, but kafka.partitions is {n} "
                           "(writes and held topics of a region must have the same count)")
            fail(name, f"{len(parts)} partitions, expected {want_parts}")
        rf = {len(p.replicas) for p in parts.values()}
        if rf and rf != {cfg.kafka.replication_factor}:
            fail(name, f"replication factor {max(rf)}, but kafka.replication_factor is {cfg.kafka.replication_factor}")

    confs = _describe(admin, names, timeout)
    if confs is None:
        return
    t = cfg.kafka.topics
    for name in names:
        have = confs.get(name, {})
        want = wanted[name]
        compacted = plan[name][1]
        policy = {p.strip() for p in have.get("cleanup.policy", "delete").split(",") if p.strip()}
        if compacted and policy != {"compact"}:
            fail(name, f"cleanup.policy is {have.get('cleanup.policy', 'delete')}, must be compact")
        if not compacted and "compact" in policy:
            fail(name, f"cleanup.policy is {have.get('cleanup.policy')}: compaction would drop writes that share a key")
        isr = have.get("min.insync.replicas")
        if isr is not None and isr.lstrip("-").isdigit() and int(isr) < cfg.kafka.min_insync_replicas:
            fail(name, f"min.insync.replicas is {isr}, but kafka.min_insync_replicas is {cfg.kafka.min_insync_replicas}")
        if name.startswith(cfg.topic("held") + "."):
            ret = int(have.get("retention.ms", want["retention.ms"]))
            if 0 <= ret < int(want["retention.ms"]):
                fail(name, f"retention.ms is {ret} ({ret / 86_400_000:g} days), shorter than "
                           f"kafka.topics.held_retention_days ({t.held_retention_days:g}); raise it with "
                           f"kafka-configs --alter --add-config retention.ms={want['retention.ms']}")
            size = int(have.get("retention.bytes", "-1"))
            if size >= 0:
                fail(name, f"retention.bytes is {size}: held writes could be deleted before replay (must be -1)")
        if compacted:
            seg = int(have.get("segment.ms", want["segment.ms"]))
            if seg > int(want["segment.ms"]):
                log.warning("topic %s: segment.ms is %d, above kafka.topics.compact_segment_s (%g s): "
                            "compaction runs late and readers start slower", name, seg, t.compact_segment_s)


class TopicsNotPermitted(ConfigError):
    """A topic is missing (or hidden by ACLs) and this principal may not create it; one line naming it."""


_NOT_PERMITTED = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED)


def ensure_topics(cfg: Config, *, timeout: float = 30.0, check: bool = True) -> list[str]:
    """Create any missing topic of :func:`topic_plan`; return the ones created.

    Topics are created explicitly because auto-created topics get the
    broker's default partition count, which breaks held-partition alignment,
    and with :func:`topic_configs` (retention, compaction, min.insync.replicas).
    With ``check`` (every service at start), topics that already existed are
    checked by :func:`check_topics`, which raises :class:`TopicMismatchError`.
    Under Kafka ACLs a topic the principal may not DESCRIBE looks missing; creating
    it is refused, and that is :class:`TopicsNotPermitted` (docs/security.md).
    """
    admin = AdminClient(cfg.kafka_client_conf())
    md = admin.list_topics(timeout=timeout)
    existing = set(md.topics)
    configs = topic_configs(cfg)
    if check:
        check_topics(cfg, admin, names=[n for n in topic_plan(cfg) if n in existing], timeout=timeout, metadata=md)
    new = []
    for name, (parts, compacted) in topic_plan(cfg).items():
        if name in existing:
            continue
        new.append(NewTopic(name, parts, cfg.kafka.replication_factor, config=configs[name]))
    created = []
    for name, fut in (admin.create_topics(new, request_timeout=timeout).items() if new else []):
        try:
            fut.result(timeout=timeout)
            created.append(name)
        except KafkaException as exc:
            code = exc.args[0].code()
            if code in _NOT_PERMITTED:
                raise TopicsNotPermitted(
                    f"topic {name} is missing or not visible to this principal, which may not create it "
                    f"({exc.args[0].name()}): an administrator creates the topics (regionguard acls --apply "
                    "--create-topics) and grants DESCRIBE on each (regionguard acls)") from None
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    deadline = time.monotonic() + timeout
    while created and time.monotonic() < deadline:
        md = admin.list_topics(timeout=timeout).topics
        if all(t in md and md[t].partitions for t in created):
            break
        time.sleep(0.05)
    return created


def read_limits(cfg: Config, *, timeout: float = 30.0) -> Limits:
    """The record sizes the topics accept (``max.message.bytes``), read once at start (core/sizes.py).

    A broker that does not answer DescribeConfigs is taken to have Apache Kafka's default (logged once).
    """
    names = [cfg.topic(kind, r) for r in cfg.regions for kind in ("writes", "held")] + [cfg.topic("dead-letter")]
    admin = AdminClient(cfg.kafka_client_conf())
    confs = _describe(admin, names, timeout) or {}

    def topic_max(name: str) -> int | None:
        raw = confs.get(name, {}).get("max.message.bytes")
        return int(raw) if raw is not None and raw.isdigit() else None

    producer_max = cfg.kafka_client_conf().get("message.max.bytes")
    producer_max = int(producer_max) if producer_max is not None else None
    writes = {r: sizes.write_max(cfg.writes.max_bytes, writes_max=topic_max(cfg.topic("writes", r)),
                                 held_max=topic_max(cfg.topic("held", r)), producer_max=producer_max)
              for r in cfg.regions}
    known = [n for n in map(topic_max, names) if n is not None]
    limits = Limits(writes, sizes.dead_letter_max(topic_max(cfg.topic("dead-letter")), producer_max),
                    min(known) if known else None)
    log.info("record limits: writes.max_bytes %s, dead letters %d bytes",
             ", ".join(f"{r}={n}" for r, n in writes.items()), limits.dead_letter_max)
    return limits


#: tansu, the embedded demo broker, answers metadata with this cluster id.
TANSU_CLUSTER_ID = "tansu_cluster"


def watermarks_exact(cluster_id: str | None) -> bool:
    """Whether the broker's high watermarks can be trusted as record positions.

    Apache Kafka's and MSK's are exact. tansu's is wrong after multi-record
    batches (the last batch's base offset + 1), so readers count by consuming there.
    """
    return cluster_id != TANSU_CLUSTER_ID


def group_id(cfg: Config, name: str) -> str:
    return f"{cfg.kafka.topic_prefix}{name}"


def router_group(cfg: Config, region: str) -> str:
    """One consumer group per region, so a rebalance in one region never pauses another."""
    return group_id(cfg, f"{cfg.router.group_id}.{region}")


def replayer_group(cfg: Config, region: str) -> str:
    """Its committed offsets on ``rg.held.<region>`` are the fence-and-switch truth."""
    return group_id(cfg, f"{cfg.replay.group_id}.{region}")


#: librdkafka's Java-compatible partitioner: ``(murmur2(key) & 0x7fffffff) % partitions``, as
#: kafka-clients, kafkajs, franz-go and kafka-python compute it (docs/contract.md, "Partitioning (any
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


def make_producer(cfg: Config, *, ordered: bool = False, **extra: Any) -> Producer:
    """Idempotent, acks=all: a confirmed delivery is durable and never duplicated.

    Keys are partitioned as Java's producer does (:data:`PARTITIONER`), whatever
    the caller passes. ``kafka.client`` wins over the tuning defaults here and in
    ``extra``; the settings a guarantee rests on cannot come from it.

    ``ordered`` (the router's and replayer's producers of held copies and dead letters): a
    record never times out locally (``message.timeout.ms`` 0, whatever ``kafka.client`` says).
    An idempotent producer writes a partition's records in order, but a record that times out
    leaves a gap the later ones are written after (librdkafka INTRODUCTION.md, "Message timeout
    considerations"): a held partition must never have one.
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
    if ordered:
        conf.pop("delivery.timeout.ms", None)
        conf["message.timeout.ms"] = 0
    return Producer(conf)


def make_consumer(cfg: Config, group: str, *, region: str | None = None, **extra: Any) -> Consumer:
    """A consumer of ``group``; ``region`` (whose topics it reads) picks its ``client.rack`` (core/racks.py)."""
    rack = consumer_rack(cfg, region)
    conf = cfg.kafka_client_conf(
        **{
            **({"client.rack": rack} if rack else {}),
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": MIN_SESSION_TIMEOUT_MS,  # the broker's minimum: fastest takeover it accepts
            "heartbeat.interval.ms": 250,
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


#: produce errors that belong to one record, not to its topic: producing it again fails the same
#: way, so the record is dead-lettered instead (decided by code, never by message text)
RECORD_ERRORS = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE,    # over message.max.bytes (produce() raises) or max.message.bytes (broker)
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG,           # CORRUPT_MESSAGE (CRC)
    KafkaError._BAD_MSG,
    KafkaError._INVALID_ARG,
})


def record_level(err: KafkaError) -> bool:
    """Whether a produce error is the record's own (dead-letter it), not its topic's (retry with backoff)."""
    return err.code() in RECORD_ERRORS and not err.fatal()


class Confirmer:
    """Collects delivery reports for one round of produces.

    Usage: ``c = Confirmer(); producer.produce(..., on_delivery=c.callback)``
    then ``c.wait(producer)`` raises :class:`KafkaDeliveryError` unless every
    record was acknowledged. ``offsets`` maps (topic, partition) to the highest
    offset confirmed, which the router uses to fence held partitions.
    ``failed`` maps the index of each record given to :meth:`produce` that
    failed to its error, whether ``produce()`` raised it or the delivery report
    carried it; ``confirmed`` holds the indices Kafka acknowledged (any other index is
    failed or still unconfirmed).
    """

    def __init__(self) -> None:
        self.pending = 0
        self.errors: list[str] = []
        self.failed: dict[int, KafkaError] = {}
        self.confirmed: set[int] = set()
        self.offsets: dict[tuple[str, int], int] = {}
        self._count = 0

    def callback(self, err, msg) -> None:
        self._report(None, err, msg)

    def _report(self, index: int | None, err, msg) -> None:
        self.pending -= 1
        if err is not None:
            self.errors.append(err.str() if hasattr(err, "str") else str(err))
            if index is not None and isinstance(err, KafkaError):
                self.failed[index] = err
            return
        if index is not None:
            self.confirmed.add(index)
        tp = (msg.topic(), msg.partition())
        off = msg.offset()
        if off is not None and off >= 0 and off > self.offsets.get(tp, -1):
            self.offsets[tp] = off

    def produce(self, producer: Producer, topic: str, value: bytes | None, key: bytes | None = None,
                partition: int | None = None, headers: Iterable[tuple[str, bytes]] | None = None) -> int:
        """Produce one record; its index (for :attr:`failed`). A refused produce is a failure, never raised."""
        index = self._count
        self._count += 1
        kw: dict[str, Any] = {"key": key, "value": value,
                              "on_delivery": lambda err, msg: self._report(index, err, msg)}
        if partition is not None:
            kw["partition"] = partition
        if headers:
            kw["headers"] = list(headers)
        self.pending += 1
        while True:
            try:
                producer.produce(topic, **kw)
                break
            except BufferError:
                producer.poll(0.05)
            except KafkaException as exc:  # refused before sending (too large, unknown partition...)
                err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                self._report(index, err or KafkaError(KafkaError._FAIL, str(exc)), None)
                break
        return index

    def wait(self, producer: Producer, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.pending > 0 and time.monotonic() < deadline:
            producer.flush(min(0.5, max(0.0, deadline - time.monotonic())))
        if self.errors:
            raise KafkaDeliveryError(f"{len(self.errors)} produce(s) failed: {self.errors[0]}")
        if self.pending > 0:
            raise KafkaDeliveryError(f"{self.pending} produce(s) unconfirmed after {timeout}s")
