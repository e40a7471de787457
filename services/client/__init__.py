"""regionguard for applications: the producer, live region states and feature flags, degrading reads, ASGI middleware.

::

    from regionguard.client import WriteProducer, RegionStates, FeatureFlags, RegionalReader, RegionGuardMiddleware

``FeatureFlags`` here is the live view (:class:`~regionguard.client.views.FeatureFlagsView`);
the record model of the same name is :class:`regionguard.core.models.FeatureFlags`.
"""

from __future__ import annotations

from ..core.follower import CompactedFollower, StaleViewError  # the one follower, for applications' own topics
from .views import FeatureFlagsView, FeatureStatus, RegionStates
from .consistency import BadToken, ConsistencyWatcher, Visibility, WriteToken
from .producer import WriteGroup, WriteProducer
from .reader import (BadRead, BoundReader, BulkheadFull, NotVisible, ReadResult, ReadUnavailable, RegionalReader,
                     TierAttempt)

FeatureFlags = FeatureFlagsView


def __getattr__(name: str):
    # the middleware imports nothing heavy, but keep it lazy like the CLI modules
    if name in ("RegionGuardMiddleware", "requires_feature", "RegionContext"):
        from . import middleware

        return getattr(middleware, name)
    raise AttributeError(name)


__all__ = [
    "WriteProducer",
    "WriteGroup",
    "RegionStates",
    "FeatureFlags",
    "FeatureFlagsView",
    "FeatureStatus",
    "StaleViewError",
    "CompactedFollower",
    "RegionalReader",
    "BoundReader",
    "ReadResult",
    "TierAttempt",
    "ReadUnavailable",
    "NotVisible",
    "WriteToken",
    "Visibility",
    "ConsistencyWatcher",
    "BadToken",
    "BadRead",
    "BulkheadFull",
    "RegionGuardMiddleware",
    "requires_feature",
    "RegionContext",
]
