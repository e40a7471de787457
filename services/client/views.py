"""Live, read-only views of region states and feature flags for applications.

Both follow their compacted topic in a background thread (see
:mod:`regionguard.client.follower`), so reads are plain in-memory lookups
that never block and never touch the network::

    states = RegionStates(cfg).start()
    flags = FeatureFlagsView(cfg, states=states).start()
    states.wait_ready(5); flags.wait_ready(5)

    states.state("eu")                          # RegionState | None
    states.is_closed("eu")                      # closed, or unknown
    flags.is_enabled("recommendations", "eu")   # bool, never raises by default
    flags.is_enabled("recommendations", "eu", strict=True)  # StaleViewError if stale
    states.subscribe(lambda old, new: ...)      # on every new state of a region
    states.subscribe_stale(lambda stale: ...)   # health heartbeats stopped / resumed

Staleness is explicit: ``states.stale`` is True when the health service's
heartbeats stopped for ``health.stale_after_s``; ``flags.stale`` likewise for
the feature manager's heartbeats. Answers still come from the last known
records then, and ``strict=True`` / :meth:`require_fresh` raise
:class:`~regionguard.client.follower.StaleViewError` for callers that would
rather fail than act on old news.

How ``FeatureFlagsView.is_enabled`` decides, in order:

1. unknown and ``critical`` features are enabled;
2. the region's FeatureFlags record, when the feature manager is live;
3. otherwise the shared rules (:mod:`regionguard.features.rules`) evaluated
   locally from the region state view, which adds ``stale`` when the health
   service is quiet too -- the same answer the manager would publish;
4. otherwise the last FeatureFlags record, plus the ``stale`` rules.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..core import flags as rules
from ..core.config import Config
from ..core.models import FeatureFlags, RegionState
from ..core.stateview import RegionStateView
from ..core.supervise import supervised, swallowed
from .follower import CompactedFollower, StaleViewError

log = logging.getLogger(__name__)

__all__ = ["RegionStates", "FeatureFlagsView", "FeatureStatus", "StaleViewError"]


def _state_view(cfg: Config, on_change):
    """The shared RegionStateView (core)."""
    return RegionStateView(cfg, on_change=on_change)


class _StaleWatch:
    """Turns a heartbeat age into stale/fresh callbacks (a tiny daemon thread, started on demand)."""

    def __init__(self, name: str, staleness: Callable[[], bool | None]) -> None:
        self.name = name
        self._staleness = staleness
        self._callbacks: list[Callable[[bool], None]] = []
        self._last: bool | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def subscribe(self, fn: Callable[[bool], None]) -> Callable[[], None]:
        self._callbacks.append(fn)
        if self._thread is None:
            self._thread = threading.Thread(target=supervised, args=(f"stalewatch:{self.name}", self._run, self._stop),
                                            kwargs={"logger": log}, name=f"rg-stale-{self.name}", daemon=True)
            self._thread.start()
        return lambda: self._callbacks.remove(fn) if fn in self._callbacks else None

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            s = self._staleness()
            if s is None or s == self._last:
                continue
            first, self._last = self._last is None, s
            if first and not s:
                continue
            for fn in list(self._callbacks):
                try:
                    fn(s)
                except Exception as exc:  # noqa: BLE001 - reported; the watch goes on
                    swallowed(f"stalewatch:{self.name}", exc, what="stale callback", logger=log)

    def stop(self) -> None:
        self._stop.set()


class RegionStates:
    """The latest RegionState of every region, from ``<prefix>region-state``."""

    def __init__(self, cfg: Config, *, on_change: Callable[[RegionState | None, RegionState], None] | None = None):
        self.cfg = cfg
        self.stale_after_s = cfg.health.stale_after_s
        self._callbacks: list[Callable[[RegionState | None, RegionState], None]] = [on_change] if on_change else []
        self._view = _state_view(cfg, self._dispatch)
        self._started_at: float | None = None
        self._watch = _StaleWatch("region-state", self.staleness)

    def _dispatch(self, old: RegionState | None, new: RegionState) -> None:
        for fn in list(self._callbacks):
            try:
                fn(old, new)
            except Exception as exc:  # noqa: BLE001 - reported; the view goes on
                swallowed("regionstates", exc, what=f"region state callback for {new.region}", logger=log)

    # lifecycle
    def start(self) -> "RegionStates":
        if self._started_at is None:
            self._started_at = time.monotonic()
            self._view.start()
        return self

    def stop(self) -> None:
        self._watch.stop()
        if self._started_at is not None:
            self._view.stop()
            self._started_at = None

    def __enter__(self) -> "RegionStates":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self, timeout: float) -> bool:
        return self._view.wait_ready(timeout)

    # reads
    def state(self, region: str) -> RegionState | None:
        return self._view.state(region)

    def state_name(self, region: str) -> str:
        """``closed``, ``open``, ``half_open`` or ``unknown``."""
        s = self._view.state(region)
        return "unknown" if s is None else s.state.value

    def is_closed(self, region: str) -> bool:
        """Closed, or unknown (as the router treats a region nobody has judged)."""
        return self._view.is_closed(region)

    def is_open(self, region: str) -> bool:
        s = self._view.state(region)
        return s is not None and s.state.value == "open"

    def snapshot(self) -> dict[str, RegionState]:
        return {r: s for r in self.cfg.regions if (s := self._view.state(r)) is not None}

    # staleness
    def last_heartbeat_age(self) -> float | None:
        return self._view.last_heartbeat_age()

    def staleness(self) -> bool | None:
        up = None if self._started_at is None else time.monotonic() - self._started_at
        return rules.is_stale(self.last_heartbeat_age(), self.stale_after_s, uptime_s=up or 0.0)

    def is_stale(self) -> bool:
        """True when the health service's heartbeats stopped for ``health.stale_after_s``."""
        return bool(self.staleness())

    @property
    def stale(self) -> bool:
        return self.is_stale()

    def require_fresh(self) -> None:
        if self.is_stale():
            raise StaleViewError("region states", self.last_heartbeat_age(), self.stale_after_s)

    def conditions(self, region: str) -> frozenset[str]:
        """The ``off_when`` words that apply to ``region`` now (see :mod:`regionguard.features.rules`)."""
        return rules.conditions(self.state(region), self.is_stale())

    # callbacks
    def subscribe(self, fn: Callable[[RegionState | None, RegionState], None]) -> Callable[[], None]:
        """Call ``fn(old, new)`` (on the view's thread) for every new state; returns unsubscribe."""
        self._callbacks.append(fn)
        return lambda: self._callbacks.remove(fn) if fn in self._callbacks else None

    def subscribe_stale(self, fn: Callable[[bool], None]) -> Callable[[], None]:
        """Call ``fn(True)`` when heartbeats stop, ``fn(False)`` when they resume."""
        return self._watch.subscribe(fn)


