"""The batched exactly-once apply: one transaction a batch, the inbox claim, bad rows isolated.

The router (direct mode) and the replayer (held backlog) share :func:`apply_writes`, so
both follow the same inbox-dedup and version rules. The fast path runs a :class:`Plan`
(core/plan.py) without savepoints; a batch a row fails is screened (core/screen.py) or
redone in halves until the bad rows stand alone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import asyncpg
import orjson

from . import metrics as m
from .errors import BadWrite, PoisonWrite, RegionGuardError, classify_db_error
from .models import DeadReason, Op, WriteEvent
from .plan import Plan, _columns, _payload, _statement, _steps, plan_writes
from .screen import refused_by_checks
from .spelling import Spelled, Spellings
from .sql import INBOX_CLAIM, INBOX_CLAIM_COUNT, INBOX_RELEASE, TableSchema

log = logging.getLogger(__name__)


@dataclass
class ApplyResult:
    applied: int = 0
    duplicates: int = 0
    stale: int = 0
    groups: int = 0  # atomic write groups applied whole (their rows count in ``applied``/``stale``)
    failed: list[tuple[int, BadWrite]] = field(default_factory=list)
    # (table, op, row) of every changed row, when asked for (Redis write-through)
    rows: list[tuple[str, Op, dict]] = field(default_factory=list)
    careful: bool = False  # a row failed a statement: the batch was redone in pieces (core/batch.py next_batch_max)

    def add(self, other: "ApplyResult", offset: int = 0) -> None:
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.stale += other.stale
        self.groups += other.groups
        self.failed.extend((i + offset, e) for i, e in other.failed)


class _Isolate(Exception):
    """A row failed in the fast path: redo the batch with a savepoint per statement."""


class _Duplicates(Exception):
    """The fast path's claim found writes applied before: redo the batch learning which."""


async def apply_writes(
    conn: asyncpg.Connection,
    schemas: dict[str, TableSchema],
    writes: list[WriteEvent],
    *,
    source: str,
    region: str,
    want_rows: bool = False,
    plan: Plan | None = None,
    barred: frozenset[str] = frozenset(),
    spellings: Spellings | None = None,
) -> ApplyResult:
    """Apply ``writes`` in one transaction, at most once each, in order per row.

    Raises a retriable :class:`RegionGuardError` when the transaction could not
    commit; then nothing of the batch is applied. Bad rows do not fail the
    batch: they are isolated with savepoints and returned in ``failed``.

    The fast path runs without savepoints (two round trips fewer per batch)
    and claims the inbox by count. Only when the count shows duplicates is
    the batch redone, learning which writes are new; only when a row fails is
    it redone in halves, each in a savepoint (:func:`_bisect`), a write alone
    with a savepoint per statement. A redo starts a new transaction: the
    abandoned one is rolled back whole.

    ``barred`` names the tables this region may not hold (data residency): a
    write of one fails as a ``schema`` dead letter, whether or not the table exists.

    ``spellings``: the region's readings of key values only PostgreSQL reads (core/spelling.py);
    those the batch needs and it lacks are asked for first, in one query.
    """
    if not writes:
        return ApplyResult()
    spelled: Spelled = {}
    try:
        if plan is not None and plan.writes is writes:
            spelled = plan.spelled
        else:
            spelled = await (spellings or Spellings()).learn(conn, schemas, writes)
        kw = dict(barred=barred, spelled=spelled)
        try:
            try:
                return await _apply(conn, schemas, writes, source=source, careful=False, want_rows=want_rows,
                                    plan=plan, count_only=True, **kw)
            except _Duplicates:
                return await _apply(conn, schemas, writes, source=source, careful=False, want_rows=want_rows,
                                    plan=plan, **kw)
        except _Isolate as iso:
            cause = type(iso.__cause__).__name__
            log.info("a row failed (%s); isolating rows with savepoints", cause)
            t0 = time.perf_counter()
            res = ApplyResult(careful=True)
            refused = await _screen(conn, schemas, writes, iso, plan=plan, want_rows=want_rows, **kw)
            async with conn.transaction():
                if refused:
                    await _apply_screened(conn, schemas, writes, refused, res, source=source, want_rows=want_rows,
                                          **kw)
                else:
                    await _bisect(conn, schemas, writes, 0, res, source=source, want_rows=want_rows,
                                  failed_whole=True, **kw)
            # what the careful path costs, by the error that sent the batch there (issue 25's stalls)
            m.CAREFUL_BATCHES.labels(region, source, cause).inc()
            m.CAREFUL_SECONDS.labels(region, source, cause).inc(time.perf_counter() - t0)
            log.info("careful path (%s): %d writes, %d failed, %.3f s", cause, len(writes), len(res.failed),
                     time.perf_counter() - t0)
            return res
    except Exception as exc:  # noqa: BLE001 - classified by type below
        err = classify_db_error(region, exc)
        if err.retriable:
            if err is exc:
                raise
            raise err from exc
    # An error outside the statements the careful path isolates (planning a row raised, the inbox
    # claim failed, a group's careful path tripped): split the batch until it stands alone.
    log.warning("region %s: a batch of %d failed (%s); splitting it to find the write(s) at fault",
                region, len(writes), err)
    res = ApplyResult(careful=True)
    try:
        async with conn.transaction():
            await _split(conn, schemas, writes, 0, res, source=source, region=region, want_rows=want_rows,
                         barred=barred, spelled=spelled)
    except RegionGuardError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever is left is about the region, not a row
        raise classify_db_error(region, exc) from exc
    return res


