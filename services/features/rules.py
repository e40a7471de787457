"""Feature rules: which features are off in a region, given what we know of it.

Pure functions and one small bookkeeping class, no I/O and no clock: callers
pass the time in. The feature manager (``regionguard features``) and the
client library (:mod:`regionguard.client`) share this module, so a client
that evaluates the rules locally (when the feature manager is not running)
gives the same answer the manager would publish.

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
from ..core.models import FeatureFlags, RegionState

CONDITIONS = ("closed", "open", "half_open", "stale")

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


def is_stale(heartbeat_age: float | None, stale_after_s: float, *, uptime_s: float | None = None) -> bool | None:
    """Whether health heartbeats stopped.

    ``heartbeat_age`` is seconds since the last heartbeat seen (None: never).
    With no heartbeat ever seen the answer is only decided once ``uptime_s``
    (how long the caller has been listening) exceeds ``stale_after_s``:
    before that it returns ``None`` (undecided), so a freshly started process
    does not announce an outage it has not observed. ``uptime_s=None`` means
    "listening long enough": never-seen heartbeats are stale at once.
    """
    if heartbeat_age is not None:
        return heartbeat_age > stale_after_s
    if uptime_s is not None and uptime_s <= stale_after_s:
        return None
    return True


def conditions(state: RegionState | str | None, stale: bool) -> frozenset[str]:
    """The ``off_when`` words that currently apply to a region."""
    out: set[str] = set()
    if isinstance(state, RegionState):
        out.add(state.state.value)
    elif state is not None:
        name = getattr(state, "value", state)
        if name not in CONDITIONS or name == "stale":
            raise ValueError(f"unknown region state {state!r}")
        out.add(name)
    if stale:
        out.add("stale")
    return frozenset(out)


def feature_enabled(features: Mapping[str, FeatureConfig], feature: str, conds: Iterable[str]) -> bool:
    """True unless ``feature`` is configured off for one of ``conds``.

    Unknown features are enabled (nothing says to turn them off) and critical
    features are always enabled.
    """
    fc = features.get(feature)
    if fc is None or fc.critical:
        return True
    conds = frozenset(conds)
    return not any(w in conds for w in fc.off_when)


def disabled_features(features: Mapping[str, FeatureConfig], conds: Iterable[str]) -> frozenset[str]:
    """Every configured feature that is off under ``conds``."""
    conds = frozenset(conds)
    return frozenset(name for name in features if not feature_enabled(features, name, conds))


def reason_for(region: str, state: RegionState | None, stale: bool, disabled: Iterable[str]) -> str:
    """A short human sentence for the FeatureFlags ``reason`` field."""
    parts = []
    if state is not None:
        s = f"region {region} {state.state.value}"
        if state.reason:
            s += f" ({state.reason})"
        parts.append(s)
    else:
        parts.append(f"region {region} state unknown")
    if stale:
        parts.append("health heartbeats stopped")
    off = sorted(disabled)
    parts.append(f"disabled: {', '.join(off)}" if off else "all features enabled")
    return "; ".join(parts)


def next_seq(previous: int | None, now: datetime) -> int:
    """The next ``seq``: the publish time in milliseconds, and always above ``previous``.

    Time-based so that it keeps increasing across a restart of the manager even
    when the topic lost its history (a broker without its data): clients never
    ignore a restarted manager's records as "older".
    """
    ms = int(now.timestamp() * 1000)
    return ms if previous is None else max(previous + 1, ms)


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
