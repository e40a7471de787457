"""Place a consumer group's coordinator and a topic's leaders on chosen nodes of an :class:`ApacheKafka`.

To kill "the node that coordinates this group, and only that" (bench/coordinator_loss.py and
tests/integration/test_coordinator_loss.py), a run must know which node will coordinate a group
before the group exists and keep the group's partitions led elsewhere. Apache Kafka puts a group
in the ``__consumer_offsets`` partition ``abs(groupId.hashCode()) % offsets.topic.num.partitions``
(GroupCoordinatorService#topicPartitionFor); the partition's leader coordinates it. So a run picks
a topic prefix whose group lands on a partition led by the wanted node, creates its writes topic
with an explicit replica assignment whose preferred leaders are the other nodes, and reads the
coordinator back with the AdminClient (``describe_consumer_groups``) to check.

Written by hand: Kafka ships no client-side call that says where a group *will* live.
"""

from __future__ import annotations

import time
import uuid
from typing import Callable

from confluent_kafka.admin import AdminClient, NewTopic

OFFSETS_TOPIC = "__consumer_offsets"


def java_hash(text: str) -> int:
    """``String.hashCode()`` of Java (UTF-16 code units, 32-bit signed overflow)."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offsets_partition(group: str, partitions: int) -> int:
    """The ``__consumer_offsets`` partition of ``group`` (Kafka's ``Utils.abs``: ``Math.abs``, 0 for MIN_VALUE)."""
    h = java_hash(group)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def offsets_leaders(admin: AdminClient, timeout: float = 60.0) -> dict[int, int]:
    """``__consumer_offsets`` partition -> leader node; creates the topic first if needed (a FindCoordinator does)."""
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=10).topics.get(OFFSETS_TOPIC)
        if md is not None and md.partitions and all(p.leader >= 0 for p in md.partitions.values()):
            return {p: pm.leader for p, pm in md.partitions.items()}
        if time.monotonic() > deadline:
            raise TimeoutError(f"{OFFSETS_TOPIC} has no leader for every partition after {timeout}s")
        # describing a group makes the broker look its coordinator up, which creates the topic
        for fut in admin.describe_consumer_groups([f"probe-{uuid.uuid4().hex[:6]}"]).values():
            try:
                fut.result(timeout=10)
            except Exception:  # noqa: BLE001 - only the side effect matters
                pass
        time.sleep(0.5)


def pick_prefix(admin: AdminClient, group_of: Callable[[str], str], want: Callable[[int], bool],
                tries: int = 2000) -> tuple[str, int]:
    """A topic prefix whose group (``group_of(prefix)``) is coordinated by a node ``want`` accepts; (prefix, node)."""
    leaders = offsets_leaders(admin)
    for _ in range(tries):
        prefix = f"cl{uuid.uuid4().hex[:8]}."
        node = leaders[offsets_partition(group_of(prefix), len(leaders))]
        if want(node):
            return prefix, node
    raise LookupError("no prefix puts the group on a wanted coordinator")


def coordinator(admin: AdminClient, group: str, timeout: float = 10.0) -> int:
    """The node id the cluster names as ``group``'s coordinator now."""
    desc = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result(timeout=timeout)
    return desc.coordinator.id


def create_led_away(admin: AdminClient, topic: str, partitions: int, nodes: list[int], away: int,
                    config: dict[str, str] | None = None, timeout: float = 30.0) -> None:
    """Create ``topic`` with every node a replica but ``away`` never a preferred leader (the others alternate)."""
    leaders = [n for n in nodes if n != away]
    assignment = [[leaders[p % len(leaders)], *[n for n in leaders if n != leaders[p % len(leaders)]], away]
                  for p in range(partitions)]
    fut = admin.create_topics([NewTopic(topic, num_partitions=partitions, replica_assignment=assignment, config=config or {})],
                              request_timeout=timeout)[topic]
    fut.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=10).topics.get(topic)
        if md is not None and len(md.partitions) == partitions and all(
                pm.leader >= 0 and pm.leader != away for pm in md.partitions.values()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{topic}: leaders not elected away from node {away} after {timeout}s")


def leaders(admin: AdminClient, topic: str) -> dict[int, int]:
    """``topic``'s partition -> leader node now."""
    md = admin.list_topics(topic, timeout=10).topics[topic]
    return {p: pm.leader for p, pm in md.partitions.items()}