async def _screen(conn, schemas, writes: list, iso: _Isolate, *, plan: Plan | None, want_rows: bool,
                  barred: frozenset[str], spelled: Spelled | None = None) -> set[int]:
    """The writes CHECK constraints refuse (core/screen.py), when a CHECK is what failed the batch."""
    if not isinstance(iso.__cause__, asyncpg.CheckViolationError):
        return set()
    if plan is None or plan.writes is not writes or plan.want_rows != want_rows:
        plan = plan_writes(schemas, writes, want_rows=want_rows, barred=barred, spelled=spelled)
    # a group's refused op fails its whole group, so the screen names the group's batch index: the
    # group is then tried alone after the rest, where its careful path names the op (issue 25's fuzz:
    # batches of groups with one bad op in ten were halved down to single groups, 2-7 s a batch)
    return await refused_by_checks(conn, plan.steps)


async def _apply_screened(conn, schemas, writes: list, refused: set[int], res: ApplyResult, *, source: str,
                          want_rows: bool, barred: frozenset[str], spelled: Spelled | None = None) -> None:
    """The rows no CHECK refuses as one piece (halved only if something else fails), then each refused row alone.

    A refused row can never change a row (core/screen.py), nor can a group holding one (a group
    applies whole or not at all), so trying it after the others keeps per-key order; trying it at
    all, rather than dead-lettering it at once, leaves the verdict (constraint dead letter, or stale
    where a version or tombstone skips it first) to PostgreSQL, and a group's careful path names its op.
    """
    rest = [i for i in range(len(writes)) if i not in refused]
    part = ApplyResult()
    if rest:
        await _bisect(conn, schemas, [writes[i] for i in rest], 0, part, source=source, want_rows=want_rows,
                      barred=barred, spelled=spelled)
    res.add(ApplyResult(applied=part.applied, duplicates=part.duplicates, stale=part.stale, groups=part.groups))
    res.failed.extend((rest[i], e) for i, e in part.failed)
    res.rows.extend(part.rows)
    for i in sorted(refused):
        await _bisect(conn, schemas, [writes[i]], i, res, source=source, want_rows=want_rows, barred=barred,
                      spelled=spelled)
    res.failed.sort(key=lambda f: f[0])


async def _bisect(conn, schemas, writes: list, offset: int, res: ApplyResult, *, source: str, want_rows: bool,
                  barred: frozenset[str], failed_whole: bool = False, spelled: Spelled | None = None) -> bool:
    """Apply ``writes`` by the fast path in a savepoint; where a row fails, each half in turn; one write alone, carefully.

    The careful path redoes a whole batch with a savepoint per statement, per group and, in a
    failing statement, per row below a few dozen rows: about 5 s for a batch of 1,000 with a few
    dozen bad rows, most of it round trips (issue 25). Halving keeps each good half one statement
    per shape, so a bad row among 1,000 costs one or two statements per halving level, about
    fifteen. Halves go in order, so per-key order holds; the inbox claim of a failed half is
    rolled back with it. ``failed_whole``: ``writes`` just failed as a whole (the batch itself, or
    the second half of a piece whose first half applied), so it is split without trying it again.
    Returns whether ``writes`` applied whole at the first try.
    """
    if len(writes) == 1:
        part = await _apply(conn, schemas, writes, source=source, careful=True, want_rows=want_rows, barred=barred,
                            spelled=spelled)
        res.add(part, offset)
        res.rows.extend(part.rows)
        return not part.failed
    if not failed_whole:
        try:
            part = await _apply(conn, schemas, writes, source=source, careful=False, want_rows=want_rows,
                                barred=barred, spelled=spelled)
        except _Isolate:
            pass
        else:
            res.add(part, offset)
            res.rows.extend(part.rows)
            return True
    mid = len(writes) // 2
    kw = dict(source=source, want_rows=want_rows, barred=barred, spelled=spelled)
    first_whole = await _bisect(conn, schemas, writes[:mid], offset, res, **kw)
    # the first half applied whole, so what failed is in the second: split it at once
    await _bisect(conn, schemas, writes[mid:], offset + mid, res, failed_whole=first_whole, **kw)
    return False


