"""regionguard for applications: the producer, read-your-writes tokens, live region states and feature flags,
degrading reads, ASGI middleware. The ``regionguard-client`` distribution (clients/python)::

    pip install regionguard-client            # confluent-kafka, pydantic, asyncpg, pyyaml, orjson; no faust, no rich
    from regionguard_client import WriteProducer, RegionStates, FeatureFlags, RegionalReader, RegionGuardMiddleware

``FeatureFlags`` here is the live view (:class:`~regionguard_client.views.FeatureFlagsView`);
the record model of the same name is :class:`regionguard_client.core.models.FeatureFlags`.

Why the import name is ``regionguard_client`` and not ``regionguard.client``: ``regionguard`` is a
regular package (it has an ``__init__.py``) owned by the service distribution, so a second
distribution cannot put modules under it (two wheels would write the same ``regionguard/``
directory, and a namespace package would need both to give up their ``__init__.py``). So the
client is its own top-level package, and the service depends on it:

* ``regionguard_client``        this SDK (producer, consistency = tokens, views, reader, middleware);
* ``regionguard_client.core``   what the SDK shares with the services (config, wire models, Kafka
  and SQL helpers, the follower): one copy, here; the service imports it as ``regionguard.core.<name>``
  (the same module objects, services/core/__init__.py);
* ``regionguard.client``        in the service distribution, a thin re-export of this package, so the
  imports documented before the split keep working where the service is installed.

Loggers keep their names in the ``regionguard`` tree (``regionguard.client.reader``, ...), as before.
Optional extras: ``app`` (Starlette for the middleware's route matching, redis for the reader's
cache tier), ``metrics`` (prometheus-client: core/counters.py), ``oidc`` and ``msk`` (kafka.auth).
"""

from __future__ import annotations

from .core.follower import CompactedFollower, StaleViewError  # the one follower, for applications' own topics
from .views import FeatureFlagsView, FeatureStatus, RegionStates
from .consistency import BadToken, ConsistencyWatcher, Visibility, WriteToken
from .delivery import WriteNotAcknowledged
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
    "WriteNotAcknowledged",
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
