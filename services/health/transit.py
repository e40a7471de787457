"""How late an observation reached the judge, without comparing two hosts' clocks (pure: no I/O, no clock).

An observation carries ``at``, stamped by its observer's wall clock; the judge's host may be seconds
apart from it (no NTP, a VM resumed, a container's clock). So ``at`` is only ever compared with the
same observer's other stamps: per observer the judge keeps the shortest *transit* seen lately,
``receipt - at`` with receipt read from the judge's own monotonic clock. Both terms hold the two
clocks' offset, which is the same for every observation of that observer, so an observation is
late by how much its transit exceeds that shortest one. A backlog delivered after a stall is late
by the stall; a steady skew of any size is not late at all.

The shortest transit is the minimum over the last one to two ``window_s`` (two buckets), so an
observer whose clock was stepped back is judged fairly again within ``2 * window_s`` rather than
never. An observer's first observation has nothing to be compared with: it is not late.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Transits"]


@dataclass
class _Shortest:
    started: float  # receipt time the current bucket began
    current: float
    previous: float | None = None


class Transits:
    """Per observer, the shortest transit seen lately; :meth:`late_by` of each new observation."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._by_observer: dict[str, _Shortest] = {}

    def late_by(self, observer: str, at_s: float, received_s: float) -> float:
        """Seconds this observation (stamped ``at_s`` by ``observer``, received at ``received_s`` on the
        judge's monotonic clock) arrived later than that observer's quickest lately; 0.0 or more."""
        transit = received_s - at_s
        s = self._by_observer.get(observer)
        if s is None:
            self._by_observer[observer] = _Shortest(received_s, transit)
            return 0.0
        if received_s - s.started >= self.window_s:
            # a bucket older than two windows says nothing of now
            s.previous = s.current if received_s - s.started < 2 * self.window_s else None
            s.started, s.current = received_s, transit
        shortest = min(s.current, transit) if s.previous is None else min(s.current, s.previous, transit)
        s.current = min(s.current, transit)
        return transit - shortest