async def _split(conn, schemas, writes: list, offset: int, res: ApplyResult, *, source: str, region: str,
                 want_rows: bool, barred: frozenset[str] = frozenset(), spelled: Spelled | None = None) -> None:
    """Apply ``writes`` in a savepoint; on a row-level failure, each half in turn, down to one write.

    Halves go in order, so per-key order holds; a write that fails alone is dead-lettered with the
    error's reason (``poison`` for one we can't name), and the rest of the batch applies. A
    retriable error (the region went away) ends the whole transaction: nothing of it is applied.
    """
    try:
        part = await _apply(conn, schemas, writes, source=source, careful=True, want_rows=want_rows,
                            barred=barred, spelled=spelled)
    except Exception as exc:  # noqa: BLE001 - classified by type below
        err = classify_db_error(region, exc)
        if err.retriable:
            raise err from exc
        if len(writes) == 1:
            if not isinstance(err, BadWrite):
                err = BadWrite(DeadReason.poison, getattr(err, "detail", None) or str(err))
            log.warning("region %s: write %s dead-lettered: %s", region, writes[0].id, err,
                        extra={"region": region, "write_id": str(writes[0].id)})
            res.failed.append((offset, err))
            return
        mid = len(writes) // 2
        await _split(conn, schemas, writes[:mid], offset, res, source=source, region=region, want_rows=want_rows,
                     barred=barred, spelled=spelled)
        await _split(conn, schemas, writes[mid:], offset + mid, res, source=source, region=region,
                     want_rows=want_rows, barred=barred, spelled=spelled)
        return
    res.add(part, offset)
    res.rows.extend(part.rows)


async def _apply(conn, schemas, writes: list[WriteEvent], *, source: str, careful: bool,
                 want_rows: bool, plan: Plan | None = None, count_only: bool = False,
                 barred: frozenset[str] = frozenset(), spelled: Spelled | None = None) -> ApplyResult:
    res = ApplyResult()
    if plan is None or plan.writes is not writes or plan.want_rows != want_rows:
        plan = plan_writes(schemas, writes, want_rows=want_rows, barred=barred, spelled=spelled)
    async with conn.transaction():
        if count_only:
            status = await conn.execute(INBOX_CLAIM_COUNT, plan.ids, plan.tables, source)
            n_claimed = int(status.rsplit(" ", 1)[-1])
            if n_claimed != len(plan.ids):
                raise _Duplicates()
        else:
            claimed = {r[0] for r in await conn.fetch(INBOX_CLAIM, plan.ids, plan.tables, source)}
            n_claimed = len(claimed)
            if n_claimed != len(plan.ids):  # some were applied before: plan again for the rest
                plan = plan_writes(schemas, writes, want_rows=want_rows, only=claimed, barred=barred, spelled=spelled)
        res.failed.extend(plan.failed)
        planned_failed = len(plan.failed)  # groups among these were never counted in ``plan.groups``
        res.duplicates = len(writes) - n_claimed
        if careful and plan.groups:
            await _apply_in_order(conn, schemas, plan, res, want_rows)
        for rows, schema, op, cols, stmt, params in (() if careful and plan.groups else plan.steps):
            if careful:
                await _apply_group(conn, schema, op, cols, rows, res, want_rows)
                continue
            try:
                changed = await _run(conn, stmt, params, res if want_rows else None, schema.name, op)
            except Exception as exc:  # noqa: BLE001
                if isinstance(classify_db_error("", exc), (BadWrite, PoisonWrite)):
                    raise _Isolate() from exc
                raise
            res.applied += changed
            res.stale += len(rows) - changed
        if res.failed:
            await conn.execute(INBOX_RELEASE, [writes[i].id for i, _ in res.failed])
        if not careful or not plan.groups:
            res.groups = plan.groups - sum(1 for i, _ in res.failed[planned_failed:] if writes[i].ops is not None)
    return res


