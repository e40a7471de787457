"""Which region-state records a view refuses outright: forged or impossible ones (issue 28).

The ordering rule (:mod:`.latest`) trusts ``(epoch, seq)``: a record with a
higher epoch wins. Anyone able to produce to ``<prefix>region-state`` could
then publish ``open`` with a huge epoch and pin a region until the forged record
went stale, and a new health leader, which takes one above the highest epoch it
read (:mod:`regionguard.health.judge`), would adopt the forged epoch. A view
therefore refuses, before the ordering rule sees it, a record:

* ``future_at``: stamped more than ``health.max_clock_skew_s`` after this
  host's wall clock. A real publisher's ``at`` is its ``now()``; clocks of
  hosts differ by far less than the default minute;
* ``epoch_jump``: whose epoch is more than ``health.max_epoch_jump`` above the
  highest epoch this view accepted (of any region). A leader change or a
  restart takes exactly one above the highest epoch the new leader read, so a
  real one steps by 1 (a few, when leaders change faster than they publish). A
  lower epoch is not refused here: a broker that lost its data makes a new
  leader start at 1 again, which the ordering rule takes once the held record
  went stale.

The first record a view accepts has no reference epoch: it passes the epoch
rule (the ``at`` rule still applies). Producer ACLs on the topic remain the
real protection (docs/grants.md); this only bounds what a forged record can do.

Pure apart from the log line and the counter: the clock is injected.
Written by hand: it is our record format and our leader-epoch rule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from . import counters as m
from .latest import at_seconds

log = logging.getLogger("regionguard.core.stategate")  # its name before the move (loggers stay in the regionguard tree)

__all__ = ["StateGate", "refusal"]


def refusal(record, highest_epoch: int | None, now: float, *, max_skew_s: float, max_jump: int) -> str | None:
    """The reason to refuse ``record`` (``future_at`` or ``epoch_jump``), or None to let it through.

    ``highest_epoch``: the highest epoch accepted so far (None: nothing yet); ``now``: wall-clock seconds.
    """
    at = at_seconds(record)
    if at is not None and at > now + max_skew_s:
        return "future_at"
    epoch = getattr(record, "epoch", 0)
    if highest_epoch is not None and epoch > highest_epoch + max_jump:
        return "epoch_jump"
    return None


class StateGate:
    """A view's admission check: remembers the highest accepted epoch, logs each cause once, counts all."""

    def __init__(self, *, max_skew_s: float, max_jump: int, name: str = "region-state",
                 wall: Callable[[], float] = time.time) -> None:
        self.max_skew_s, self.max_jump, self.name, self.wall = max_skew_s, max_jump, name, wall
        self.highest_epoch: int | None = None
        self.refused: dict[str, int] = {}

    def admit(self, record) -> bool:
        reason = refusal(record, self.highest_epoch, self.wall(), max_skew_s=self.max_skew_s,
                         max_jump=self.max_jump)
        if reason is None:
            epoch = getattr(record, "epoch", 0)
            if self.highest_epoch is None or epoch > self.highest_epoch:
                self.highest_epoch = epoch
            return True
        first = reason not in self.refused
        self.refused[reason] = self.refused.get(reason, 0) + 1
        m.REGION_STATE_REFUSED.labels(reason).inc()
        # once per cause: a forger repeating itself must not flood the log (the counter counts every one)
        log.log(logging.WARNING if first else logging.DEBUG,
                "%s: refusing a record for %s (%s: epoch %s seq %s at %s; highest epoch accepted %s, "
                "max jump %d, max clock skew %gs)%s", self.name, getattr(record, "region", "?"), reason,
                getattr(record, "epoch", 0), getattr(record, "seq", "?"), getattr(record, "at", "?"),
                self.highest_epoch, self.max_jump, self.max_skew_s,
                "; further refusals for this cause are only counted" if first else "")
        return False
