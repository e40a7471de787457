"""The sort stage of the router (pure): which records of a batch go direct, are held, dead or read again.

Given the partition modes (:mod:`.modes`) and whether the region is closed
right now, each decoded record of a batch takes exactly one of these ways:

* **skipped**: its partition was revoked while the batch was read; the new
  owner reads it again from the last commit;
* **deferred**: its partition is ``new`` (fetched before its pause took
  effect, or revoked and assigned back while the batch was read) or
  ``draining`` while the region is closed. Held now, it would start a backlog
  only a replayer can clear, so the partition's records are left uncommitted
  and read again once its mode is known or it is direct;
* **dead**: it did not decode into a valid write (a reason says why);
* **direct**: the region is closed and its partition is direct;
* **held**: anything else; its partition is switched to held (``modes.divert``)
  so the records after it in that partition follow it to the held topic.

No I/O: the worker performs the stages that follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import BadWrite
from ..core.models import WriteEvent
from ..core.writes import Record
from .modes import Mode, PartitionModes

Routed = tuple[Record, WriteEvent]


@dataclass
class Sorted:
    direct: list[Routed] = field(default_factory=list)
    held: list[Routed] = field(default_factory=list)
    dead: list[tuple[Record, BadWrite, str | None]] = field(default_factory=list)
    deferred: set[int] = field(default_factory=set)


def sort_batch(batch: list[Record], decoded: list, modes: PartitionModes, *, region_closed: bool) -> Sorted:
    out = Sorted()
    for rec, w in zip(batch, decoded):
        p = rec.partition
        if p not in modes.parts:
            continue
        mode = modes.mode(p)
        if mode is Mode.new or (region_closed and mode is Mode.draining):
            out.deferred.add(p)
        elif isinstance(w, BadWrite):
            out.dead.append((rec, w, None))
        elif region_closed and mode is Mode.direct:
            out.direct.append((rec, w))
        else:
            modes.divert(p)
            out.held.append((rec, w))
    return out


def merge_in_order(moved: list[Routed], held: list[Routed]) -> list[Routed]:
    """Direct writes that had to be held after all, merged with the held ones in partition order."""
    if not moved:
        return held
    return sorted(moved + held, key=lambda rw: (rw[0].partition, rw[0].offset))
