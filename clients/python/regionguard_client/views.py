"""Live, read-only views of region states and feature flags for applications.

Both are the follower every service uses too (:mod:`regionguard_client.core.follower`,
ordering rule in :mod:`regionguard_client.core.latest`): a background thread follows
the compacted topic, so reads are plain in-memory lookups that never block and
never touch the network::

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
:class:`~regionguard_client.core.follower.StaleViewError` for callers that would
rather fail than act on old news.

How ``FeatureFlagsView.is_enabled`` decides, in order:

1. unknown and ``critical`` features are enabled;
2. the region's FeatureFlags record, when the feature manager is live;
3. otherwise the shared rules (:mod:`regionguard_client.core.flags`) evaluated
   locally from the region state view, which adds ``stale`` when the health
   service is quiet too -- the same answer the manager would publish;
4. otherwise the last FeatureFlags record, plus the ``stale`` rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .core import flags as rules
from .core.config import Config
from .core.follower import CompactedFollower, StaleViewError
from .core.models import FeatureFlags, RegionState
from .core.stateview import RegionStateView

__all__ = ["RegionStates", "FeatureFlagsView", "FeatureStatus", "StaleViewError"]


class RegionStates(RegionStateView):
    """The latest RegionState of every region, from ``<prefix>region-state``.

    The core region-state view with the reads applications ask for; ``start()``
    returns the view, and stale/fresh callbacks come from the follower's thread.
    """

    def state_name(self, region: str) -> str:
        """``closed``, ``open``, ``half_open`` or ``unknown``."""
        s = self.get(region)
        return "unknown" if s is None else s.state.value

    def is_open(self, region: str) -> bool:
        s = self.get(region)
        return s is not None and s.state.value == "open"

    def snapshot(self) -> dict[str, RegionState]:
        """The known states of the configured regions."""
        return {r: s for r in self.cfg.regions if (s := self.get(r)) is not None}

    def conditions(self, region: str) -> frozenset[str]:
        """The ``off_when`` words that apply to ``region`` now (see :mod:`regionguard_client.core.flags`)."""
        return rules.conditions(self.state(region), self.is_stale())


@dataclass(frozen=True)
class FeatureStatus:
    feature: str
    region: str
    enabled: bool
    stale: bool
    source: str  # "critical", "unconfigured", "flags", "rules", "last_known", "default"
    reason: str = ""


class FeatureFlagsView(CompactedFollower[FeatureFlags]):
    """The latest FeatureFlags of every region, from ``<prefix>features``.

    Exported as ``regionguard_client.FeatureFlags`` (the name the issue uses);
    this class name keeps it apart from the record model
    :class:`regionguard_client.core.models.FeatureFlags`. Staleness (``stale``,
    :meth:`require_fresh`, ``subscribe_stale``) is the feature manager's.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        states: RegionStates | None = None,
        on_change: Callable[[FeatureFlags | None, FeatureFlags], None] | None = None,
    ) -> None:
        super().__init__(cfg, cfg.topic("features"), FeatureFlags, on_change=on_change, name="features")
        self.states = states

    def flags(self, region: str) -> FeatureFlags | None:
        return self.get(region)

    def status(self, feature: str, region: str) -> FeatureStatus:
        """Whether ``feature`` is on in ``region``, with where the answer came from."""
        features = self.cfg.features
        fc = features.get(feature)
        if fc is None:
            return FeatureStatus(feature, region, True, False, "unconfigured")
        if fc.critical:
            return FeatureStatus(feature, region, True, False, "critical")
        rec = self.get(region)
        if rec is not None and not self.is_stale():
            on = feature not in rec.disabled
            return FeatureStatus(feature, region, on, False, "flags", rec.reason)
        if self.states is not None and (rec is None or not self.states.is_stale()):
            st = self.states.state(region)
            s_stale = self.states.is_stale()
            conds = rules.conditions(st, s_stale)
            on = rules.feature_enabled(features, feature, conds)
            reason = rules.reason_for(region, st, s_stale, rules.disabled_features(features, conds))
            return FeatureStatus(feature, region, on, s_stale, "rules", reason)
        stale_now = self.staleness()
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
