"""``regionguard features``: publish which features are off in each region.

It follows ``<prefix>region-state`` (the health service's compacted topic),
evaluates the config's ``features:`` rules for every region
(:mod:`regionguard.features.rules`: ``off_when`` states, plus ``stale`` when
the health heartbeats stopped for ``health.stale_after_s``; ``critical``
features are never disabled) and publishes to the compacted
``<prefix>features``, keyed by region:

* a FeatureFlags record with the next ``seq``, ``since`` and a ``reason``
  whenever a region's set of disabled features changes (delivery confirmed
  before it counts as published; a failed publish is retried);
* the current record again with ``heartbeat=true`` every ``health.heartbeat_s``,
  so clients can tell a live feature manager from a dead one and a client
  that starts late (or after a broker lost its data) gets the full record;
* a FailoverEvent ``kind="features_changed"`` on ``<prefix>failover-events``
  for every change (turned off / turned on / conditions / reason).

On start it reads its own topic back to continue the ``seq`` and to avoid
republishing an unchanged set, and it waits until the region-state view has
caught up; a region it knows nothing about is left alone until either a
state arrives or ``stale_after_s`` has passed (then it counts as ``stale``).
SIGTERM/SIGINT stop it cleanly: the loop ends, pending records are flushed.

Why confluent-kafka and not faust-streaming (docs/contract.md suggests faust for
low-rate services): the manager needs the *whole* latest state of every
region on every start -- a full read of a compacted topic, which is exactly
what the region-state view (shared with the client library, so the manager
and clients evaluate the same rules on the same data) does with a group-less
consumer that is caught up in well under a second. A faust agent is a
consumer-group member: on tansu its group takes ~4 s to form even with the
tuned timeouts (docs/contract.md), it would commit offsets and then skip the history
on restart unless we added a changelog-backed table (another topic), and its
leader election buys nothing here because the output is a deterministic
function of the input. Run one instance (a supervisor restart costs < 1 s of
catch-up); a second instance would publish the same sets, harmlessly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from datetime import datetime, timezone

from confluent_kafka import KafkaError, KafkaException

from ..core.config import Config, UsageError, load_config
from ..core.follower import CompactedFollower
from ..core.kafka import Confirmer, KafkaDeliveryError, ensure_topics, make_producer
from ..core.startup import wait_for_kafka_signalled
from ..core.log import rdkafka_log, setup_logging
from ..core.metrics import FEATURE_DISABLED, start_metrics
from ..core.probes import PROBES, view_reason
from ..core.models import FailoverEvent, FeatureFlags
from ..core.publish import failover_event
from ..core.stateview import RegionStateView
from ..core.supervise import swallowed
from .rules import Change, FlagBook, conditions, is_stale, reason_for

log = logging.getLogger("regionguard.features")

SERVICE = "features"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve /metrics on this port (default: metrics.port + 3; 0 picks a free one)")


class FeatureManager:
    """The feature manager's loop; :meth:`run` blocks until :meth:`stop`."""

    def __init__(self, cfg: Config, *, tick_s: float = 0.1) -> None:
        self.cfg = cfg
        self.tick_s = tick_s
        self.book = FlagBook(cfg.features)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.states = RegionStateView(cfg, on_change=lambda _old, _new: self._wake.set())
        self._own = CompactedFollower(cfg, cfg.topic("features"), FeatureFlags, name="features-restore")
        # Not idempotent: records are latest-state with seq, so a duplicate is harmless, and
        # an idempotent producer stalls for good when a broker loses its producer state
        # (measured: tansu restarted -> deliveries never confirmed; plain producer: 1.9 s).
        self.producer = make_producer(cfg, **{"enable.idempotence": False, "linger.ms": 0,
                                                  "logger": rdkafka_log})
        self._started = 0.0
        self._last_stale: bool | None = None
        self._retry_at = 0.0
        self._want_topics = False
        self.published = 0
        self.heartbeats = 0

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    # -- start-up ---------------------------------------------------------------------
    def _wait_read(self, view, what: str, log_every_s: float = 10.0) -> bool:
        """Wait (no time limit, a line every ``log_every_s``) until ``view`` was read to its end.

        Flags decided from a partially read topic could be wrong (a region's newest
        state, or our own newest seq, not read yet). False when stopped first.
        """
        started = time.monotonic()
        while not self._stopping.is_set():
            PROBES.heartbeat.beat()  # waiting is a turning loop (/livez)
            if view.wait_ready(0.5):
                return True
            if time.monotonic() - started >= log_every_s:
                started = time.monotonic()
                log.warning("features waits: %s not read to its end yet", what)
        return False

    def _restore(self, timeout: float) -> None:
        self._own.start()
        try:
            self._wait_read(self._own, self.cfg.topic("features"))
            for flags in self._own.snapshot().values():
                if flags.region in self.cfg.regions:
                    self.book.restore(flags)
        finally:
            self._own.stop()
        for region, flags in self.book.current.items():
            self._set_gauges(region, flags.disabled)
        if self.book.current:
            log.info("restored flags of %d region(s) from %s", len(self.book.current), self.cfg.topic("features"))

    def _set_gauges(self, region: str, disabled) -> None:
        off = set(disabled)
        for name in self.cfg.features:
            FEATURE_DISABLED.labels(region=region, feature=name).set(1 if name in off else 0)

    # -- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        self.states.start()
        self._started = time.monotonic()
        catch_up = min(10.0, self.cfg.health.stale_after_s)
        self._restore(catch_up)
        if not self._wait_read(self.states, self.cfg.topic("region-state")):
            self.states.stop()
            return
        log.info("features started: %d feature(s), %d region(s)", len(self.cfg.features), len(self.cfg.regions))
        # /readyz (core/probes.py): flags are decided only from a view read to its end
        PROBES.ready_when(lambda: view_reason(self.states.ready))
        next_hb = 0.0
        try:
            while not self._stopping.is_set():
                PROBES.heartbeat.beat()
                self._wake.clear()
                self.step()
                now = time.monotonic()
                if now >= next_hb:
                    if self._want_topics:
                        self._want_topics = False
                        self._recreate_topics()
                    self._heartbeat()
                    next_hb = now + self.cfg.health.heartbeat_s
                self.producer.poll(0)
                self._wake.wait(min(self.tick_s, max(0.0, next_hb - time.monotonic())))
        finally:
            try:
                self.producer.flush(5)
            except Exception as exc:  # noqa: BLE001 - stopping goes on (reported)
                swallowed("features", exc, what="flushing the producer at stop", logger=log)
            self.states.stop()
            log.info("features stopped: %d change(s), %d heartbeat(s) published", self.published, self.heartbeats)

    def health_stale(self) -> bool | None:
        return is_stale(self.states.last_heartbeat_age(), self.cfg.health.stale_after_s,
                        uptime_s=time.monotonic() - self._started)

    def step(self) -> None:
        """Evaluate every region once; publish the changes."""
        if time.monotonic() < self._retry_at:
            return
        stale = self.health_stale()
        if stale is not None and stale != self._last_stale:
            if stale:
                age = self.states.last_heartbeat_age()
                log.warning("health heartbeats stopped (%s); regions count as stale",
                            "never seen" if age is None else f"last {age:.1f}s ago")
            elif self._last_stale is not None:
                log.info("health heartbeats resumed")
            self._last_stale = stale
        now = datetime.now(timezone.utc)
        changes: list[Change] = []
        for region in self.cfg.regions:
            st = self.states.state(region)
            if stale is None and st is None:
                continue  # just started, nothing known yet: don't announce anything
            conds = conditions(st, bool(stale))
            change = self.book.propose(region, conds, "", now)
            if change is None:
                continue
            reason = reason_for(region, st, bool(stale), change.flags.disabled)
            change = Change(change.flags.model_copy(update={"reason": reason}), change.turned_off,
                            change.turned_on, change.conditions)
            changes.append(change)
        if changes:
            self._publish(changes)

    def _publish(self, changes: list[Change]) -> None:
        conf = Confirmer()
        topic = self.cfg.topic("features")
        try:
            for ch in changes:
                conf.produce(self.producer, topic, ch.flags.model_dump_json().encode(), key=ch.flags.region.encode())
            conf.wait(self.producer, timeout=5.0)
        except (KafkaDeliveryError, KafkaException) as exc:
            log.warning("could not publish feature flags (%s); retrying in 1s", exc)
            self._retry_at = time.monotonic() + 1.0
            self._recreate_topics()
            return
        for ch in changes:
            self.book.commit(ch)
            self.published += 1
            self._set_gauges(ch.flags.region, ch.flags.disabled)
            log.info("%s: seq %d disabled=%s (off: %s, on: %s) - %s", ch.flags.region, ch.flags.seq,
                     ch.flags.disabled, list(ch.turned_off), list(ch.turned_on), ch.flags.reason)
            failover_event(self.cfg, self.producer, FailoverEvent(
                kind="features_changed",
                region=ch.flags.region,
                service=SERVICE,
                detail={
                    "seq": ch.flags.seq,
                    "disabled": ch.flags.disabled,
                    "turned_off": list(ch.turned_off),
                    "turned_on": list(ch.turned_on),
                    "conditions": list(ch.conditions),
                    "reason": ch.flags.reason,
                },
            ))

    def _heartbeat(self) -> None:
        now = datetime.now(timezone.utc)
        topic = self.cfg.topic("features")
        for region in self.cfg.regions:
            hb = self.book.heartbeat(region, now)
            if hb is None:
                continue
            try:
                self.producer.produce(topic, key=region.encode(), value=hb.model_dump_json().encode(),
                                      on_delivery=self._hb_delivered)
                self.heartbeats += 1
            except BufferError:
                log.warning("producer queue full; skipped a heartbeat")
            except KafkaException as exc:
                log.warning("heartbeat not sent: %s", exc)

    def _hb_delivered(self, err, _msg) -> None:
        if err is not None:
            log.debug("heartbeat delivery failed: %s", err)
            if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                self._want_topics = True  # the broker lost its topics (restarted without data)

    def _recreate_topics(self) -> None:
        try:
            created = ensure_topics(self.cfg, timeout=5.0, check=False)
            if created:
                log.info("re-created %d missing topic(s)", len(created))
        except Exception as exc:  # noqa: BLE001 - broker still down: next round (counted, DEBUG line)
            swallowed("features", exc, what="ensure_topics", logger=log, level=logging.DEBUG)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    setup_logging(SERVICE, fmt=cfg.log.format)
    if not wait_for_kafka_signalled(cfg, SERVICE):
        return 0
    try:
        ensure_topics(cfg, timeout=15.0)
    except KafkaException as exc:
        raise UsageError(f"cannot reach Kafka at {cfg.kafka.bootstrap}: {exc}") from None
    start_metrics(cfg, SERVICE, getattr(args, "metrics_port", None))
    PROBES.not_ready("restoring flags and reading the region-state view")
    mgr = FeatureManager(cfg)

    def _stop(signum, _frame) -> None:
        log.info("signal %d: stopping", signum)
        mgr.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    mgr.run()
    return 0
