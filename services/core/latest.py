"""Which record of a key a follower of a compacted topic keeps: the one ordering rule (pure: no I/O, no clock).

Every follower (:class:`~regionguard.core.follower.CompactedFollower`, so the
region-state view, the client's views and the feature manager) keeps, per key,
the record this rule says is the latest:

* records are ordered by ``(epoch, seq)``. ``seq`` increases per key
  (DESIGN.md, RegionState and FeatureFlags); RegionState also carries the
  health leader's ``epoch``, compared first, so a deposed leader's later
  records never win over the new leader's (README, contract changes). A model
  without ``epoch`` (FeatureFlags) counts as epoch 0;
* a higher order replaces the held record and is a **change**;
* an equal order is a **heartbeat**: it replaces the held record (its ``at``
  is newer, and a reader should see the newest copy) but is not a change;
* a lower order is **ignored** (a late or deposed publisher's record), unless
  its ``at`` is more than ``stale_after_s`` after the held record's: then the
  held record went stale and the publisher started over without its history
  (a broker that lost its data: a new health leader elected on an empty topic
  takes epoch 1 again). That is a **restart**: it replaces the held record and
  is a change. Without it a long-lived view would ignore the live publisher
  until the process restarted. Only records that both carry an ``at`` can
  restart; the publisher's own clock stamps both, so no clock is read here.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

__all__ = ["Verdict", "at_seconds", "order", "verdict"]


class Verdict(enum.Enum):
    NEWER = "newer"          # higher (epoch, seq): keep it, a change
    HEARTBEAT = "heartbeat"  # same (epoch, seq): keep it, not a change
    RESTART = "restart"      # lower, but the held record went stale before it: keep it, a change
    OLDER = "older"          # lower: ignore it

    @property
    def keep(self) -> bool:
        return self is not Verdict.OLDER

    @property
    def changed(self) -> bool:
        return self in (Verdict.NEWER, Verdict.RESTART)


def order(record: Any) -> tuple[int, int]:
    """``(epoch, seq)``; epoch 0 for a model that has none."""
    return (getattr(record, "epoch", 0), record.seq)


def at_seconds(record: Any) -> float | None:
    """The record's ``at`` in seconds since the epoch (a naive time is UTC); None without one."""
    at = getattr(record, "at", None)
    if not isinstance(at, datetime):
        return None
    return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).timestamp()


def verdict(held: Any | None, new: Any, stale_after_s: float) -> Verdict:
    """What to do with ``new`` when ``held`` is the record kept for its key (None: nothing yet)."""
    if held is None:
        return Verdict.NEWER
    if order(new) > order(held):
        return Verdict.NEWER
    if order(new) == order(held):
        return Verdict.HEARTBEAT
    new_at, held_at = at_seconds(new), at_seconds(held)
    if new_at is not None and held_at is not None and new_at - held_at > stale_after_s:
        return Verdict.RESTART
    return Verdict.OLDER
