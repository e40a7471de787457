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

A broker that refuses the client's credentials (SASL authentication failed, a
token without the scope the broker requires) will not change its mind while
we wait: :class:`KafkaAuthRefused` ends the wait at once with the broker's
reason on one line. With ``kafka.auth`` the token is fetched first, within the
same time limit: a provider that refuses (OIDC HTTP 401) ends it at once, one
that cannot be reached is waited for like Kafka.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Callable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from .config import Config

log = logging.getLogger(__name__)

__all__ = ["KafkaAuthRefused", "KafkaUnreachable", "wait_for_kafka", "wait_for_kafka_blocking", "wait_for_kafka_signalled"]


class KafkaUnreachable(Exception):
    """Kafka did not answer within the start-up timeout (exit code 2, one line)."""

    retriable = False


class KafkaAuthRefused(KafkaUnreachable):
    """Kafka refused the client's authentication, or kafka.auth has no token (exit code 2, one line)."""


def _no_token(cfg: Config, reason: object) -> KafkaAuthRefused:
    provider = f" ({cfg.kafka.auth.token.provider})" if cfg.kafka.auth is not None else ""
    return KafkaAuthRefused(f"Kafka at {cfg.kafka.bootstrap}: no token from kafka.auth{provider}: {reason}")


def _pause(seconds: float, stopped: Callable[[], bool]) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until and not stopped():
        time.sleep(0.02)


def _first_token(cfg: Config, service: str, stopped: Callable[[], bool], deadline: float) -> bool:
    """True once ``kafka.auth`` has a token (fetched before any client asks for it); False if stopped."""
    from .oauth_tokens import TokenError, TokenRefused, token_source

    auth = cfg.kafka.auth
    if auth is None:
        return True
    source, said = token_source(auth), False
    while not stopped():
        try:
            source.get()
            return True
        except TokenRefused as exc:
            raise _no_token(cfg, exc) from None
        except TokenError as exc:
            if time.monotonic() >= deadline:
                raise _no_token(cfg, exc) from None
            if not said:
                said = True
                log.warning("%s: waiting for a token from kafka.auth (%s): %s", service, source.provider, exc)
        _pause(1.0, stopped)
    return False


def _answers(probe: AdminClient, timeout_s: float) -> bool:
    try:
        probe.list_topics(timeout=timeout_s)
        return True
    except KafkaException:
        return False


def wait_for_kafka_blocking(cfg: Config, service: str, stopped: Callable[[], bool] = lambda: False, *,
                            probe_s: float = 1.0) -> bool:
    """True once Kafka answers metadata; False if ``stopped()`` first; raises :class:`KafkaUnreachable`."""
    deadline = time.monotonic() + cfg.kafka.startup_timeout_s
    if cfg.kafka.auth is not None and not _first_token(cfg, service, stopped, deadline):
        return False
    refused: list[KafkaError] = []

    def on_error(err: KafkaError) -> None:
        if err.code() == KafkaError._AUTHENTICATION:
            refused.append(err)

    # log_level 0: the probe's reconnect lines would only repeat the one line below
    try:
        probe = AdminClient(cfg.kafka_client_conf(**{"log_level": 0, "error_cb": on_error,
                                                     "socket.connection.setup.timeout.ms": int(probe_s * 1000)}))
    except KafkaException as exc:  # only kafka.auth's oauth_cb, failing while the client is made, gets here
        from .oauth_tokens import token_source

        raise _no_token(cfg, token_source(cfg.kafka.auth).last_error or exc.args[0].str()) from None
    said = False
    while not stopped():
        if _answers(probe, min(probe_s, max(0.1, deadline - time.monotonic()))):
            if said:
                log.info("%s: Kafka at %s answers", service, cfg.kafka.bootstrap)
            return True
        probe.poll(0)  # serves on_error
        if refused:
            reason = refused[0].str().splitlines()[0][:300]
            raise KafkaAuthRefused(f"Kafka at {cfg.kafka.bootstrap} refused authentication: {reason}")
        if time.monotonic() >= deadline:
            raise KafkaUnreachable(f"Kafka at {cfg.kafka.bootstrap} did not answer within "
                                   f"{cfg.kafka.startup_timeout_s:g} s (kafka.startup_timeout_s)")
        if not said:
            said = True
            log.warning("%s: waiting for Kafka at %s (up to %g s)", service, cfg.kafka.bootstrap,
                        cfg.kafka.startup_timeout_s)
        _pause(0.2, stopped)
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
