"""The YAML configuration, loaded into frozen, validated pydantic models.

Every key but ``regions`` and ``tables`` has a default, chosen so that the
targets in docs/contract.md (detection time, throughput) hold without tuning.
Bad config never produces a traceback: :func:`load_config` raises
:class:`ConfigError` whose message is one line naming the field, and the CLI
turns that into exit code 2.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .dsn import redact_dsn
from .kafka_auth import KafkaAuthConfig
from .kafka_security import kafka_security
from .log import add_secrets, rdkafka_log, scrub
from .refs import RefError, resolve

IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
REGION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class ConfigError(Exception):
    """A configuration problem, with a one-line message naming the field."""


class UsageError(Exception):
    """A one-line problem with the command line or environment (the CLI exits 2)."""


#: Apache Kafka's default ``group.min.session.timeout.ms`` / ``group.max.session.timeout.ms``:
#: a consumer asking for a session outside them is refused when it joins its group.
MIN_SESSION_TIMEOUT_MS = 6_000
MAX_SESSION_TIMEOUT_MS = 1_800_000

_COMMITS = "offsets are stored and committed only after a write is applied"
_ACKS = "producers use acks=all, so an acknowledged write survives the loss of a broker"
#: librdkafka settings that regionguard sets on each client itself, because a guarantee rests
#: on them; ``kafka.client`` may not hold them (key -> why). Aliases are listed too.
CLIENT_FIXED: dict[str, str] = {
    "bootstrap.servers": "use kafka.bootstrap (or $KAFKA_BOOTSTRAP)",
    "metadata.broker.list": "use kafka.bootstrap (or $KAFKA_BOOTSTRAP)",
    "acks": _ACKS,
    "request.required.acks": _ACKS,
    "enable.idempotence": "producers are idempotent, so a retried produce is never duplicated or reordered",
    "transactional.id": "every producer would share one transactional id and fence the others",
    "partitioner": "producers use murmur2_random, the Java-compatible partitioner every language must share",
    "enable.auto.commit": _COMMITS,
    "auto.commit.enable": _COMMITS,
    "enable.auto.offset.store": _COMMITS,
    "isolation.level": "consumers read committed records only",
    "auto.offset.reset": "each consumer chooses where a new group starts; 'latest' would skip unrouted writes",
    "group.id": "each service has its own groups (see kafka.topic_prefix, router.group_id, replay.group_id)",
    "group.instance.id": "every consumer would share one static member id and fence the others",
    "enable.partition.eof": "readers of compacted topics set it to know they have read everything",
}


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{key!r} must be an integer, not {value!r}")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"{key!r} must be an integer, not {value!r}") from None


def check_client_conf(client: dict[str, Any], *, oauthbearer: bool = False) -> None:
    """Refuse ``kafka.client`` settings that would break a guarantee (ValueError, one line naming the key).

    Security settings the health service's faust client cannot apply as
    librdkafka does are refused too (:func:`~.kafka_security.kafka_security`).
    Everything else in ``kafka.client`` wins over regionguard's own defaults.
    """
    for key in client:
        if key in CLIENT_FIXED:
            raise ValueError(f"{key!r} is set by regionguard and cannot be configured: {CLIENT_FIXED[key]}")
    for key in ("max.in.flight.requests.per.connection", "max.in.flight"):
        if key in client and _as_int(key, client[key]) > 5:
            raise ValueError(f"{key!r} must be at most 5: idempotent producers keep order only up to 5 in flight")
    for key in ("retries", "message.send.max.retries"):
        if key in client and _as_int(key, client[key]) < 1:
            raise ValueError(f"{key!r} must be at least 1: idempotent producers need retries")
    if "queuing.strategy" in client and str(client["queuing.strategy"]) != "fifo":
        raise ValueError("'queuing.strategy' must be fifo: other strategies reorder a row's writes")
    session = MIN_SESSION_TIMEOUT_MS
    if "session.timeout.ms" in client:
        session = _as_int("session.timeout.ms", client["session.timeout.ms"])
        if not MIN_SESSION_TIMEOUT_MS <= session <= MAX_SESSION_TIMEOUT_MS:
            raise ValueError(f"'session.timeout.ms' ({session}) must be between {MIN_SESSION_TIMEOUT_MS} and "
                             f"{MAX_SESSION_TIMEOUT_MS}: Apache Kafka's group.min/max.session.timeout.ms refuse it")
    if "heartbeat.interval.ms" in client:
        beat = _as_int("heartbeat.interval.ms", client["heartbeat.interval.ms"])
        if not 0 < beat < session:
            raise ValueError(f"'heartbeat.interval.ms' ({beat}) must be positive and below session.timeout.ms "
                             f"({session})")
    if "max.poll.interval.ms" in client:
        poll = _as_int("max.poll.interval.ms", client["max.poll.interval.ms"])
        if poll < session:
            raise ValueError(f"'max.poll.interval.ms' ({poll}) must be at least session.timeout.ms ({session})")
    # the same security for the health service's leader election (faust/aiokafka) as for librdkafka, or none
    kafka_security(client, oauthbearer=oauthbearer)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TopicsConfig(_Frozen):
    """Settings given to the topics regionguard creates (existing topics are checked at start)."""

    held_retention_days: float = Field(
        14, gt=0, le=3650,
        description="retention.ms of rg.held.<region>: an outage (plus its replay) must end before this; "
                    "an alert fires at 70% and 90% of it. Always set explicitly, never the broker's default.")
    writes_retention_days: float = Field(
        7, gt=0, le=3650, description="retention.ms of rg.writes.<region> (records are routed within seconds).")
    dead_letter_retention_days: float = Field(
        30, gt=0, le=3650, description="retention.ms of rg.dead-letter: time to fix and re-publish dead letters.")
    compact_segment_s: float = Field(
        600, gt=0, le=3600,
        description="segment.ms of the compacted topics (region-state, features). Kafka never compacts the "
                    "active segment, so this bounds what a starting reader reads beyond the latest records.")
    compact_dirty_ratio: float = Field(
        0.1, gt=0, le=0.9, description="min.cleanable.dirty.ratio of the compacted topics.")
    compact_delete_retention_s: float = Field(
        3600, ge=0, description="delete.retention.ms of the compacted topics: how long a tombstone stays readable.")


PRINCIPAL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*:[^\s,;]+$")


def parse_principal(value: str) -> str:
    """A Kafka principal ``Type:name`` (e.g. ``User:rg-router``), stripped; ValueError (one line) otherwise."""
    v = str(value).strip()
    if not PRINCIPAL_RE.match(v):
        raise ValueError(f"principal {v!r} must be TYPE:NAME, e.g. User:rg-router")
    return v


class PrincipalsConfig(_Frozen):
    """Kafka principals, one per service, for ``regionguard acls`` (docs/security.md)."""

    router: str | None = Field("User:rg-router", description="Principal of the router.")
    replayer: str | None = Field("User:rg-replayer", description="Principal of the replayer.")
    health: str | None = Field("User:rg-health", description="Principal of the health service.")
    features: str | None = Field("User:rg-features", description="Principal of the features service.")
    operator: str | None = Field("User:rg-operator", description=(
        "Principal of operators' commands (breaker, status, dead-letters)."))
    applications: tuple[str, ...] = Field(("User:rg-app",), description=(
        "Principals of applications: they may only write the writes topics."))

    @field_validator("router", "replayer", "health", "features", "operator")
    @classmethod
    def _one(cls, v):
        return None if v is None else parse_principal(v)

    @field_validator("applications")
    @classmethod
    def _many(cls, v):
        return tuple(parse_principal(p) for p in v)

    def by_role(self) -> dict[str, tuple[str, ...]]:
        """role -> principals (a role set to null has none)."""
        out = {r: (() if getattr(self, r) is None else (getattr(self, r),))
               for r in ("router", "replayer", "health", "features", "operator")}
        out["applications"] = self.applications
        return out


class KafkaConfig(_Frozen):
    bootstrap: str = Field("127.0.0.1:9092", description="Broker list; `$KAFKA_BOOTSTRAP` overrides it.")
    topic_prefix: str = Field("rg.", description="Prefix of every topic and consumer group.")
    partitions: int = Field(12, ge=1, le=10_000, description="Partitions of each writes/held topic (created at start).")
    replication_factor: int = Field(1, ge=1, le=16, description="Replication of created topics (3 on a real cluster).")
    min_insync_replicas: int = Field(
        1, ge=1, le=16,
        description="min.insync.replicas of created topics (2 with replication 3); at most replication_factor.")
    topics: TopicsConfig = Field(TopicsConfig(), description="Retention and compaction settings of created topics.")
    startup_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="How long a service waits at start for Kafka to answer; it says on one line what it waits "
                    "for, and exits with code 2 when the time is up.")
    principals: PrincipalsConfig = Field(
        PrincipalsConfig(), description="Kafka principals per service, for `regionguard acls` (docs/security.md).")
    client_rack: str | dict[str, str] | None = Field(
        None,
        description="librdkafka `client.rack` of every consumer, so it fetches from a replica in its own region "
                    "(KIP-392; brokers need `broker.rack` and the RackAwareReplicaSelector, docs/topology.md): one "
                    "rack for every consumer of this process, or a map region -> rack (the consumers of a "
                    "region's topics fetch from that region's rack). Routers and replayers warn at start when "
                    "they would fetch across regions.")
    group_session_margin_s: float = Field(
        3.0, ge=0, le=600,
        description="Routers and replayers ask for a group session (`session.timeout.ms`) of the brokers' "
                    "`broker.session.timeout.ms` plus this, read at start from a cluster of two or more brokers (at least "
                    "6 s; 6 s when the brokers do not say): a member then outlives "
                    "its group coordinator's failover when a broker dies, instead of giving up its partitions "
                    "and rejoining (docs/topology.md). A crashed member is replaced that much later. "
                    "`session.timeout.ms` in kafka.client wins.")

    @model_validator(mode="after")
    def _min_isr_fits(self):
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"min_insync_replicas ({self.min_insync_replicas}) exceeds replication_factor "
                             f"({self.replication_factor})")
        return self

    # before client: client's check needs to know whether auth is set
    auth: KafkaAuthConfig | None = Field(
        None, description="SASL/OAUTHBEARER for every client (docs/kafka-auth.md): mechanism oauthbearer and a "
                          "token from msk_iam, oidc or unsecured_jwt; security.protocol stays in kafka.client.")
    client: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="librdkafka settings of every client (security.protocol, sasl.*, ssl.*, tuning); they win "
                    "over regionguard's defaults. Settings a guarantee rests on (acks, enable.idempotence, "
                    "partitioner, enable.auto.commit, isolation.level, group.id, ...) are refused, and so are "
                    "security settings the health service's faust client cannot apply as librdkafka does "
                    "(GSSAPI, ssl.keystore.*, ...); OAUTHBEARER is set in kafka.auth.",
    )

    @field_validator("client")
    @classmethod
    def _client_keeps_guarantees(cls, v, info: ValidationInfo):
        check_client_conf(v, oauthbearer=info.data.get("auth") is not None)
        return v

    @model_validator(mode="after")
    def _auth_has_a_sasl_protocol(self):
        if self.auth is not None and not self.client:  # client's own check ran only if client was given
            kafka_security(self.client, oauthbearer=True)
        return self


class RegionConfig(_Frozen):
    dsn: str = Field(description="asyncpg DSN (a postgresql:// URL) of the region's primary. Without sslmode "
                                 "(or $PGSSLMODE) the services warn at start: asyncpg's default, prefer, never "
                                 "verifies the server; sslmode=disable says plain text is meant. Keep the password "
                                 "out of the file with a reference: postgresql://app:${env:PG_PASSWORD}@host/db.")
    fallbacks: tuple[str, ...] = Field((), description="Regions to read from (and fail over to) when this one is down.")
    read_replicas: tuple[str, ...] = Field((), description="Extra read-only DSNs for read routing.")
    statement_cache_size: int = Field(100, ge=0, description=(
        "asyncpg's prepared-statement cache per connection (its default, 100). 0 behind a pooler that "
        "cannot keep prepared statements: PgBouncer in transaction or statement mode before 1.21 (or "
        "with max_prepared_statements = 0), and RDS Proxy, where a prepared statement pins the session."))

    def __repr_args__(self):  # keep passwords out of reprs and logs
        for k, v in super().__repr_args__():
            yield k, (redact_dsn(v) if k == "dsn" else v)


class TableConfig(_Frozen):
    key: tuple[str, ...] = Field(min_length=1, description="Key columns, all required in every write.")
    version: str | None = Field(None, description="Version column: last-writer-wins when set.")
    columns: tuple[str, ...] | None = Field(
        None, description="Optional column allow-list; defaults to the table's columns in the database."
    )
    allowed_regions: tuple[str, ...] | None = Field(None, description=(
        "Data residency: the only regions whose databases (and caches) may hold this table's rows. A "
        "failover write is never applied outside them (held for home instead) and reads never fall back "
        "outside them. Default: every region."))

    @field_validator("key", "columns")
    @classmethod
    def _idents(cls, v):
        for name in v or ():
            if not IDENT_RE.match(name):
                raise ValueError(f"{name!r} is not a plain SQL identifier")
        return v

    @field_validator("version")
    @classmethod
    def _ident(cls, v):
        if v is not None and not IDENT_RE.match(v):
            raise ValueError(f"{v!r} is not a plain SQL identifier")
        return v


class HealthConfig(_Frozen):
    # Defaults measured with bench/detection.py (docs/health.md): detection of a
    # blackholed/refusing/crashed region well under 1 s, no false opens at 10% probe loss.
    interval_s: float = Field(0.05, gt=0, description="A probe starts every interval_s per region (they may overlap).")
    timeout_s: float = Field(0.3, gt=0, description="Deadline of one probe, connect and query together.")
    fresh_connection_every: int = Field(10, ge=1, description="Every Nth probe also opens a fresh connection and checks writability.")
    heartbeat_s: float = Field(1.0, gt=0, description="Health and features republish current state this often.")
    stale_after_s: float = Field(
        12.0, gt=0,
        description="Views older than this count as stale; above the leader handover time after a crash "
                    "(leader_session_timeout_s plus a rebalance).")
    quorum: int | None = Field(
        None, ge=1,
        description="Observers that must see a failure before a region opens (never more than the live ones). "
                    "Unset: a majority of the observers heard from within observation_ttl_s (1 of 1, 2 of 2 or 3).")
    observation_ttl_s: float = Field(3.0, gt=0, description="An observer that said nothing for this long no longer counts.")
    leader_session_timeout_s: float = Field(
        6.0, ge=MIN_SESSION_TIMEOUT_MS / 1000, le=MAX_SESSION_TIMEOUT_MS / 1000,
        description="Kafka group session timeout of the health leader election: a crashed leader is replaced "
                    "about this plus 3 s later. 6 to 1800: Apache Kafka's default group.min/max.session.timeout.ms.")
    max_clock_skew_s: float = Field(
        60.0, gt=0,
        description="Views refuse a region-state record stamped further than this in their own future "
                    "(a forged or badly clocked publisher); counted in regionguard_region_state_refused_total.")
    max_epoch_jump: int = Field(
        100, ge=1,
        description="Views refuse a region-state record whose epoch is more than this above the highest epoch "
                    "they accepted (a new health leader takes one above the highest it read).")


class BreakerConfig(_Frozen):
    consecutive_failures: int = Field(8, ge=1, description="Closed -> open after this many failures in a row.")
    window: int = Field(100, ge=1, description="Sliding window (calls) for the failure and slow-call rates.")
    min_calls: int = Field(40, ge=1, description="Rates are judged only once the window holds this many calls.")
    failure_rate: float = Field(0.5, gt=0, le=1, description="Closed -> open at this failure rate.")
    slow_call_s: float = Field(0.2, gt=0, description="A successful probe slower than this is slow.")
    slow_call_rate: float = Field(0.8, gt=0, le=1, description="Closed -> open at this slow-call rate.")
    open_wait_s: float = Field(2.0, gt=0, description="Open -> half_open after this wait.")
    open_wait_max_s: float = Field(30.0, gt=0, description="Cap of the backoff after repeated openings.")
    open_wait_multiplier: float = Field(2.0, ge=1.0, description="Wait grows by this factor on each re-opening.")
    half_open_calls: int = Field(3, ge=1, description="Half_open -> closed after this many successful trial calls.")
    recovery_probes: int = Field(
        10, ge=0, le=100_000,
        description="Open -> half_open before the open wait ends once this many probes in a row succeeded "
                    "(not slow) while open; a failure restarts the count, and the half-open trial still "
                    "decides. 0: only the open wait (resilience4j). Never 1: one success is no recovery.")

    @field_validator("recovery_probes")
    @classmethod
    def _recovery_needs_a_run(cls, v):
        if v == 1:
            raise ValueError("recovery_probes must be 0 (off) or at least 2: a single successful probe during "
                             "a fault must not end the open wait")
        return v


class RouterConfig(_Frozen):
    batch_max: int = Field(1000, ge=1, le=100_000, description="Writes per DB transaction.")
    batch_wait_ms: int = Field(5, ge=0, description="How long a batch may wait to fill up.")
    pool_size: int = Field(4, ge=1, description="asyncpg connections per region (the bulkhead).")
    lanes: int = Field(2, ge=1, le=64, description=(
        "Consumers per region in one router process, each applying its share of the partitions on its own "
        "connection, so PostgreSQL and Python work at the same time. Needs pool_size >= lanes."))
    retry_initial_s: float = Field(0.05, gt=0, description="First backoff after a transient DB error.")
    retry_max_s: float = Field(2.0, gt=0, description="Cap of the exponential backoff.")
    statement_timeout_s: float = Field(5.0, gt=0, description="Client-side timeout of one DB statement.")
    group_id: str = Field("router", description="Consumer group name (prefixed; one group per region).")

    @model_validator(mode="after")
    def _lanes_have_connections(self):
        if self.lanes > self.pool_size:
            raise ValueError(f"lanes ({self.lanes}) exceeds pool_size ({self.pool_size}): "
                             "each lane needs its own connection")
        return self


class FeatureConfig(_Frozen):
    off_when: tuple[Literal["open", "half_open", "closed", "stale"], ...] = Field(
        (), description="Region states in which the feature is disabled (stale: health heartbeats stopped).")
    critical: bool = Field(False, description="Never disabled.")


class ReplayConfig(_Frozen):
    max_rate: float = Field(20_000, ge=0, description="Writes/s per region; 0 means unlimited.")
    batch_max: int = Field(4000, ge=1, description=(
        "Held writes per replay transaction, at most; with max_rate, at most a fifth of a second of it."))
    lanes: int = Field(2, ge=1, le=64, description=(
        "Consumers per region in one replayer process (as router.lanes); max_rate is shared by them. "
        "Needs router.pool_size >= lanes."))
    group_id: str = Field("replayer", description="Consumer group name; its offsets gate the switch back to direct.")

    @property
    def batch_size(self) -> int:
        """Writes per replay transaction: ``batch_max``, cut so a rate-limited replay stays smooth.

        A replay is a bulk catch-up, so its transactions are larger than the router's (100k held
        writes replayed in 1.7-2.4 s in batches of 4,000 against 2.4-2.7 s in batches of 1,000,
        alternated, docs/benchmarks.md); but the token bucket lets one batch through at once, so with
        ``max_rate`` a batch is at most 0.2 s of it.
        """
        if self.max_rate <= 0:
            return self.batch_max
        return max(1, min(self.batch_max, int(self.max_rate / 5)))


class InboxConfig(_Frozen):
    """Retention of the exactly-once inbox (``regionguard_applied``) and the delete tombstones."""

    retention_s: float | None = Field(
        None, gt=0,
        description="Inbox rows (`regionguard_applied`) and delete tombstones (`regionguard_tombstones`) older "
                    "than this are pruned. Default (null): the longer of kafka.topics.writes_retention_days and "
                    "held_retention_days, plus margin_s. Never below that topic retention: a write Kafka can "
                    "still redeliver or replay must find its inbox row (else it applies twice) and its "
                    "key's tombstone (else an older write brings a deleted row back).")
    margin_s: float = Field(86_400, ge=0, description="Added to the topic retention for the default retention_s.")
    prune: bool = Field(True, description="The router prunes, in the background, every region it routes.")
    prune_every_s: float = Field(600, gt=0, description="Pause between two pruning rounds of a region.")
    prune_batch: int = Field(
        5000, ge=1, le=100_000, description="Rows per DELETE: each batch is one short transaction.")
    prune_pause_s: float = Field(
        0.5, ge=0, description="Pause between two batches of a round: pruning deletes at most "
                               "prune_batch / prune_pause_s rows/s (10,000 by default).")

    def topic_retention_s(self, kafka: "KafkaConfig") -> float:
        """How long Kafka may still hand a write to a router or replayer: writes and held topics."""
        return max(kafka.topics.writes_retention_days, kafka.topics.held_retention_days) * 86_400

    def effective_retention_s(self, kafka: "KafkaConfig") -> float:
        """``retention_s``, or the topic retention plus ``margin_s``."""
        return self.retention_s if self.retention_s is not None else self.topic_retention_s(kafka) + self.margin_s


class LogConfig(_Frozen):
    format: Literal["text", "json"] = Field(
        "text", description="`text`: one line per record; `json`: one JSON object per line (time, level, service, "
                            "logger, message; region, partition and write_id where a record has them).")


# services with a metrics port (core/metrics.py gives each an offset from metrics.port)
METRICS_SERVICES = ("health", "router", "replayer", "features", "demo")


class MetricsConfig(_Frozen):
    host: str = Field("127.0.0.1", description="Bind address of /metrics, /livez and /readyz (localhost by default).")
    port: int = Field(9400, ge=0, le=65535, description=(
        "0 picks a free port; each service adds its offset (health +0, router +1, replayer +2, features +3, "
        "demo +4) unless metrics.ports names its port."))
    ports: dict[str, int] = Field(default_factory=dict, description=(
        "A port per service, e.g. {router: 9101, replayer: 9102}; keys: health, router, replayer, features, "
        "demo. A service not named uses metrics.port + its offset; --metrics-port overrides both."))
    loop_stall_s: float = Field(30.0, gt=0, description=(
        "/livez answers 503 once the service's loop has not turned for this many seconds (a wedged process)."))
    enabled: bool = Field(True, description="Serve /metrics, /livez and /readyz at all.")

    @field_validator("ports")
    @classmethod
    def _known_services(cls, v):
        for name, port in v.items():
            if name not in METRICS_SERVICES:
                raise ValueError(f"unknown service {name!r} (one of {', '.join(METRICS_SERVICES)})")
            if not 0 <= port <= 65535:
                raise ValueError(f"port of {name} must be 0..65535, not {port}")
        return v


class RedisConfig(_Frozen):
    url: str | None = Field(None, description="When set, the router writes applied rows through to Redis.")
    ttl_s: int = Field(3600, ge=1)
    region: str | None = Field(None, description=(
        "The region the Redis server lives in, for data residency: rows of a table with allowed_regions are "
        "cached (and read from the cache) only when this region is among them. Unset: never cached."))


class DeadLettersConfig(_Frozen):
    max_redrives: int = Field(3, ge=0, description=(
        "`regionguard dead-letters redrive` refuses (and reports) a dead letter whose write was already "
        "redriven this many times (its `rg-redrive-count` header): a loop guard."))


class WritesConfig(_Frozen):
    max_bytes: int | None = Field(None, ge=1, description=(
        "The largest write (record key + value, in bytes) the router accepts; a larger one is dead-lettered "
        "with reason too_large. Default: derived at start from max.message.bytes of the region's writes and "
        "held topics (and the producer's message.max.bytes), less room for the held copy's headers, so a "
        "write that is accepted can always be held."))


class Config(_Frozen):
    kafka: KafkaConfig = KafkaConfig()
    regions: dict[str, RegionConfig] = Field(min_length=1)
    tables: dict[str, TableConfig] = Field(min_length=1)
    health: HealthConfig = HealthConfig()
    breaker: BreakerConfig = BreakerConfig()
    router: RouterConfig = RouterConfig()
    features: dict[str, FeatureConfig] = Field(default_factory=dict)
    replay: ReplayConfig = ReplayConfig()
    inbox: InboxConfig = InboxConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    redis: RedisConfig = RedisConfig()
    dead_letters: DeadLettersConfig = DeadLettersConfig()
    writes: WritesConfig = WritesConfig()

    @field_validator("regions")
    @classmethod
    def _region_names(cls, v):
        for name in v:
            if not REGION_RE.match(name):
                raise ValueError(f"region name {name!r} must be letters, digits, '.', '_' or '-'")
        return v

    @field_validator("tables")
    @classmethod
    def _table_names(cls, v):
        for name in v:
            if not IDENT_RE.match(name):
                raise ValueError(f"table name {name!r} is not a plain SQL identifier")
        return v

    @model_validator(mode="after")
    def _fallbacks_exist(self):
        if self.replay.lanes > self.router.pool_size:
            raise ValueError(f"replay.lanes ({self.replay.lanes}) exceeds router.pool_size "
                             f"({self.router.pool_size}): each lane needs its own connection")
        for name, region in self.regions.items():
            for fb in region.fallbacks:
                if fb not in self.regions:
                    raise ValueError(f"regions.{name}.fallbacks names unknown region {fb!r}")
                if fb == name:
                    raise ValueError(f"regions.{name}.fallbacks names the region itself")
        if self.inbox.retention_s is not None:
            floor = self.inbox.topic_retention_s(self.kafka)
            if self.inbox.retention_s < floor:
                raise ValueError(f"inbox.retention_s ({self.inbox.retention_s:.0f}) is below the retention of the "
                                 f"writes/held topics ({floor:.0f} s): a write Kafka still holds could apply twice "
                                 "or bring a deleted row back")
        if self.redis.region is not None and self.redis.region not in self.regions:
            raise ValueError(f"redis.region names unknown region {self.redis.region!r}")
        for name, table in self.tables.items():
            for r in table.allowed_regions or ():
                if r not in self.regions:
                    raise ValueError(f"tables.{name}.allowed_regions names unknown region {r!r}")
            if table.columns is not None:
                missing = [c for c in (*table.key, *([table.version] if table.version else [])) if c not in table.columns]
                if missing:
                    raise ValueError(f"tables.{name}.columns lacks key/version column {missing[0]!r}")
        return self

    def allowed_in(self, table: str, region: str | None) -> bool:
        """Data residency: may ``table``'s rows be stored in ``region`` (None: a place in no region)?"""
        allowed = self.tables[table].allowed_regions
        return allowed is None or region in allowed

    def cacheable(self, table: str) -> bool:
        """May ``table``'s rows go to (and be read from) the Redis cache (``redis.region``)?"""
        return self.allowed_in(table, self.redis.region)

    def topic(self, kind: str, region: str | None = None) -> str:
        """Topic name, e.g. ``topic("writes", "eu")`` -> ``rg.writes.eu``."""
        base = f"{self.kafka.topic_prefix}{kind}"
        return f"{base}.{region}" if region else base

    def kafka_client_conf(self, **extra: Any) -> dict[str, Any]:
        """librdkafka settings of one client: ``extra`` are the caller's, ``kafka.client`` the user's.

        The user's values win over the caller's defaults; the caller's values of
        :data:`CLIENT_FIXED` keys (group.id, enable.auto.commit, acks, ...) win over
        everything, since a guarantee rests on them (config refuses them from the user).
        """
        # librdkafka's own lines go through our logger, rate-limited (core/log.py), never raw to stderr
        conf: dict[str, Any] = {"bootstrap.servers": self.kafka.bootstrap, "logger": rdkafka_log}
        conf.update((k, v) for k, v in extra.items() if k not in CLIENT_FIXED)
        conf.update((k, v) for k, v in self.kafka.client.items() if k not in CLIENT_FIXED)
        conf.update((k, v) for k, v in extra.items() if k in CLIENT_FIXED)
        if self.kafka.auth is not None:
            from .oauth_tokens import librdkafka_settings  # the process's one token source
            conf.update(librdkafka_settings(self.kafka.auth))
        return conf


