"""Prometheus metrics shared by every service (prometheus-client).

All metric objects live here so dashboards, alert rules and the test that
checks them against a live scrape have one place to look.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram

from .config import Config, UsageError
# kept by the client's threads too, so defined in the client distribution (core/counters.py)
from .counters import BACKGROUND_ERRORS, BACKGROUND_RESTARTS, REGION_STATE_REFUSED  # noqa: F401 - re-exported
from .probes import PROBES, serve

log = logging.getLogger(__name__)

# service -> offset from metrics.port, so one host can run them all (the keys of config.METRICS_SERVICES)
SERVICE_PORT_OFFSET = {"health": 0, "router": 1, "replayer": 2, "features": 3, "demo": 4}

STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}

# health
REGION_STATE = Gauge("regionguard_region_state", "Breaker state per region: 0 closed, 1 half_open, 2 open", ["region"])
REGION_STATE_SEQ = Gauge("regionguard_region_state_seq", "Latest published state seq per region", ["region"])
TRANSITIONS = Counter("regionguard_breaker_transitions_total", "Breaker transitions", ["region", "from_state", "to_state"])
PROBE_LATENCY = Histogram(
    "regionguard_probe_latency_seconds", "Probe latency", ["region"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
PROBE_FAILURES = Counter("regionguard_probe_failures_total", "Failed probes by kind", ["region", "kind"])
HEARTBEAT_AGE = Gauge("regionguard_health_heartbeat_age_seconds", "Seconds since the last health heartbeat seen", [])
HEALTH_LEADER = Gauge("regionguard_health_leader", "1 when this health instance is the deciding leader", [])

# router
APPLIED = Counter("regionguard_writes_applied_total", "Writes applied (rows changed)", ["region", "service"])
DUPLICATES = Counter("regionguard_writes_duplicate_total", "Writes skipped by the inbox (already applied)", ["region", "service"])
STALE = Counter("regionguard_writes_stale_total", "Writes skipped by version (last-writer-wins) or no row", ["region", "service"])
GROUPS = Counter("regionguard_groups_total",
                 "Atomic write groups by outcome: applied, held, failover_applied, replayed, dead_lettered "
                 "(each whole; their rows also count in the writes_* counters)", ["region", "service", "outcome"])
HELD = Counter("regionguard_writes_held_total", "Writes diverted to the held topic", ["region", "reason"])
HELD_RESIDENCY = Counter("regionguard_writes_residency_held_total",
                         "Failover writes held for home because every closed fallback lies outside their tables' "
                         "allowed_regions", ["region"])
FAILOVER_APPLIED = Counter("regionguard_writes_failover_applied_total", "Failover-policy writes applied in a fallback region", ["region", "applied_in"])
DEAD_LETTERS = Counter("regionguard_dead_letters_total", "Records sent to the dead-letter topic", ["region", "reason"])
PRODUCE_ERRORS = Counter("regionguard_produce_errors_total",
                         "Produces Kafka refused, by topic and error code name: a record's own (MSG_SIZE_TOO_LARGE, "
                         "INVALID_RECORD) makes it a dead letter; any other is retried with backoff",
                         ["region", "topic", "code"])
CAREFUL_BATCHES = Counter("regionguard_careful_batches_total",
                          "Batches redone with a savepoint per statement after a row failed, by the error's type",
                          ["region", "service", "cause"])
CAREFUL_SECONDS = Counter("regionguard_careful_seconds_total",
                          "Seconds spent redoing batches with a savepoint per statement, by the error's type",
                          ["region", "service", "cause"])
APPLY_ERRORS = Counter("regionguard_apply_errors_total", "Retriable apply failures by type", ["region", "kind"])
BATCH_SECONDS = Histogram(
    "regionguard_apply_batch_seconds", "Time to apply one batch", ["region", "service"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WRITE_LAG = Histogram(
    "regionguard_write_lag_seconds",
    "From a write's Kafka record to the commit that applied it, by path (direct, failover, replay); one "
    "observation per batch and partition: its oldest write (core/lag.py)", ["region", "path"],
    # direct writes live in the first buckets (a p99 SLO of 0.1-1 s); replayed ones wait out an outage
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 7200),
)
HELD_PARTITIONS = Gauge("regionguard_held_partitions", "Partitions of a region currently in held mode", ["region"])
DIRECT_PARTITIONS = Gauge("regionguard_direct_partitions",
                          "Partitions of a region this router owns and applies directly (direct mode)", ["region"])
CONSUMER_LAG = Gauge("regionguard_consumer_lag", "Records behind the end of the topic", ["region", "service"])
CROSS_REGION_FETCH = Gauge("regionguard_cross_region_fetch",
                           "1 when this service's consumers of a region will fetch across regions: brokers have "
                           "racks but kafka.client_rack is unset, names no broker rack, or puts the regions it "
                           "serves in several racks (set at start, docs/topology.md)", ["region", "service"])

# inbox retention (the router prunes; `regionguard inbox prune` too)
INBOX_PRUNED = Counter("regionguard_inbox_pruned_total",
                       "Rows pruned for age: table=inbox (regionguard_applied) or tombstones", ["region", "table"])
INBOX_PRUNE_ERRORS = Counter("regionguard_inbox_prune_errors_total", "Pruning rounds that failed (retried later)",
                             ["region"])

# replayer
HELD_BACKLOG = Gauge("regionguard_held_backlog", "Held writes not yet replayed", ["region"])
HELD_OLDEST_AGE = Gauge("regionguard_held_oldest_age_seconds",
                        "Age of the oldest held write not yet replayed (0: none); exported by the status exporter",
                        ["region"])
HELD_RETENTION = Gauge("regionguard_held_retention_seconds",
                       "retention.ms of the region's held topic (kafka.topics.held_retention_days), in seconds",
                       ["region"])
REPLAYED = Counter("regionguard_writes_replayed_total", "Held writes processed by the replayer", ["region", "outcome"])
REPLAY_ACTIVE = Gauge("regionguard_replay_active", "1 while a region's held backlog is being drained", ["region"])
REPLAY_LAST_PROGRESS = Gauge("regionguard_replay_last_progress_timestamp_seconds", "Unix time of the last replay progress", ["region"])

# features
FEATURE_DISABLED = Gauge("regionguard_feature_disabled", "1 when a feature is disabled in a region", ["region", "feature"])



def metrics_port(cfg: Config, service: str) -> int:
    """``metrics.ports[service]``, else ``metrics.port`` + the service's offset (0: any free port)."""
    if service in cfg.metrics.ports:
        return cfg.metrics.ports[service]
    return cfg.metrics.port + SERVICE_PORT_OFFSET.get(service, 5) if cfg.metrics.port else 0


def start_metrics(cfg: Config, service: str, port: int | None = None) -> int | None:
    """Serve /metrics, /livez and /readyz (core/probes.py) for ``service`` on ``metrics.host`` (localhost)."""
    if not cfg.metrics.enabled:
        return None
    if port is None:
        port = metrics_port(cfg, service)
    PROBES.stall_s = cfg.metrics.loop_stall_s
    try:
        server = serve(cfg.metrics.host, port)
    except OSError as exc:  # e.g. two routers on one host with the same metrics.port
        raise UsageError(f"metrics: cannot listen on {cfg.metrics.host}:{port} ({exc.strerror}); another service "
                         f"may use it: set metrics.port or --metrics-port") from None
    bound = server.server_address[1]
    log.info("metrics on http://%s:%d/metrics", cfg.metrics.host, bound)
    return bound
