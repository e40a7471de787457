"""Leave a consumer group one member at a time, each after the others got their new assignment.

A router or replayer has one group member per lane in each region's group, and
they used to close together. On tansu (the demo's embedded broker) that could
stall the group for good: when a group's leader is the last member to send
LeaveGroup while a rebalance is in progress, tansu keeps the departed member as
leader, no new member is ever elected, and the next process's members rejoin
in a loop (group state UNKNOWN, no members) until an unrelated race in tansu
reloads the group -- 3 s, 12 s, or 45 s and more. Measured with 2 members, 12
restarts each: leaving together stalled >= 20 s in 2-6 of 12; leaving in turn,
each after the survivors' reassignment, 0 of 12 (3.1-4.1 s every time). The
analysis (tansu's ``Inner<Forming>::leave`` never clears the leader) is in
docs/development.md, "Which broker".

Leaving in turn costs one rebalance per lane at shutdown, and the partitions a
remaining lane is handed meanwhile wait for it to leave too (their records
are not processed and nothing is committed for them, so the next owner reads
them again): a SIGTERM handover on Apache Kafka took 0.89 s instead of
0.26-0.33 s (bench/takeover.py). So members leave in turn only on tansu
(recognised by its cluster id, as in ``kafka.watermarks_exact``), and
together everywhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from confluent_kafka import Consumer

from .kafka import TANSU_CLUSTER_ID
from .supervise import swallowed

log = logging.getLogger(__name__)


class Member(Protocol):
    consumer: Consumer
    assignments: int  # incremented by the member's on_assign callback


async def leave_in_turn(members: Sequence[Member], *, service: str, what: str, wait_s: float = 10.0) -> None:
    """Close every member's consumer, the last one first; before each next close, poll the
    remaining ones until each has been assigned again (at most ``wait_s``). On a broker that
    is not tansu, close them all at once."""
    if len(members) > 1 and not await _stalls_on_leave(members[0].consumer):
        await asyncio.gather(*(_close(m.consumer, service=service, what=what) for m in members))
        return
    remaining = list(members)
    while remaining:
        leaving = remaining.pop()
        before = [m.assignments for m in remaining]
        await _close(leaving.consumer, service=service, what=what)
        deadline = time.monotonic() + wait_s
        while remaining and time.monotonic() < deadline:
            if all(m.assignments > b for m, b in zip(remaining, before)):
                break
            for m in remaining:
                try:
                    m.consumer.poll(0)  # serves the rebalance; a record polled here is read again by its next owner
                except Exception as exc:  # noqa: BLE001 - closing goes on (reported)
                    swallowed(service, exc, what=f"polling {what} while leaving", logger=log)
            await asyncio.sleep(0.05)
        else:
            if remaining:
                log.info("%s: %s not reassigned within %.0f s of a member leaving; closing the rest",
                         service, what, wait_s)


async def _stalls_on_leave(consumer: Consumer) -> bool:
    """Whether the broker is tansu (True too when its metadata can't be had: in turn is always safe)."""
    try:
        md = await asyncio.to_thread(consumer.list_topics, None, 5.0)
    except Exception:  # noqa: BLE001 - unknown broker: take the safe way
        return True
    return md.cluster_id == TANSU_CLUSTER_ID


async def _close(consumer: Consumer, *, service: str, what: str) -> None:
    try:
        await asyncio.to_thread(consumer.close)
    except Exception as exc:  # noqa: BLE001 - closing the others goes on (reported)
        swallowed(service, exc, what=f"closing a consumer of {what}", logger=log)
