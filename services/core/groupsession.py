"""How long a router's or replayer's group session lasts: long enough to outlive its coordinator's failover.

A consumer group's coordinator is the leader of one ``__consumer_offsets``
partition. When the broker holding it dies, the partition gets a new leader
only once the controller fences that broker, ``broker.session.timeout.ms``
after its last heartbeat (9 s by default); the new coordinator then loads the
group and resumes every member's session. A member whose own session
(``session.timeout.ms``) ran out first has meanwhile given up its partitions
(librdkafka: "session timed out ... revoking assignment and rejoining group")
and rejoins under a new member id; the new coordinator waits for the old
members to expire before it hands out anything, so the region applied nothing
for fencing + session + a rebalance: 15-17 s with the broker's defaults and the
6 s session the router used (bench/coordinator_loss.py), although its own
partitions' leaders never moved.

So the group session is the brokers' fencing time plus ``kafka.group_session_margin_s``
(never under Apache Kafka's minimum, 6 s), read from the brokers once at start; with a
single broker there is no failover to outlive and the session stays at 6 s.
The cost is the other side of the same timer: a member that crashed is replaced
that much later. ``session.timeout.ms`` in ``kafka.client`` wins over this.

The same fencing time bounds how long a request to a broker that stopped answering is worth
waiting for (``socket.timeout.ms``, and ``request.timeout.ms`` for produce requests): by then
the controller has fenced that broker and moved its leaderships and coordinators, so the request
is given up, the connection closed and the client's metadata refreshed, and the retry reaches the
new leader. librdkafka's defaults (60 s, 30 s) are for brokers that die with a reset: a broker
cut off by a network partition answers nothing, and a router's offset commit to a coordinator on
it held back its heartbeats and its revocation for up to a minute (issue 26, the partition run).
Never under :data:`MIN_REQUEST_TIMEOUT_MS`; ``kafka.client`` wins here too.

Ours by hand: it is a rule about regionguard's groups; the read is one DescribeConfigs.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from .config import MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS, Config

log = logging.getLogger(__name__)

FENCE_KEY = "broker.session.timeout.ms"

#: The shortest request timeout given to the services' clients: a loaded broker's answers take
#: well under this; a timeout closes the connection (librdkafka ``socket.max.fails``), so a
#: too-short one would cut connections to brokers that are only slow.
MIN_REQUEST_TIMEOUT_MS = 3000

REQUEST_KEYS = ("socket.timeout.ms", "request.timeout.ms")


def session_ms(fence_ms: int | None, margin_s: float) -> int:
    """The group session for brokers that fence a silent broker after ``fence_ms`` (None: unknown)."""
    if fence_ms is None:
        return MIN_SESSION_TIMEOUT_MS
    return max(MIN_SESSION_TIMEOUT_MS, min(MAX_SESSION_TIMEOUT_MS, fence_ms + int(round(margin_s * 1000))))


def request_timeout_ms(fence_ms: int | None) -> int | None:
    """How long a service's client waits for a broker's answer (None: librdkafka's default)."""
    return None if fence_ms is None else max(MIN_REQUEST_TIMEOUT_MS, fence_ms)


def read_fence_ms(cfg: Config, timeout: float = 10.0) -> int | None:
    """The longest ``broker.session.timeout.ms`` of the cluster's brokers; None when there is nothing to outlive.

    None with a single broker (its coordinators have nowhere to fail over to), on a broker
    without the setting (tansu, ZooKeeper-era Kafka) or when DescribeConfigs on the brokers is
    not permitted: the session then stays at the minimum, as before.
    """
    admin = AdminClient(cfg.kafka_client_conf())
    try:
        brokers = list(admin.list_topics(timeout=timeout).brokers)
        if len(brokers) < 2:
            return None
        found = []
        for broker in brokers:  # librdkafka takes one broker resource per call
            fut = admin.describe_configs([ConfigResource(ResourceType.BROKER, str(broker))],
                                         request_timeout=timeout)
            entry = next(iter(fut.values())).result(timeout=timeout).get(FENCE_KEY)
            if entry is not None and entry.value is not None and str(entry.value).isdigit():
                found.append(int(entry.value))
        return max(found) if found else None
    except KafkaException as exc:
        log.info("the brokers' %s could not be read (%s): group sessions stay at %d ms",
                 FENCE_KEY, exc.args[0] if exc.args else exc, MIN_SESSION_TIMEOUT_MS)
        return None


def group_settings(cfg: Config, service: str, fence_ms: int | None) -> dict[str, Any]:
    """The ``session.timeout.ms`` a service's group consumers ask for ({} when ``kafka.client`` sets it),
    and the ``socket.timeout.ms`` of its clients when the brokers' fencing time is known
    (:func:`client_timeouts` picks it for the other clients)."""
    if "session.timeout.ms" in cfg.kafka.client:
        return {}
    session = session_ms(fence_ms, cfg.kafka.group_session_margin_s)
    out: dict[str, Any] = {"session.timeout.ms": session}
    request = request_timeout_ms(fence_ms)
    if fence_ms is not None:
        log.info("%s: group session %d ms (the brokers fence a silent broker after %d ms, plus "
                 "kafka.group_session_margin_s): a lost group coordinator costs no rejoin; requests to a "
                 "silent broker are given up after %d ms", service, session, fence_ms, request)
    if request is not None and "socket.timeout.ms" not in cfg.kafka.client:
        out["socket.timeout.ms"] = request
    return out


def client_timeouts(group: dict[str, Any] | None, *, producer: bool = False) -> dict[str, Any]:
    """The request timeouts of :func:`group_settings` for a service's other clients (its producers
    also give up a produce request after it: ``request.timeout.ms``)."""
    ms = (group or {}).get("socket.timeout.ms")
    if ms is None:
        return {}
    return {"socket.timeout.ms": ms, **({"request.timeout.ms": ms} if producer else {})}


def at_start(cfg: Config, service: str) -> dict[str, Any]:
    """Read the brokers' fencing time once and return the group settings (blocking: call in a thread)."""
    if "session.timeout.ms" in cfg.kafka.client:
        return {}
    return group_settings(cfg, service, read_fence_ms(cfg))
