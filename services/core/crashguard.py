"""The crash-loop guard's rules (pure): offset-commit markers, and what a start does with them.

A record that kills the process outright (a segfault in a C extension, an OOM
kill, ``os._exit``, an exception escaping where none was foreseen) would be
read again by every restart, and the partition would never move on. Services
are stateless, so the guard keeps its state where the truth is: in the
metadata string of the partition's committed offset.

* **start n** at O: n lanes started reading the partition at O since anything
  of it was committed. Written by a lane when it first reads the partition
  after an assignment, before decoding anything of it (one synchronous commit
  per partition per assignment). Every later commit of the lane carries no
  marker, so progress, a clean revoke and a clean stop clear it.
* A start that finds **start n** with n >= :data:`DEATHS_BEFORE_SERIAL` knows
  that many lanes died with O's batch in flight. It reads the lane one record
  at a time (the whole lane, so another partition's record can't be blamed)
  up to the extent the crashed batches could have had (O +
  :data:`BATCHES_IN_FLIGHT` batches: the read-ahead decodes later batches
  before the first one's commit is sent),
  committing **inflight** at X before decoding record X and **serial** (nothing
  in flight) after it.
* A start that finds **inflight** at X: a lane died with X alone in flight.
  X is dead-lettered as ``poison`` (the dead letter keeps its bytes and its
  source topic, partition and offset, so it can be redriven) and the lane
  goes on, still one record at a time up to the extent.

Only the lanes' own markers are read; a commit with foreign or no metadata
counts as no marker.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: a marker starts with this; anything else in the metadata is not ours
PREFIX = "rg-guard/1"

#: deaths with a partition's batch in flight before its records are read one at a time
DEATHS_BEFORE_SERIAL = 2

#: batches a lane can have read past its last commit: one applied, two queued, one being decoded
#: (core/readahead.py); a record that kills further on is found after two more deaths
BATCHES_IN_FLIGHT = 4


class Kind(str, enum.Enum):
    start = "start"        # lanes started at this offset (``count`` of them) without moving on
    inflight = "inflight"  # this offset's record is being processed alone
    serial = "serial"      # reading one record at a time up to ``end``; nothing in flight


@dataclass(frozen=True)
class Marker:
    kind: Kind
    count: int     # start: lanes started here; inflight/serial: deaths that led to serial reading
    end: int = -1  # inflight/serial: serial reading stops at this offset

    def encode(self) -> str:
        return f"{PREFIX} {self.kind.value} {self.count} {self.end}"


def parse(metadata: str | None) -> Marker | None:
    """The marker in a commit's metadata; None for none, a foreign string or a damaged one."""
    if not metadata or not metadata.startswith(PREFIX + " "):
        return None
    parts = metadata[len(PREFIX) + 1:].split(" ")
    if len(parts) != 3:
        return None
    try:
        kind, count, end = Kind(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return None
    if count < 0:
        return None
    return Marker(kind, count, end)


@dataclass(frozen=True)
class Start:
    """What a lane does with a partition it starts reading at a committed offset."""

    commit: Marker | None = None   # commit this marker at the committed offset before decoding anything
    serial_end: int | None = None  # read one record at a time until this offset
    deaths: int = 0                # deaths counted so far (serial reading)
    poison: int | None = None      # dead-letter this offset's record as poison


def on_start(committed: int, metadata: str | None, *, batch_max: int) -> Start:
    """Decide for a partition whose committed offset is ``committed`` with ``metadata``."""
    marker = parse(metadata)
    if marker is None or (marker.kind is not Kind.start and committed >= marker.end):
        return Start(commit=Marker(Kind.start, 1))
    if marker.kind is Kind.start:
        if marker.count >= DEATHS_BEFORE_SERIAL:
            return Start(serial_end=committed + BATCHES_IN_FLIGHT * batch_max, deaths=marker.count)
        return Start(commit=Marker(Kind.start, marker.count + 1))
    if marker.kind is Kind.inflight:
        return Start(serial_end=marker.end, deaths=marker.count + 1, poison=committed)
    return Start(serial_end=marker.end, deaths=marker.count)


def inflight(deaths: int, end: int) -> Marker:
    """Committed at X before record X, read alone, is decoded."""
    return Marker(Kind.inflight, deaths, end)


def after(next_offset: int, *, deaths: int, end: int) -> Marker | None:
    """The marker a commit of ``next_offset`` carries in serial reading; None once past the extent."""
    return Marker(Kind.serial, deaths, end) if next_offset < end else None


def poison_detail(*, topic: str, partition: int, offset: int, deaths: int, service: str) -> str:
    return (f"{topic}[{partition}] offset {offset} was in flight when the {service} died {deaths} times "
            f"(the last time alone); dead-lettered so the partition moves on")
