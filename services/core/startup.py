"""Start-up: wait for Kafka for a bounded time, saying on one line what the service waits for.

A service started before its broker is reachable (a pod scheduled before the
brokers, a typo in ``kafka.bootstrap``) must neither flood the terminal with
the client library's reconnect lines nor end in a traceback: it waits up to
``kafka.startup_timeout_s``, then :class:`KafkaUnreachable` makes the command
exit with code 2 and one line (``cli.py``). SIGTERM or SIGINT ends the wait
within about a second.

Only Kafka is waited for. A region's database being unreachable at start is
the outage the router and replayer exist for: they start and hold (DESIGN of
fence-and-switch), so it is not a start-up failure for them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Callable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from .config import Config

log = logging.getLogger(__name__)

__all__ = ["KafkaUnreachable", "wait_for_kafka", "wait_for_kafka_blocking", "wait_for_kafka_signalled"]


class KafkaUnreachable(Exception):
    """Kafka did not answer within the start-up timeout (exit code 2, one line)."""

    retriable = False


def _answers(probe: AdminClient, timeout_s: float) -> bool:
    try:
        probe.list_topics(timeout=timeout_s)
        return True
    except KafkaException:
        return False


def wait_for_kafka_blocking(cfg: Config, service: str, stopped: Callable[[], bool] = lambda: False, *,
                            probe_s: float = 1.0) -> bool:
    """True once Kafka answers metadata; False if ``stopped()`` first; raises :class:`KafkaUnreachable`."""
    # log_level 0: the probe's reconnect lines would only repeat the one line below
    probe = AdminClient(cfg.kafka_client_conf(**{"log_level": 0,
                                                 "socket.connection.setup.timeout.ms": int(probe_s * 1000)}))
    deadline = time.monotonic() + cfg.kafka.startup_timeout_s
    said = False
    while not stopped():
        if _answers(probe, min(probe_s, max(0.1, deadline - time.monotonic()))):
            if said:
                log.info("%s: Kafka at %s answers", service, cfg.kafka.bootstrap)
            return True
        if time.monotonic() >= deadline:
            raise KafkaUnreachable(f"Kafka at {cfg.kafka.bootstrap} did not answer within "
                                   f"{cfg.kafka.startup_timeout_s:g} s (kafka.startup_timeout_s)")
        if not said:
            said = True
            log.warning("%s: waiting for Kafka at %s (up to %g s)", service, cfg.kafka.bootstrap,
                        cfg.kafka.startup_timeout_s)
        pause = time.monotonic() + 0.2
        while time.monotonic() < pause and not stopped():
            time.sleep(0.02)
    return False


async def wait_for_kafka(cfg: Config, stop: asyncio.Event, service: str) -> bool:
    """:func:`wait_for_kafka_blocking` for a service on an event loop, ended by ``stop``."""
    return await asyncio.to_thread(wait_for_kafka_blocking, cfg, service, stop.is_set)


def wait_for_kafka_signalled(cfg: Config, service: str) -> bool:
    """:func:`wait_for_kafka_blocking` before a service installs its own signal handlers.

    SIGTERM or SIGINT during the wait ends it (False); the previous handlers are restored.
    """
    stopped = threading.Event()
    sigs = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, lambda *_: stopped.set()) for sig in sigs}
    try:
        return wait_for_kafka_blocking(cfg, service, stopped.is_set)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