async def _apply_in_order(conn, schemas, plan: Plan, res: ApplyResult, want_rows: bool) -> None:
    """The careful path of a batch holding groups: event by event in batch order.

    Runs of single-row writes go as before (a savepoint per statement, then per row); each group
    is one savepoint, one op at a time, so a failing op is named and undoes its whole group.
    """
    singles: list[tuple[int, WriteEvent]] = []

    async def flush() -> None:
        for rows, schema, op, cols, _stmt, _params in _steps(singles, schemas, want_rows, plan.spelled):
            await _apply_group(conn, schema, op, cols, rows, res, want_rows)
        singles.clear()

    for i, w in plan.todo:
        if w.ops is None:
            singles.append((i, w))
            continue
        await flush()
        await _apply_atomic(conn, schemas, i, w, res, want_rows)
    await flush()


async def _apply_atomic(conn, schemas, i: int, w, res: ApplyResult, want_rows: bool) -> None:
    """Apply one group's ops in listed order inside a savepoint; on a row error, none of them."""
    part = ApplyResult()
    at = 0
    try:
        async with conn.transaction():
            for at, op in enumerate(w.ops):
                cols = _columns(op, schemas)
                schema = schemas[op.table]
                rows = [(i, op)]
                changed = await _run(conn, _statement(schema, op.op, cols, want_rows),
                                     _payload(schema, op.op, cols, rows), part if want_rows else None,
                                     schema.name, op.op)
                part.applied += changed
                part.stale += 1 - changed
    except Exception as exc:  # noqa: BLE001
        err = classify_db_error(w.ops[at].table, exc)
        if not isinstance(err, (BadWrite, PoisonWrite)):
            raise
        reason = DeadReason.poison if isinstance(err, PoisonWrite) else err.reason
        res.failed.append((i, BadWrite(reason, f"ops[{at}] ({w.ops[at].table} {w.ops[at].op.value}): "
                                               f"{getattr(err, 'detail', str(err))}")))
        return
    res.applied += part.applied
    res.stale += part.stale
    res.groups += 1
    res.rows.extend(part.rows)


async def _run(conn: asyncpg.Connection, stmt: str, payload: list, res: ApplyResult | None = None,
               table: str = "", op: Op = Op.upsert) -> int:
    """Execute; the command status (``INSERT 0 n``, ``UPDATE n``, ``DELETE n``) counts changed rows.

    With ``res`` the statement returns the changed rows, which are collected.
    """
    if res is None:
        status = await conn.execute(stmt, *payload)
        return int(status.rsplit(" ", 1)[-1])
    rows = await conn.fetch(stmt, *payload)
    res.rows.extend((table, op, orjson.loads(r[0])) for r in rows)
    return len(rows)


#: Below this many rows a failing statement's rows are tried one by one instead of split in halves.
ISOLATE_ONE_BY_ONE = 32


async def _apply_group(conn, schema: TableSchema, op: Op, cols, rows, res: ApplyResult,
                       want_rows: bool = False) -> None:
    stmt = _statement(schema, op, cols, want_rows)
    try:
        async with conn.transaction():  # savepoint: a bad row must not fail the batch
            changed = await _run(conn, stmt, _payload(schema, op, cols, rows), res if want_rows else None, schema.name,
                                 op)
    except Exception as exc:  # noqa: BLE001
        err = classify_db_error(schema.name, exc)
        if not isinstance(err, (BadWrite, PoisonWrite)):
            raise
        if len(rows) == 1:
            if isinstance(err, PoisonWrite):
                err = BadWrite(DeadReason.poison, str(err))
            res.failed.append((rows[0][0], err))
            return
        # isolate the failing rows: by halves down to a few dozen rows, then one by one, in order
        # (rows of one statement are distinct rows). A few bad rows among 1,000 then cost tens of
        # statements, not 1,000 (measured: 0.08 s against 0.5 s for one bad row); where most small
        # chunks hold a bad row, one by one is cheaper than splitting further
        if len(rows) > ISOLATE_ONE_BY_ONE:
            mid = len(rows) // 2
            await _apply_group(conn, schema, op, cols, rows[:mid], res, want_rows)
            await _apply_group(conn, schema, op, cols, rows[mid:], res, want_rows)
            return
        for row in rows:
            await _apply_group(conn, schema, op, cols, [row], res, want_rows)
        return
    res.applied += changed
    res.stale += len(rows) - changed
