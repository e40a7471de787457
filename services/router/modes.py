"""Per-partition direct/held modes: the fence-and-switch state machine (pure).

A partition ``p`` of region ``R`` is *held* while ``R`` is not closed, or
while ``rg.held.R[p]`` may still have records the replayer has not applied.
The truth lives in Kafka offsets, so a fresh owner (after a restart or a
rebalance) starts from what the held topic and the replayer's committed
offset say, never from memory:

* held[p] empty (end offset 0): nothing can be pending, start ``direct``.
* otherwise start ``held`` with an unknown last-held offset. Before switching
  to direct the router produces a *fence* record into held[p]; its confirmed
  offset is an exact upper bound of everything held before, on any broker
  (tansu's reported high watermark is not exact, so we never trust it beyond
  "is zero").

Switch back (``draining``): the partition is paused until everything in
held[p] up to ``last_held`` is replayed, then it resumes direct. Replayed
means the replayer's committed offset is beyond ``last_held`` -- or every
record between that committed offset and ``last_held`` is a fence. Fences need
no replay, and each restart of a router adds one: waiting for the replayer to
step over them stalled a restarted router's region until the replayer ran
(for good with the replayer stopped), although nothing was left to replay.

No I/O here: the worker feeds in events and performs the returned actions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Mode(str, enum.Enum):
    new = "new"            # just assigned, held-topic state not yet looked up
    direct = "direct"
    held = "held"          # region not closed (or pending backlog): divert every record
    draining = "draining"  # region closed again: paused until the replayer covers last_held


ALLOWED = {
    (Mode.new, Mode.direct), (Mode.new, Mode.held),
    (Mode.direct, Mode.held),
    (Mode.held, Mode.draining),
    (Mode.draining, Mode.held), (Mode.draining, Mode.direct),
}


class Action(str, enum.Enum):
    pause = "pause"
    resume = "resume"
    fence = "fence"        # produce a fence record into held[p], then call fenced()


@dataclass
class PartitionState:
    mode: Mode = Mode.new
    last_held: int | None = None   # highest confirmed offset we (or a fence) put in held[p]


class PartitionModes:
    """Modes of one region's assigned partitions."""

    def __init__(self) -> None:
        self.parts: dict[int, PartitionState] = {}

    def _set(self, p: int, mode: Mode) -> None:
        st = self.parts[p]
        if st.mode is mode:
            return
        if (st.mode, mode) not in ALLOWED:
            raise RuntimeError(f"partition {p}: illegal mode change {st.mode.value} -> {mode.value}")
        st.mode = mode

    # rebalances ---------------------------------------------------------
    def assigned(self, partitions) -> None:
        for p in partitions:
            self.parts[p] = PartitionState()

    def revoked(self, partitions) -> None:
        for p in partitions:
            self.parts.pop(p, None)

    def pending_lookup(self) -> list[int]:
        return [p for p, st in self.parts.items() if st.mode is Mode.new]

    def looked_up(self, p: int, held_end: int) -> None:
        """Held topic end offset for p is known (0 means it never held anything)."""
        if p in self.parts and self.parts[p].mode is Mode.new:
            self._set(p, Mode.direct if held_end <= 0 else Mode.held)

    # per record ---------------------------------------------------------
    def mode(self, p: int) -> Mode:
        return self.parts[p].mode

    def divert(self, p: int) -> None:
        """A record of p must go to the held topic (region not closed, or not yet drained)."""
        st = self.parts[p]
        if st.mode is Mode.direct:
            self._set(p, Mode.held)

    def held_confirmed(self, p: int, offset: int) -> None:
        st = self.parts.get(p)
        if st is not None and (st.last_held is None or offset > st.last_held):
            st.last_held = offset

    # region state and replayer progress ---------------------------------------
    def region_changed(self, closed: bool) -> list[tuple[Action, int]]:
        actions: list[tuple[Action, int]] = []
        for p, st in self.parts.items():
            if closed and st.mode is Mode.held:
                self._set(p, Mode.draining)
                actions.append((Action.pause, p))
                if st.last_held is None:
                    actions.append((Action.fence, p))
            elif not closed and st.mode is Mode.draining:
                self._set(p, Mode.held)
                actions.append((Action.resume, p))
            elif not closed and st.mode is Mode.direct:
                self._set(p, Mode.held)
        return actions

    def unfenced(self) -> list[tuple[Action, int]]:
        """Fence again every draining partition whose fence was never confirmed (a failed produce):
        without it such a partition would stay paused until the region's next outage."""
        return [(Action.fence, p) for p, st in self.parts.items()
                if st.mode is Mode.draining and st.last_held is None]

    def draining(self) -> list[int]:
        return [p for p, st in self.parts.items() if st.mode is Mode.draining and st.last_held is not None]

    def replayer_progress(self, p: int, committed: int | None) -> list[tuple[Action, int]]:
        """The replayer's committed offset on held[p]; switch to direct once it covers last_held."""
        st = self.parts.get(p)
        if st is None or st.mode is not Mode.draining or st.last_held is None:
            return []
        if committed is not None and committed > st.last_held:
            return self._direct(p)
        return []

    def unreplayed(self, p: int, committed: int | None) -> tuple[int, int] | None:
        """The held offsets ``[first, last]`` of draining p that the replayer has not committed yet
        (None when there is nothing to wait for, or nothing known). The worker reads them: if all
        are fences, :meth:`only_fences_left` switches p to direct without waiting for the replayer."""
        st = self.parts.get(p)
        if st is None or st.mode is not Mode.draining or st.last_held is None:
            return None
        first = committed if committed is not None and committed >= 0 else 0
        return (first, st.last_held) if first <= st.last_held else None

    def only_fences_left(self, p: int, first: int, last: int) -> list[tuple[Action, int]]:
        """Every record of held[p] in ``[first, last]`` is a fence, and the replayer committed ``first``."""
        st = self.parts.get(p)
        if st is None or st.mode is not Mode.draining or st.last_held != last:
            return []  # a newer held record (or another mode) since the scan: it proves nothing now
        return self._direct(p)

    def _direct(self, p: int) -> list[tuple[Action, int]]:
        self._set(p, Mode.direct)
        return [(Action.resume, p)]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {m.value: 0 for m in Mode}
        for st in self.parts.values():
            out[st.mode.value] += 1
        return out
