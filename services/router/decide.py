"""What happens to one write that cannot go direct (pure, no I/O).

Direct mode applies everything. Held mode looks at the write's policy:
``hold`` keeps it in the held topic, ``failover`` applies it now in the first
closed fallback region that its tables' ``allowed_regions`` permit (data
residency; none permitted: held for home, and said so) and still holds it for
sync-back home, ``shed``
dead-letters it, and a write whose ``expires_at`` has passed is dead-lettered
as ``expired`` -- unless an earlier owner of its partition may have applied
it (then it is held with an ``rg-verify`` header and the replayer decides,
after looking in the region's inbox; or, applied in a fallback region, it is
synced back, which the divert stage finds out).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Callable

from ..core.models import Policy, WriteEvent, row_ops


class Route(str, enum.Enum):
    hold = "hold"
    failover = "failover"
    shed = "shed"
    expired = "expired"
    residency = "residency"  # held: every closed fallback lies outside a table's allowed_regions


def route_held(w: WriteEvent, *, now: datetime, is_closed: Callable[[str], bool],
               allowed: Callable[[str, str], bool] = lambda table, region: True) -> tuple[Route, str | None]:
    """Route for a write of a partition in held mode; the second item names the fallback region.

    ``allowed(table, region)`` is data residency (``Config.allowed_in``): a failover write goes to the
    first closed fallback that may hold every table it writes; when closed fallbacks exist but none
    may, it is held for home (``Route.residency``, the second item naming the first one refused).
    """
    if w.expires_at is not None and w.expires_at <= now:
        return Route.expired, None
    if w.policy is Policy.shed:
        return Route.shed, None
    if w.policy is Policy.failover:
        refused = None
        for fb in w.fallback_regions:
            if fb != w.region and is_closed(fb):
                if all(allowed(op.table, fb) for op in row_ops(w)):
                    return Route.failover, fb
                refused = refused or fb
        if refused is not None:
            return Route.residency, refused
    return Route.hold, None


def permitted_fallbacks(w: WriteEvent, allowed: Callable[[str, str], bool]) -> list[str]:
    """The fallback regions that may hold every table ``w`` writes (data residency), in its order."""
    return [fb for fb in w.fallback_regions
            if fb != w.region and all(allowed(op.table, fb) for op in row_ops(w))]


#: routes that end in a dead letter
DEAD_ROUTES = frozenset({Route.shed, Route.expired})
