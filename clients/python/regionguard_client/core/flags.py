"""Feature rules: which features are off in a region, given what we know of it (pure, no I/O, no clock).

The feature manager (:mod:`regionguard.features`) and the client library
(:mod:`regionguard_client`) both evaluate these, so a client that decides
locally (when the feature manager is not running) gives the same answer the
manager would publish; they live in ``core`` so neither imports the other.
:mod:`regionguard.features.rules` re-exports them beside the manager's
bookkeeping (:class:`~regionguard.features.rules.FlagBook`).

A region's *conditions* are the set of ``off_when`` words that apply to it:
its last known breaker state (``closed``, ``open`` or ``half_open``), when
known, plus ``stale`` when the health service's heartbeats stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from .config import FeatureConfig
from .models import RegionState

CONDITIONS = ("closed", "open", "half_open", "stale")

__all__ = ["CONDITIONS", "conditions", "disabled_features", "feature_enabled", "is_stale", "next_seq", "reason_for"]


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
