"""Which record of a key a follower of a compacted topic keeps: the one ordering rule (pure: no I/O, no clock).

Every follower (:class:`~regionguard_client.core.follower.CompactedFollower`, so the
region-state view, the client's views and the feature manager) keeps, per key,
the record this rule says is the latest:

* records are ordered by ``(epoch, seq)``. ``seq`` increases per key
  (docs/contract.md, RegionState and FeatureFlags); RegionState also carries the
  health leader's ``epoch``, compared first, so a deposed leader's later
  records never win over the new leader's (docs/contract.md, earlier extensions). A model
  without ``epoch`` (FeatureFlags) counts as epoch 0;
* a higher order replaces the held record and is a **change**;
* an equal order is a **heartbeat**: it replaces the held record (its ``at``
  is newer, and a reader should see the newest copy) but is not a change;
* a lower order is **ignored** (a late or deposed publisher's record), unless
  the held record went stale first: nothing refreshed it (no heartbeat, no
  change) for more than ``stale_after_s`` **by the follower's own monotonic
  clock** (``held_age_s``, the time since the held record or its latest
  heartbeat was received). Then the publisher started over without its
  history (a broker that lost its data: a new health leader elected on an
  empty topic takes epoch 1 again). That is a **restart**: it replaces the
  held record and is a change. Without it a long-lived view would ignore the
  live publisher until the process restarted.

  The records' own ``at`` stamps are not compared: the two records come from
  different publishers (a deposed leader and the live one) on different hosts,
  and a deposed leader whose clock ran ahead would win over the live leader
  for as long as it kept publishing. A live leader heartbeats, so its record
  never goes stale by the follower's clock, whatever the publishers' clocks say.
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


def verdict(held: Any | None, new: Any, stale_after_s: float, held_age_s: float | None = None) -> Verdict:
    """What to do with ``new`` when ``held`` is the record kept for its key (None: nothing yet).

    ``held_age_s``: seconds since the follower received ``held`` or its latest heartbeat, by its own
    monotonic clock; None (unknown) never restarts.
    """
    if held is None:
        return Verdict.NEWER
    if order(new) > order(held):
        return Verdict.NEWER
    if order(new) == order(held):
        return Verdict.HEARTBEAT
    if held_age_s is not None and held_age_s > stale_after_s:
        return Verdict.RESTART
    return Verdict.OLDER