def _first_error(exc: ValidationError) -> str:
    return error_line(exc.errors()[0])


def error_line(err: Any) -> str:
    """One of pydantic's errors as one line naming the field (``regions.eu.dsn: required field is missing``)."""
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required field is missing"
    msg = msg.removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg  # a rule across sections names its fields itself


def parse_config(data: Any, *, source: str = "config") -> Config:
    """Validate ``data``, its references (``${env:NAME}``, ``${file:/path[:key]}``, core/refs.py) resolved.

    The values references resolve to are scrubbed from every log line from now on, and from the
    error this raises (a validator may quote the value it refuses).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        resolved = resolve(data)
    except RefError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    add_secrets(resolved.secrets)
    try:
        return Config.model_validate(resolved.data)
    except ValidationError as exc:
        raise ConfigError(scrub(f"{source}: {_first_error(exc)}")) from None


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load the YAML file named by ``path`` or ``$REGIONGUARD_CONFIG``.

    ``$KAFKA_BOOTSTRAP`` overrides ``kafka.bootstrap`` so tests and operators
    can point any config at another broker.
    """
    p, data = read_yaml(path)
    cfg = parse_config(data, source=str(p))
    return with_env_overrides(cfg)


def read_yaml(path: str | os.PathLike | None = None) -> tuple[Path, Any]:
    """The config file named by ``path`` or ``$REGIONGUARD_CONFIG``, parsed but not validated."""
    path = path or os.environ.get("REGIONGUARD_CONFIG")
    if not path:
        raise ConfigError("no config: pass --config FILE or set REGIONGUARD_CONFIG")
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        return p, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}: invalid YAML{where}") from None


def with_env_overrides(cfg: Config) -> Config:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if bootstrap:
        cfg = cfg.model_copy(update={"kafka": cfg.kafka.model_copy(update={"bootstrap": bootstrap})})
    return cfg


def statement_cache_size(cfg: "Config", region: str) -> int:
    """asyncpg's statement cache size for ``region``'s connections (its default for a region not configured)."""
    rc = cfg.regions.get(region)
    return rc.statement_cache_size if rc is not None else 100
