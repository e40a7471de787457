"""Feature rules: which features are off in a region, given what we know of it.

The pure rules live in :mod:`regionguard.core.flags` (the client library
evaluates them too) and are re-exported here beside the feature manager's one
small bookkeeping class, :class:`FlagBook`; no I/O and no clock: callers pass
the time in.

A region's *conditions* are the set of ``off_when`` words that apply to it:

* its last known breaker state (``closed``, ``open`` or ``half_open``), when known;
* ``stale`` when the health service's heartbeats stopped (or were never seen
  once the start-up grace period is over).

``stale`` is added to the last known state rather than replacing it, so a
feature that is off while a region is ``open`` stays off when the health
service also goes quiet. A feature is disabled when any of its ``off_when``
words is among the conditions, unless it is ``critical``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ..core.config import FeatureConfig
from ..core.flags import (CONDITIONS, conditions, disabled_features, feature_enabled, is_stale, next_seq,
                          reason_for)
from ..core.models import FeatureFlags

__all__ = [
    "CONDITIONS",
    "FlagBook",
    "Change",
    "conditions",
    "disabled_features",
    "feature_enabled",
    "is_stale",
    "next_seq",
    "reason_for",
]


@dataclass(frozen=True)
class Change:
    """A region's disabled set changed; ``flags`` is the record to publish."""

    flags: FeatureFlags
    turned_off: tuple[str, ...]
    turned_on: tuple[str, ...]
    conditions: tuple[str, ...]


@dataclass
class FlagBook:
    """The current FeatureFlags per region, and the seq bookkeeping.

    :meth:`propose` returns a :class:`Change` when a region's disabled set
    differs from the last committed one (or the region has none yet); the
    caller publishes it and then :meth:`commit` s it, so a failed publish is
    proposed again on the next round. :meth:`restore` seeds the book from the
    records already on the topic, so a restarted manager continues the seq
    and does not republish an unchanged set.
    """

    features: Mapping[str, FeatureConfig]
    current: dict[str, FeatureFlags] = field(default_factory=dict)

    def restore(self, flags: FeatureFlags) -> None:
        old = self.current.get(flags.region)
        if old is None or flags.seq >= old.seq:
            self.current[flags.region] = flags.model_copy(update={"heartbeat": False})

    def propose(self, region: str, conds: Iterable[str], reason: str, now: datetime) -> Change | None:
        conds = frozenset(conds)
        disabled = disabled_features(self.features, conds)
        old = self.current.get(region)
        old_set = frozenset(old.disabled) if old is not None else None
        if old_set == disabled:
            return None
        seq = next_seq(old.seq if old is not None else None, now)
        flags = FeatureFlags(
            region=region, disabled=sorted(disabled), seq=seq, since=now, reason=reason, at=now
        )
        before = old_set or frozenset()
        return Change(
            flags=flags,
            turned_off=tuple(sorted(disabled - before)),
            turned_on=tuple(sorted(before - disabled)),
            conditions=tuple(sorted(conds)),
        )

    def commit(self, change: Change) -> None:
        self.current[change.flags.region] = change.flags

    def heartbeat(self, region: str, now: datetime) -> FeatureFlags | None:
        """The heartbeat record for ``region``: current flags, same seq, ``heartbeat=true``."""
        cur = self.current.get(region)
        if cur is None:
            return None
        return cur.model_copy(update={"heartbeat": True, "at": now})
