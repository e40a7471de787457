"""Stages of one consumed batch that router and replayer share: plan ahead, count, offsets to commit.

Both services read a batch (:mod:`.readahead`), decode it (:mod:`.writes`),
apply it with the inbox (:mod:`.db`), deliver what must be produced
(:mod:`.outbox`) and commit. What differs between them (the router's
partition modes and diversions, the replayer's pacing and dead ends) stays in
their own packages; the pieces here are the same for both.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Iterable

from . import metrics as m
from .db import ApplyResult, Plan, RegionDB, plan_writes
from .errors import BadWrite
from .supervise import swallowed
from .writes import Record

log = logging.getLogger(__name__)


def plan_ahead(db: RegionDB, decoded: list, *, want_rows: bool,
               plannable: Callable[[object], bool] = lambda w: not isinstance(w, BadWrite)) -> Plan | None:
    """Group the batch into statements ahead of time, for the common case where every write goes direct.

    Runs in the read-ahead (while the previous batch is applied). None when any
    decoded item is not ``plannable``, the region's schema is not known yet, or
    a key only PostgreSQL reads has no reading in memory (core/spelling.py); the
    apply stage then plans for itself.
    """
    if not db.ready or not all(plannable(w) for w in decoded):
        return None
    try:
        spelled = db.spellings.known(db.schemas, decoded)
        if spelled is None:
            return None
        return plan_writes(db.schemas, decoded, want_rows=want_rows, barred=db.barred, spelled=spelled)
    except Exception:  # noqa: BLE001 - e.g. a table missing, a value the encoder refuses: the apply
        return None    # path plans again and isolates the write at fault (core/apply.py, _split)


#: rows a lane reads after a batch in which a row failed a statement
CAREFUL_BATCH = 100


def next_batch_max(current: int, ceiling: int, *, careful: bool) -> int:
    """How many records a lane reads next: :data:`CAREFUL_BATCH` after a batch redone in pieces, else twice as many, up to ``ceiling``.

    Finding a row PostgreSQL refuses costs statements in proportion to the batch's rows
    (core/apply.py ``_bisect``), and its partitions stand still until the whole batch commits: 1,000
    rows with a few bad ones took 5-10 s on a busy machine (issue 25). Where bad rows come in a
    stream, small batches keep each partition moving; clean batches bring the size back.
    """
    if careful:
        return min(ceiling, CAREFUL_BATCH)
    return min(ceiling, current * 2)


def next_offsets(batch: Iterable[Record], keep: Callable[[int], bool] = lambda p: True) -> dict[int, int]:
    """Partition -> the offset to commit after ``batch`` (last offset + 1), for partitions ``keep`` accepts."""
    last: dict[int, int] = {}
    for rec in batch:
        if keep(rec.partition) and rec.offset >= last.get(rec.partition, -1):
            last[rec.partition] = rec.offset
    return {p: o + 1 for p, o in last.items()}


def count_applied(region: str, service: str, res: ApplyResult, *, seconds: float | None = None,
                  groups_outcome: str = "applied") -> None:
    """The metrics of one applied batch (``service`` is ``router`` or ``replayer``)."""
    if seconds is not None:
        m.BATCH_SECONDS.labels(region, service).observe(seconds)
    if res.groups:
        m.GROUPS.labels(region, service, groups_outcome).inc(res.groups)
    m.APPLIED.labels(region, service).inc(res.applied)
    m.DUPLICATES.labels(region, service).inc(res.duplicates)
    m.STALE.labels(region, service).inc(res.stale)


async def process_isolating(
    process: Callable[[list[Record], list], Awaitable[None]],
    poison: Callable[[Record, BaseException], Awaitable[None]],
    batch: list[Record], decoded: list, *, passes: tuple[type[BaseException], ...],
    stopping: Callable[[], bool], stopped: Callable[[BaseException], BaseException], what: str, service: str,
) -> None:
    """``process(batch, decoded)`` under the rule for the unknown: no record may stop a lane.

    An error no stage foresaw is taken to belong to some record of the batch: the batch is
    processed again in halves, in order, until the record stands alone, and ``poison(record,
    error)`` dead-letters it. Records before it are committed, records after it go on; what a
    failed attempt already did (an apply, a held copy) is made harmless on the second pass by the
    inbox. Retrying the whole batch instead would stop the partitions for good; letting the error
    out would stop the process, and every restart would meet the same uncommitted record (issue
    25). ``passes`` are the lane's own control-flow exceptions (a rebalance, an abandoned batch),
    raised on as they are; while ``stopping()``, an error becomes ``stopped(error)``.
    """
    try:
        await process(batch, decoded)
        return
    except passes:
        raise
    except Exception as exc:  # noqa: BLE001 - see the docstring
        if stopping():
            raise stopped(exc) from exc
        swallowed(service, exc, what=f"a batch of {len(batch)} {what}; isolating the record at fault",
                  logger=log, level=logging.ERROR)
        err: Any = exc
    if len(batch) == 1:
        await poison(batch[0], err)
        return
    mid = len(batch) // 2
    kw = dict(passes=passes, stopping=stopping, stopped=stopped, what=what, service=service)
    await process_isolating(process, poison, batch[:mid], decoded[:mid], **kw)
    await process_isolating(process, poison, batch[mid:], decoded[mid:], **kw)