@dataclass(frozen=True)
class FeatureStatus:
    feature: str
    region: str
    enabled: bool
    stale: bool
    source: str  # "critical", "unconfigured", "flags", "rules", "last_known", "default"
    reason: str = ""


class FeatureFlagsView:
    """The latest FeatureFlags of every region, from ``<prefix>features``.

    Exported as ``regionguard.client.FeatureFlags`` (the name the issue uses);
    this class name keeps it apart from the record model
    :class:`regionguard.core.models.FeatureFlags`.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        states: RegionStates | None = None,
        on_change: Callable[[FeatureFlags | None, FeatureFlags], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.states = states
        self._f: CompactedFollower[FeatureFlags] = CompactedFollower(
            cfg, cfg.topic("features"), FeatureFlags, on_change=on_change, name="features"
        )
        self.stale_after_s = self._f.stale_after_s

    def start(self) -> "FeatureFlagsView":
        self._f.start()
        return self

    def stop(self) -> None:
        self._f.stop()

    def __enter__(self) -> "FeatureFlagsView":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self, timeout: float) -> bool:
        return self._f.wait_ready(timeout)

    def flags(self, region: str) -> FeatureFlags | None:
        return self._f.get(region)

    def snapshot(self) -> dict[str, FeatureFlags]:
        return self._f.snapshot()

    def last_heartbeat_age(self) -> float | None:
        return self._f.last_heartbeat_age()

    def is_stale(self) -> bool:
        """True when the feature manager's heartbeats stopped for ``health.stale_after_s``."""
        return self._f.is_stale()

    @property
    def stale(self) -> bool:
        return self._f.is_stale()

    def require_fresh(self) -> None:
        self._f.require_fresh()

    def subscribe(self, fn: Callable[[FeatureFlags | None, FeatureFlags], None]) -> Callable[[], None]:
        return self._f.subscribe(fn)

    def subscribe_stale(self, fn: Callable[[bool], None]) -> Callable[[], None]:
        return self._f.subscribe_stale(fn)

    def status(self, feature: str, region: str) -> FeatureStatus:
        """Whether ``feature`` is on in ``region``, with where the answer came from."""
        features = self.cfg.features
        fc = features.get(feature)
        if fc is None:
            return FeatureStatus(feature, region, True, False, "unconfigured")
        if fc.critical:
            return FeatureStatus(feature, region, True, False, "critical")
        rec = self._f.get(region)
        if rec is not None and not self._f.is_stale():
            on = feature not in rec.disabled
            return FeatureStatus(feature, region, on, False, "flags", rec.reason)
        if self.states is not None and (rec is None or not self.states.is_stale()):
            st = self.states.state(region)
            s_stale = self.states.is_stale()
            conds = rules.conditions(st, s_stale)
            on = rules.feature_enabled(features, feature, conds)
            reason = rules.reason_for(region, st, s_stale, rules.disabled_features(features, conds))
            return FeatureStatus(feature, region, on, s_stale, "rules", reason)
        stale_now = self._f.staleness()
        if rec is not None:
            on = feature not in rec.disabled and rules.feature_enabled(features, feature, {"stale"})
            return FeatureStatus(feature, region, on, True, "last_known", rec.reason)
        on = rules.feature_enabled(features, feature, {"stale"} if stale_now else ())
        return FeatureStatus(feature, region, on, bool(stale_now), "default")

    def is_enabled(self, feature: str, region: str, *, strict: bool = False) -> bool:
        """Whether ``feature`` may be used for ``region``.

        Never raises unless ``strict``: then a decision taken without a live
        publisher (the feature manager, or the health service for the
        local-rules fallback) raises :class:`StaleViewError`.
        """
        st = self.status(feature, region)
        if strict and st.stale:
            raise StaleViewError(f"feature flags for {region}", self.last_heartbeat_age(), self.stale_after_s)
        return st.enabled

    def disabled(self, region: str) -> frozenset[str]:
        """Every configured feature that is off in ``region`` now."""
        return frozenset(f for f in self.cfg.features if not self.status(f, region).enabled)
