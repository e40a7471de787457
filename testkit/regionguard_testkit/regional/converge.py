"""When has a region that came back converged? Polled from observable state, never from logs.

A region has converged when, all at once:

- every write for it that Kafka acknowledged before it returned is in its inbox (applied by its
  router, replayed, or synced back after a failover), or dead-lettered for a reason its workload
  explains (shed, expired: those are left out of the wait);
- its held topic is replayed to the end (the replayer group's committed offsets at the ends);
- its router reports every partition direct and none held (``/metrics``).

``converge_s`` is the time from its return until the first poll that sees all three.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..embedded.net import run_sync
from ..verify.checker import _inbox_sources, held_ends, replayer_committed
from ..verify.loadgen import Model
from .bed import RegionalBed

__all__ = ["Convergence", "wait_applied", "wait_converged", "wait_in_sync"]


@dataclass
class Convergence:
    region: str
    ok: bool
    seconds: float                       # from the return to convergence (or to giving up)
    waited_writes: int = 0               # acknowledged before the return, applied after it
    applied_s: float | None = None       # ... all of them in the inbox, seconds after the return
    replayed_s: float | None = None      # held topic replayed to its end
    direct_s: float | None = None        # every partition direct
    left: dict[str, object] = field(default_factory=dict)


def _waited(model: Model, region: str, returned_at: float) -> list[str]:
    return [r.id for r in model if r.region == region and r.acked and r.t <= returned_at
            and r.expect == "apply" and r.policy != "shed" and not r.expires]


def wait_converged(bed: RegionalBed, region: str, returned_at: float, *, timeout: float = 180.0,
                   poll: float = 0.5) -> Convergence:
    dsn = bed.direct_dsns[region]
    pending = set(_waited(bed.model(), region, returned_at))
    res = Convergence(region, False, 0.0, waited_writes=len(pending))
    deadline = time.monotonic() + timeout
    while True:
        now = time.time()
        if pending:
            found = run_sync(_inbox_sources(dsn, sorted(pending)))
            pending -= set(found)
        if not pending and res.applied_s is None:
            res.applied_s = now - returned_at
        try:
            ends = held_ends(bed.cfg, region)
            committed = replayer_committed(bed.cfg, region, ends)
            behind = sum(max(0, ends[p] - committed.get(p, 0)) for p in ends)
        except Exception as exc:  # noqa: BLE001 - the returning node may not answer yet: poll again
            behind = -1
            res.left["held"] = f"{type(exc).__name__}"
        replayed = behind == 0
        if replayed and res.replayed_s is None:
            res.replayed_s = now - returned_at
        direct = bed.direct(region) == (bed.partitions, 0)
        if direct and res.direct_s is None:
            res.direct_s = now - returned_at
        if not pending and replayed and direct:
            res.ok, res.seconds, res.left = True, now - returned_at, {}
            return res
        if time.monotonic() > deadline:
            res.seconds = now - returned_at
            res.left = {"pending_writes": len(pending), "held_behind": behind, "router": bed.direct(region)}
            return res
        time.sleep(poll)


def wait_applied(bed: RegionalBed, model: Model, *, timeout: float = 180.0, poll: float = 1.0) -> int:
    """Wait until every acknowledged write that must apply is in its home inbox; returns how many
    are still missing (0: all there). Asks for the missing ids only: reading whole inboxes of tens of
    thousands of rows twice a second is load this machine does not have to spare."""
    pending = {r: set(_waited(model, r, float("inf"))) for r in bed.names}
    deadline = time.monotonic() + timeout
    while True:
        for region, ids in pending.items():
            if ids:
                ids -= set(run_sync(_inbox_sources(bed.direct_dsns[region], sorted(ids))))
        left = sum(len(ids) for ids in pending.values())
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(poll)


def wait_in_sync(bed: RegionalBed, timeout: float = 180.0) -> float | None:
    """Poll until every partition of the cluster has a leader and all its replicas in sync; returns
    the unix time it saw that, or None. A region's returned node is back only then: a fault
    started before it (a second region impaired) stalls every acks=all write (min.insync 2)."""
    from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

    assert bed.kafka is not None
    admin = AdminClient({"bootstrap.servers": bed.kafka.bootstrap, "socket.timeout.ms": 3000, "log_level": 0})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            parts = [p for t in admin.list_topics(timeout=5).topics.values() for p in t.partitions.values()]
            if parts and all(p.leader >= 0 and len(p.isrs) == len(p.replicas) for p in parts):
                return time.time()
        except Exception:  # noqa: BLE001 - metadata times out while a node is away: poll again
            pass
        time.sleep(0.25)
    return None
