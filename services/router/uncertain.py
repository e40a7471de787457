"""Which records of a partition may already be applied in the region, though never committed.

A record below the mark is never dead-lettered blind as shed or expired: the
router holds it with ``rg-verify`` and the replayer asks the inbox first
(:mod:`.divert`). The mark is set at assignment (an earlier owner may have
applied records it never committed: :mod:`.switch`) and raised by every apply
whose COMMIT may have reached the server (:mod:`.apply`).
"""

from __future__ import annotations

from ..core.writes import Record
from .sort import Routed

#: An offset above any real one: "every record of the partition may have been applied already".
ALL_OFFSETS = 1 << 62


class Uncertain:
    """Per partition, the offset below which a record may already be applied in the region.

    Set at assignment (an earlier owner may have applied records it never
    committed) and raised by every apply whose COMMIT may have reached the server.
    """

    def __init__(self) -> None:
        self.below: dict[int, int] = {}

    def assigned(self, p: int, end: int) -> None:
        self.below[p] = end

    def revoked(self, p: int) -> None:
        self.below.pop(p, None)

    def mark(self, direct: list[Routed]) -> None:
        for rec, _ in direct:
            if rec.offset >= self.below.get(rec.partition, 0):
                self.below[rec.partition] = rec.offset + 1

    def covers(self, rec: Record) -> bool:
        """May ``rec`` have been applied already? (Unknown partitions: assume it may.)"""
        return rec.offset < self.below.get(rec.partition, ALL_OFFSETS)
