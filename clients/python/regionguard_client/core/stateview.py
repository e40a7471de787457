"""A live, read-only view of ``<prefix>region-state``: the one follower, specialised for RegionState.

Used by the router, replayer, feature manager, health service, operator
commands and (as :class:`regionguard_client.RegionStates`) the client library.
Reading, ordering, readiness, broker restarts and error handling are the
follower's (:mod:`regionguard_client.core.follower`, rule in
:mod:`regionguard_client.core.latest`): per region the record with the highest
``(epoch, seq)`` wins, a heartbeat refreshes it without being a change, and
a lower one wins only once the held record went stale (not refreshed for
``health.stale_after_s`` by this view's own clock: the health service restarted
without its history). What this adds:

- a region with no known state counts as closed (:meth:`is_closed`), as the
  router treats a region nobody has judged;
- the metric label ``stateview`` for its background errors and restarts;
- it refuses forged or impossible records (a future ``at``, an epoch far above
  any seen) before the ordering rule sees them (:mod:`regionguard_client.core.stategate`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .config import Config
from .follower import CompactedFollower
from .models import RegionState, State
from .stategate import StateGate

__all__ = ["RegionStateView"]

OnChange = Callable[[RegionState | None, RegionState], None]


class RegionStateView(CompactedFollower[RegionState]):
    """The latest RegionState of every region, kept current in the background."""

    def __init__(self, cfg: Config, *, on_change: OnChange | None = None, quiet_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.gate = StateGate(max_skew_s=cfg.health.max_clock_skew_s, max_jump=cfg.health.max_epoch_jump, wall=wall)
        super().__init__(cfg, cfg.topic("region-state"), RegionState, key=lambda r: r.region, on_change=on_change,
                         stale_after_s=cfg.health.stale_after_s, name="region-state", component="stateview",
                         quiet_s=quiet_s, clock=clock, admit=self.gate.admit)

    def state(self, region: str) -> RegionState | None:
        return self.get(region)

    def states(self) -> dict[str, RegionState]:
        """Every region with a known state (also regions outside this process's config)."""
        return CompactedFollower.snapshot(self)  # not self.snapshot(): RegionStates narrows that one

    def is_closed(self, region: str) -> bool:
        """True when closed, or when no state is known (unknown counts as closed)."""
        st = self.get(region)
        return st is None or st.state is State.closed
