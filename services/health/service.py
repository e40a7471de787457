"""``regionguard health --config F``: probe every region, judge, publish region state.

Every instance
  probes each region every ``health.interval_s`` (:mod:`.probe`) and publishes
  its :class:`~regionguard.core.models.Observation` s to ``<prefix>observations``
  (every failure and change, successes at least once a second);
  tails that topic (group-less, from the end) so it knows which observers are
  live, and follows ``<prefix>region-state`` with a
  :class:`~regionguard.core.stateview.RegionStateView`.

The leader (one at a time)
  feeds every observation, its own and other instances' and routers'
  (``observer="router:<id>"``), to per-region breakers behind a quorum gate
  (:mod:`.judge`); publishes each transition as a RegionState (key = region)
  on the compacted ``<prefix>region-state`` and as a
  ``FailoverEvent(kind="transition")`` on ``<prefix>failover-events``;
  republishes every region's state with ``heartbeat=true`` every
  ``health.heartbeat_s``; applies operator commands
  (``ControlRecord(kind="breaker_command")`` on ``<prefix>control``, sent by
  ``regionguard breaker``).

Leader election is faust-streaming's: the app (id ``<prefix>health``, so
tests with unique prefixes never share a group) joins a consumer group and
the member assigned faust's ``__assignor-__leader`` partition leads
(``app.is_leader()``). On tansu, with the group timeouts derived from
``health.leader_session_timeout_s`` (session; heartbeat = session/3 capped
at 1 s; rebalance 4 s), the first worker leads within about 3-4 s, a SIGTERM'd
leader hands over in about 2 s and a SIGKILL'd one in about session + 3 s.
A new leader restores every breaker from the last published states, so a
handover causes no transition and ``seq`` continues. faust's client (aiokafka)
gets the security of ``kafka.client`` through core's one translation
(:mod:`regionguard.core.kafka_security`, :func:`faust_credentials`); what it
cannot carry over is refused at config load.

What is *not* done with faust, and why:

- observations, control records and region states are read with
  confluent-kafka consumers that join no group: faust agents consume as a
  group, so a topic partition would go to one worker, and that worker need
  not be the leader (faust assigns the leader topic independently); every
  instance needs all observations (observer liveness) and the leader must
  read control from a known offset after a handover.
- records are produced with the project's confluent-kafka producer
  (idempotent, acks=all), like every other service, instead of faust's
  aiokafka producer.
- the faust web server is disabled (``web_enabled=False``); metrics come
  from prometheus-client (``--metrics-port``).

The control offset the leader has consumed up to is carried in every
RegionState (``stats.control_offset``), so a new leader continues there and
no command is lost or applied twice across a handover.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from typing import Any, Callable

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from ..core import metrics as m
from ..core.config import Config, ConfigError, load_config
from ..core.kafka import ensure_topics, make_producer
from ..core.startup import wait_for_kafka_signalled
from ..core.kafka_security import kafka_security, ssl_context
from ..core.dsn import tls_warnings
from ..core.log import setup_logging
from ..core.probes import PROBES, beat_while, health_reason
from ..core.models import ControlRecord, FailoverEvent, Observation, RegionState
from ..core.log import rdkafka_log
from ..core.stateview import RegionStateView
from ..core.supervise import describe, guard, redacted_traceback, supervised, supervised_async, swallowed
from .judge import Decision, Judge
from .probe import LoopLagMonitor, RegionProber, probe_loop

log = logging.getLogger("regionguard.health")

SERVICE = "health"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--observer", metavar="NAME", default=None,
                        help="this instance's observer id (default: <hostname>-<pid>)")
    parser.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                        help="serve /metrics on PORT (default: metrics.port; 0 picks a free port)")


def main(args: argparse.Namespace) -> int:
    setup_logging(SERVICE)
    cfg = load_config(args.config)
    setup_logging(SERVICE, fmt=cfg.log.format)
    observer = args.observer or f"{socket.gethostname()}-{os.getpid()}"
    credentials = faust_credentials(cfg)  # a CA or key file that does not load: exit 2 now, not at the election
    try:
        port = m.start_metrics(cfg, SERVICE, args.metrics_port)
    except OSError as exc:
        raise ConfigError(f"metrics: cannot listen on {cfg.metrics.host}: {exc.strerror or exc}") from None
    if port is not None:
        log.info("metrics port %d", port)
    PROBES.not_ready("waiting for Kafka")
    if not wait_for_kafka_signalled(cfg, SERVICE):
        return 0
    try:
        created = ensure_topics(cfg, timeout=15)
    except KafkaException as exc:
        raise ConfigError(f"kafka.bootstrap {cfg.kafka.bootstrap}: cannot create topics ({exc})") from None
    if created:
        log.info("created topics %s", ", ".join(created))
    for line in tls_warnings(cfg.regions):  # once started: a refusal to start stays one line
        log.warning(line)
    try:
        asyncio.run(HealthService(cfg, observer, credentials).run())
    except Exception as exc:  # one line, not a traceback; the traceback at DEBUG
        log.error("health service failed: %s", describe(exc))
        log.debug("health service failed:\n%s", redacted_traceback(exc))
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
class TopicTail:
    """A group-less consumer thread over every partition of one topic, from ``start`` on.

    ``deliver(partition, offset, value)`` is called on the thread; keep it short
    (hand over to an event loop with ``call_soon_threadsafe``). An error restarts
    the thread with backoff (reported: :mod:`regionguard.core.supervise`); it goes
    on after the last record delivered, so nothing is delivered twice.
    """

    def __init__(self, cfg: Config, topic: str, start: int, deliver: Callable[[int, int, bytes | None], None],
                 name: str) -> None:
        self.cfg, self.topic, self.start_offset, self.deliver, self.name = cfg, topic, start, deliver, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._positions: dict[int, int] = {}  # partition -> next offset to deliver (kept across restarts)

    def start(self) -> "TopicTail":
        self._thread = threading.Thread(target=supervised, args=(self.name, self._run, self._stop),
                                        kwargs={"logger": log}, name=self.name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        consumer = Consumer(self.cfg.kafka_client_conf(**{
            "group.id": f"{self.cfg.kafka.topic_prefix}{self.name}-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "latest" if self.start_offset == OFFSET_END else "earliest",
            "fetch.wait.max.ms": 5, "logger": rdkafka_log,
        }))
        try:
            assigned = False
            while not self._stop.is_set():
                if not assigned:
                    try:
                        md = consumer.list_topics(self.topic, timeout=2.0).topics.get(self.topic)
                    except KafkaException:
                        md = None
                    if md is None or md.error is not None or not md.partitions:
                        self._stop.wait(0.5)
                        continue
                    consumer.assign([TopicPartition(self.topic, p, self._positions.get(p, self.start_offset))
                                     for p in md.partitions])
                    assigned = True
                msg = consumer.poll(0.1)
                if msg is None:
                    continue
                if msg.error() is not None:
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.debug("%s: %s", self.name, msg.error())
                    continue
                self._positions[msg.partition()] = msg.offset() + 1
                self.deliver(msg.partition(), msg.offset(), msg.value())
        finally:  # an error goes on to supervised(): reported, then the thread starts over
            try:
                consumer.close()
            except Exception as exc:  # reported; the consumer is dropped either way
                swallowed(self.name, exc, what="closing the consumer", logger=log)


def faust_credentials(cfg: Config) -> Any:
    """faust's ``broker_credentials`` for ``kafka.client``, through core's one translation.

    None for PLAINTEXT. The settings were checked at config load
    (:func:`~regionguard.core.kafka_security.kafka_security` refuses what aiokafka
    cannot do as librdkafka does); a CA, certificate or key file that does not
    load is a :class:`ConfigError` naming the setting, never showing a password.
    With ``kafka.auth``: OAUTHBEARER with the process's shared token source.
    """
    import faust

    sec = kafka_security(cfg.kafka.client, oauthbearer=cfg.kafka.auth is not None)
    try:
        ctx = ssl_context(sec.tls) if sec.tls is not None else None
    except ValueError as exc:
        raise ConfigError(f"kafka.client: {exc}") from None
    if sec.mechanism == "OAUTHBEARER" and cfg.kafka.auth is not None:
        from ..core.oauth_aiokafka import AiokafkaTokenProvider
        from ..core.oauth_tokens import token_source
        # the same token source as the librdkafka clients of this process (kafka.auth)
        return faust.OAuthCredentials(oauth_cb=AiokafkaTokenProvider(token_source(cfg.kafka.auth)), ssl_context=ctx)
    if sec.sasl:
        # with a context faust says SASL_SSL, without one SASL_PLAINTEXT: the protocol carries over
        return faust.SASLCredentials(username=sec.username, password=sec.password, ssl_context=ctx,
                                     mechanism=sec.mechanism)
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def make_app(cfg: Config, datadir: str, credentials: Any = None) -> Any:
    """The faust app used for leader election only (no agents, no tables, no web server).

    ``credentials``: :func:`faust_credentials` of ``cfg`` (None: PLAINTEXT).
    """
    import faust

    session = cfg.health.leader_session_timeout_s
    app = faust.App(
        f"{cfg.kafka.topic_prefix}health",
        broker=[f"kafka://{hp.strip()}" for hp in cfg.kafka.bootstrap.split(",") if hp.strip()],
        broker_credentials=credentials,
        web_enabled=False,
        datadir=datadir,
        store="memory://",
        topic_replication_factor=cfg.kafka.replication_factor,
        topic_partitions=1,
        broker_session_timeout=session,
        broker_heartbeat_interval=min(1.0, session / 3),
        broker_rebalance_timeout=4.0,
        consumer_auto_offset_reset="latest",
    )
    app.finalize()
    return app


# ---------------------------------------------------------------------------------------------
class HealthService:
    def __init__(self, cfg: Config, observer: str, credentials: Any = None) -> None:
        self.cfg = cfg
        self.observer = observer
        self.credentials = credentials  # faust's, for the leader election (faust_credentials)
        self.judge = Judge(cfg, observer)
        self.view = RegionStateView(cfg, on_change=self._on_state_seen)
        self._brokers_down = threading.Event()
        self.producer = make_producer(cfg, **{"linger.ms": 1, "logger": rdkafka_log, "error_cb": self._on_kafka_error})
        self.leader = False
        self.joined = False  # in faust's leader election
        self.stop_event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_stop = threading.Event()
        self._control: TopicTail | None = None
        self._delivery_errors = 0
        self._last_delivery_log = 0.0
        self.lag = LoopLagMonitor()
        self._last_sent: dict[str, tuple[str, float]] = {}  # region -> (kind, monotonic) last published
        self._keepalive = min(1.0, cfg.health.observation_ttl_s / 3)

    # ---- kafka output --------------------------------------------------------------------
    def _on_delivery(self, err, msg) -> None:
        if err is None:
            return
        self._delivery_errors += 1
        now = time.monotonic()
        if now - self._last_delivery_log > 10:
            self._last_delivery_log = now
            log.error("produce to %s failed (%d so far): %s", msg.topic(), self._delivery_errors, err)

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._brokers_down.set()

    async def _topics_loop(self) -> None:
        """After every broker was down, make sure our topics exist again (a memory broker loses them)."""
        assert self.stop_event is not None
        while not self.stop_event.is_set():
            if self._brokers_down.is_set():
                try:
                    created = await asyncio.to_thread(ensure_topics, self.cfg, timeout=5, check=False)
                    self._brokers_down.clear()
                    if created:
                        log.warning("brokers were down and lost topics; re-created %s", ", ".join(created))
                except Exception as exc:  # noqa: BLE001 - retry while the broker is away (counted, DEBUG)
                    swallowed("health.topics", exc, what="ensure_topics after a broker outage", logger=log,
                              level=logging.DEBUG)
            try:
                await asyncio.wait_for(self.stop_event.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    def _produce(self, topic: str, key: str, value: bytes) -> None:
        try:
            self.producer.produce(topic, key=key.encode(), value=value, on_delivery=self._on_delivery)
        except BufferError:
            self._on_delivery(KafkaError(KafkaError._QUEUE_FULL), _Msg(topic))
        except KafkaException as exc:
            self._on_delivery(exc, _Msg(topic))

    def _poll_producer(self) -> None:
        # a delivery callback that raises comes out of poll(): supervised() reports it and polls on
        supervised("health.producer", self._poll_forever, self._poll_stop, logger=log)

    def _poll_forever(self) -> None:
        while not self._poll_stop.is_set():
            self.producer.poll(0.1)

    def _publish_state(self, rec: RegionState) -> None:
        self._produce(self.cfg.topic("region-state"), rec.region, rec.model_dump_json().encode())
        m.REGION_STATE.labels(rec.region).set(m.STATE_VALUE[rec.state.value])
        m.REGION_STATE_SEQ.labels(rec.region).set(rec.seq)

    def _publish(self, decisions: list[Decision]) -> None:
        if not self.leader:
            return
        for d in decisions:
            t, rec = d.transition, d.record
            self._publish_state(rec)
            ev = FailoverEvent(kind="transition", region=rec.region, service=SERVICE, detail={
                "from": t.from_state.value, "to": t.to_state.value, "state": rec.state.value,
                "reason": rec.reason, "seq": rec.seq, "observer": self.observer, "stats": rec.stats,
            })
            self._produce(self.cfg.topic("failover-events"), rec.region, ev.model_dump_json().encode())
            m.TRANSITIONS.labels(rec.region, t.from_state.value, t.to_state.value).inc()
            log.warning("region %s: %s -> %s (%s) seq=%d", rec.region, t.from_state.value, t.to_state.value,
                        rec.reason, rec.seq)

    # ---- inputs ----------------------------------------------------------------------------
    def _emit(self, obs: Observation) -> None:
        """One of our own probe results: to our judge always, to Kafka when it tells something.

        Published: every failure, every change of (ok, kind), and a success at
        least every ``keepalive`` (1 s at most, a third of observation_ttl_s) so
        other instances keep counting us as a live observer. That keeps
        ``<prefix>observations`` at about one record per second per region and
        instance while healthy instead of one per probe.
        """
        m.PROBE_LATENCY.labels(obs.region).observe(obs.latency_s)
        if not obs.ok:
            m.PROBE_FAILURES.labels(obs.region, obs.kind).inc()
        now = time.monotonic()
        last = self._last_sent.get(obs.region)
        if not obs.ok or last is None or last[0] != obs.kind or now - last[1] >= self._keepalive:
            self._last_sent[obs.region] = (obs.kind, now)
            self._produce(self.cfg.topic("observations"), obs.region, obs.model_dump_json().encode())
        self._publish(self.judge.observe(obs))

    def _on_observation(self, _p: int, _off: int, value: bytes | None) -> None:
        if not value:
            return
        try:
            obs = Observation.model_validate_json(value)
        except Exception as exc:  # reported, skipped
            swallowed("health.observations", exc, what="ignoring an invalid observation: reading it", logger=log)
            return
        if obs.observer == self.observer:
            return  # fed directly when it was made
        self._publish(self.judge.observe(obs))

    def _on_control(self, _p: int, offset: int, value: bytes | None) -> None:
        if not self.leader:
            return
        self.judge.control_offset = offset + 1
        if not value:
            return
        try:
            rec = ControlRecord.model_validate_json(value)
        except Exception as exc:  # reported, skipped (its offset is consumed: it is never read again)
            swallowed("health.control", exc, what=f"ignoring an invalid control record at offset {offset}: reading it",
                      logger=log)
            return
        if rec.kind != "breaker_command":
            return
        action = str(rec.detail.get("action", ""))
        log.warning("breaker command %s for %s from %s", action, rec.region, rec.service or "?")
        self._publish(self.judge.command(rec.region, action, str(rec.detail.get("reason", ""))))

    def _threadsafe(self, fn: Callable[[int, int, bytes | None], None]) -> Callable[[int, int, bytes | None], None]:
        # on the loop, an exception is reported (a line, a metric) instead of asyncio's traceback
        safe = guard(f"health{fn.__name__.replace('_on_', '.')}", fn, what=fn.__name__, logger=log)

        def deliver(p: int, off: int, value: bytes | None) -> None:
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            try:
                loop.call_soon_threadsafe(safe, p, off, value)
            except RuntimeError:  # loop closing
                pass
        return deliver

    def _on_state_seen(self, _old: RegionState | None, new: RegionState) -> None:
        # view thread: keep every instance's gauges right, leader or not
        m.REGION_STATE.labels(new.region).set(m.STATE_VALUE[new.state.value])
        m.REGION_STATE_SEQ.labels(new.region).set(new.seq)

    # ---- leadership ------------------------------------------------------------------------
    async def _become_leader(self) -> bool:
        ready = await asyncio.to_thread(self.view.wait_ready, 15.0)
        if not ready:
            log.warning("elected, but %s is not readable yet; waiting before deciding", self.view.topic)
            return False
        records = self.judge.activate(self.view.states())
        self.leader = True
        m.HEALTH_LEADER.set(1)
        for rec in records:
            self._publish_state(rec)
        start = self.judge.control_offset if self.judge.control_offset is not None else OFFSET_BEGINNING
        self._control = TopicTail(self.cfg, self.cfg.topic("control"), start, self._threadsafe(self._on_control),
                                  "health-control").start()
        log.info("observer %s is the leader: deciding for %s (resumed %d region states)", self.observer,
                 ", ".join(self.cfg.regions), sum(1 for r in records if r.heartbeat))
        return True

    def _resign(self, why: str) -> None:
        if not self.leader:
            return
        self.leader = False
        self.judge.deactivate()
        m.HEALTH_LEADER.set(0)
        if self._control is not None:
            ctl, self._control = self._control, None
            threading.Thread(target=ctl.stop, daemon=True).start()
        log.info("observer %s is no longer the leader (%s)", self.observer, why)

    async def _leader_loop(self, app: Any) -> None:
        assert self.stop_event is not None
        while not self.stop_event.is_set():
            try:
                elected = bool(app.is_leader())
            except Exception as exc:  # reported; not knowing means not leading
                swallowed("health.leader", exc, what="asking faust whether we lead", logger=log)
                elected = False
            if elected and not self.leader:
                await self._become_leader()
            elif not elected and self.leader:
                self._resign("lost the election")
            try:
                await asyncio.wait_for(self.stop_event.wait(), 0.1)
            except asyncio.TimeoutError:
                pass

    async def _tick_loop(self) -> None:
        assert self.stop_event is not None
        next_hb = 0.0
        while not self.stop_event.is_set():
            if self.leader:
                self._publish(self.judge.tick())
                now = time.monotonic()
                if now >= next_hb:
                    next_hb = now + self.cfg.health.heartbeat_s
                    for rec in self.judge.heartbeats():
                        self._publish_state(rec)
            age = self.view.last_heartbeat_age()
            if age is not None:
                m.HEARTBEAT_AGE.set(age)
            try:
                await asyncio.wait_for(self.stop_event.wait(), min(self.cfg.health.interval_s, 0.1))
            except asyncio.TimeoutError:
                pass

    # ---- lifecycle ---------------------------------------------------------------------------
    def readiness(self) -> str | None:
        """/readyz (core/probes.py): the leader is known (this instance, or fresh heartbeats of another)."""
        return health_reason(self.joined, self.leader, self.view.ready, self.view.staleness())

    async def run(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        PROBES.ready_when(self.readiness)
        beating = loop.create_task(beat_while(self.stop_event), name="livez-heartbeat")
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_event.set)
        m.HEALTH_LEADER.set(0)
        poller = threading.Thread(target=self._poll_producer, name="health-producer", daemon=True)
        poller.start()
        self.view.start()
        obs_tail = TopicTail(self.cfg, self.cfg.topic("observations"), OFFSET_END,
                             self._threadsafe(self._on_observation), "health-observations").start()
        self.lag.start()
        stop = self.stop_event

        def prober_loop(r: str, dsn: str) -> Callable[[], Any]:
            # a new prober per run: probe_loop closes its prober when it ends
            return lambda: probe_loop(RegionProber(r, dsn, self.cfg.health, self.observer, lag=self.lag),
                                      self.cfg.health.interval_s, self.cfg.health.timeout_s, self._emit, stop)

        probe_tasks = [
            loop.create_task(supervised_async("health.probe", prober_loop(r, rc.dsn), stop, logger=log),
                             name=f"probe:{r}")
            for r, rc in self.cfg.regions.items()
        ]
        log.info("observer %s probing %s every %.3fs (timeout %.3fs)", self.observer,
                 ", ".join(self.cfg.regions), self.cfg.health.interval_s, self.cfg.health.timeout_s)
        datadir = tempfile.mkdtemp(prefix="regionguard-health-")
        app = None
        tasks: list[asyncio.Task] = []
        try:
            app = make_app(self.cfg, datadir, self.credentials)
            starting = loop.create_task(app.start())
            stopping = loop.create_task(self.stop_event.wait())
            await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if starting.done() and starting.exception() is not None:
                raise starting.exception()  # type: ignore[misc]
            if not self.stop_event.is_set():
                log.info("observer %s joined the leader election (group %s)", self.observer, app.conf.id)
                self.joined = True
                # an error in one of them restarts it with backoff, reported (core/supervise.py)
                tasks = [loop.create_task(supervised_async("health.leader", lambda: self._leader_loop(app),
                                                           self.stop_event, logger=log), name="leader"),
                         loop.create_task(supervised_async("health.tick", self._tick_loop, self.stop_event,
                                                           logger=log), name="tick"),
                         loop.create_task(supervised_async("health.topics", self._topics_loop, self.stop_event,
                                                           logger=log), name="topics")]
                await self.stop_event.wait()
        finally:
            log.info("observer %s stopping", self.observer)
            self.stop_event.set()
            self._resign("stopping")
            beating.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.gather(*probe_tasks, return_exceptions=True)
            if app is not None:
                try:
                    await asyncio.wait_for(app.stop(), 10)
                except Exception as exc:  # noqa: BLE001 - stopping must finish (reported)
                    swallowed("health", exc, what="stopping the faust app", logger=log)
            await self.lag.stop()
            await asyncio.to_thread(obs_tail.stop)
            await asyncio.to_thread(self.view.stop)
            self._poll_stop.set()
            await asyncio.to_thread(self.producer.flush, 5.0)
            shutil.rmtree(datadir, ignore_errors=True)
            log.info("observer %s stopped", self.observer)


class _Msg:
    """Stand-in message for delivery errors raised at produce() time."""

    def __init__(self, topic: str) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic
