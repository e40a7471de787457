"""One region's database: pool, readiness, and the batched exactly-once apply.

The router (direct mode) and the replayer (held backlog) share
:func:`apply_writes`, so both follow the same inbox-dedup and version rules.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

import asyncpg
import msgspec
import orjson

from . import metrics as m
from .cast import CastError
from .config import Config, statement_cache_size
from .dsn import dsn_host
from .errors import (BadWrite, PoisonWrite, PreparedStatementLost, RegionGuardError, RegionNotReady, RegionUnavailable,
                     classify_db_error)
from .models import DeadReason, Op, WriteEvent, row_ops
from .refuse import refusal, suspect_columns
from .screen import refused_by_checks
from .spelling import Spelled, Spellings, identity, refusal as spelling_refusal
from .sql import (COLUMNS_QUERY, INBOX_APPLIED, INBOX_CLAIM, INBOX_CLAIM_COUNT, INBOX_DDL, INBOX_EXISTS, INBOX_RELEASE,
                  INBOX_TABLE, TableSchema, build_statement, statement_params)
from .writes import check_columns

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


def _row_id(w, schemas: dict[str, TableSchema] | None = None, spelled: Spelled | None = None) -> tuple:
    k = w.key
    if spelled:  # some key of the batch is read by PostgreSQL alone: its reading names the row
        k = identity(k, schemas[w.table], spelled)
    return (w.table, *k.values()) if len(k) == 1 else (w.table, *sorted(k.items()))


def _levels(items: list[tuple[int, WriteEvent]], schemas: dict[str, TableSchema],
            spelled: Spelled | None = None) -> list[list[tuple[int, object]]]:
    """Order row operations into levels run in sequence; each level is one statement per shape.

    A row operation goes to a level above every earlier one it may depend on:

    - an earlier write of the same row (per-key order: a row's k-th write lands in level k or later);
    - the op before it in its group, unless both have the same shape (the group's listed order;
      rows of one statement may refer to each other, PostgreSQL checks foreign keys at its end);
    - every op of an earlier event with the same ``ordering_key`` (events sharing it apply in order).

    Rows of unrelated events share levels, so a batch of groups of 10 (an order and 9 items) is
    still a few statements. A dependency this cannot see (a foreign key between events of
    different ordering keys) may fail the fast path; the careful path then applies in batch order.
    """
    if all(w.ops is None and w.ordering_key is None for _, w in items):
        ids = [_row_id(w, schemas, spelled) for _, w in items]
        if len(set(ids)) == len(ids):
            return [items] if items else []  # the common case: single rows, every row once
    row_level: dict[tuple, int] = {}
    chain_level: dict[str, int] = {}
    levels: list[list[tuple[int, object]]] = []
    for i, w in items:
        base = chain_level.get(w.ordering_key, -1) + 1 if w.ordering_key is not None else 0
        level = prev_shape = None
        top = base
        for op in row_ops(w):
            shape = _shape(op, schemas)
            rid = _row_id(op, schemas, spelled)
            need = max(base, row_level.get(rid, -1) + 1)
            if level is not None:
                need = max(need, level if shape == prev_shape else level + 1)
            level, prev_shape = need, shape
            row_level[rid] = level
            top = max(top, level)
            while len(levels) <= level:
                levels.append([])
            levels[level].append((i, op))
        if w.ordering_key is not None:
            chain_level[w.ordering_key] = top
    return levels


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
    """The rows CHECK constraints refuse (core/screen.py), when a CHECK is what failed a batch of single rows."""
    if not isinstance(iso.__cause__, asyncpg.CheckViolationError):
        return set()
    if plan is None or plan.writes is not writes or plan.want_rows != want_rows:
        plan = plan_writes(schemas, writes, want_rows=want_rows, barred=barred, spelled=spelled)
    if plan.groups:
        return set()  # a group's rows stand or fall together: halving keeps that simple
    return await refused_by_checks(conn, plan.steps)


async def _apply_screened(conn, schemas, writes: list, refused: set[int], res: ApplyResult, *, source: str,
                          want_rows: bool, barred: frozenset[str], spelled: Spelled | None = None) -> None:
    """The rows no CHECK refuses as one piece (halved only if something else fails), then each refused row alone.

    A refused row can never change a row (core/screen.py), so trying it after the others keeps
    per-key order; trying it at all, rather than dead-lettering it at once, leaves the verdict
    (constraint dead letter, or stale where a version or tombstone skips it first) to PostgreSQL.
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


@dataclass
class Plan:
    """Everything about a batch that needs no database: built ahead, off the critical path.

    ``steps`` are (rows, statement, parameters) in execution order: rounds in
    sequence, one statement per (table, op, columns) within a round.
    """

    writes: list
    ids: list
    tables: list[str]
    failed: list[tuple[int, BadWrite]]
    steps: list[tuple[list[tuple[int, WriteEvent]], TableSchema, Op, tuple[str, ...], str, list]]
    want_rows: bool
    todo: list[tuple[int, WriteEvent]] = field(default_factory=list)  # (index, event) to apply, batch order
    groups: int = 0  # atomic write groups among ``todo``
    spelled: Spelled = field(default_factory=dict)  # PostgreSQL's readings of keys it alone reads (core/spelling.py)


def plan_writes(schemas: dict[str, TableSchema], writes: list, *, want_rows: bool = False,
                only: set | None = None, barred: frozenset[str] = frozenset(),
                spelled: Spelled | None = None) -> Plan:
    """Group writes into statements; ``only`` restricts to claimed ids (default: every first occurrence).

    ``barred``: the tables the database's region may not hold (``allowed_regions``); their writes fail.
    ``spelled``: PostgreSQL's readings of the key values only it reads (core/spelling.py), every one
    the batch holds: a refused one is its write's ``schema`` dead letter, and two spellings it reads
    as one are one row. Without it (None) such values are planned as they are spelled.

    Ids are compared by ``UUID.int``: ``uuid.UUID`` hashes in Python, which
    measured at a tenth of planning.
    """
    first: dict[int, int] = {}
    for i, w in enumerate(writes):
        first.setdefault(w.id.int, i)
    every = len(first) == len(writes) and only is None  # the common case: no id twice, nothing claimed before
    claimed = None if only is None else {u.int for u in only}
    failed: list[tuple[int, BadWrite]] = []
    todo: list[tuple[int, WriteEvent]] = []
    # (table, op, data columns) of single rows that passed the column check, which depends on all
    # three (an update needs a non-key column): most of a batch is a few of them
    valid: set[tuple] = set()
    for i, w in enumerate(writes):
        if every or (first[w.id.int] == i and (claimed is None or w.id.int in claimed)):
            if w.ops is None:
                cols = (w.table, w.op, tuple(w.data) if w.data else ())
                if cols in valid:
                    bad = None
                else:
                    bad = _precheck(w, schemas, barred)
                    if bad is None:
                        valid.add(cols)
            else:
                bad = _precheck(w, schemas, barred)
            if bad is None:
                # planned (row identity, statement values) as PostgreSQL will read it; the common
                # case, a single row already in form, is checked here without the calls of _in_form
                try:
                    in_form = w.ops is None and schemas[w.table].casts.row(w.key, w.data) is None
                except CastError:
                    in_form = False
                if not in_form:
                    w = _in_form(w, schemas)
                    if w.__class__ is BadWrite:
                        bad = w
                if bad is None and spelled:  # empty: no key of the batch is read by PostgreSQL alone
                    bad = _spelling_refused(w, schemas, spelled)
            if bad is not None:
                failed.append((i, bad))
            else:
                todo.append((i, w))
    firsts = [writes[i] for i in first.values()]
    steps = _steps(todo, schemas, want_rows, spelled)
    refused = _refused(steps, todo)
    if refused:  # rare: plan again without them, so no statement fails for them (core/refuse.py)
        failed = sorted([*failed, *refused.items()], key=lambda f: f[0])
        todo = [(i, w) for i, w in todo if i not in refused]
        steps = _steps(todo, schemas, want_rows, spelled)
    return Plan(writes, [w.id for w in firsts], [_inbox_table(w) for w in firsts], failed,
                steps, want_rows, todo, sum(1 for _, w in todo if w.ops is not None), spelled or {})


def _spelling_refused(w, schemas: dict[str, TableSchema], spelled: Spelled) -> BadWrite | None:
    """A ``schema`` BadWrite when PostgreSQL refused a key value of ``w`` that only it reads."""
    for at, op in enumerate(row_ops(w)):
        schema = schemas[op.table]
        if not schema.casts.asks:
            continue
        detail = spelling_refusal(op.key, schema, spelled)
        if detail is not None:
            return BadWrite(DeadReason.schema, detail if w.ops is None else f"ops[{at}]: {detail}")
    return None


def _refused(steps: list, todo: list[tuple[int, WriteEvent]]) -> dict[int, BadWrite]:
    """Index -> ``schema`` dead letter of each planned write holding a value PostgreSQL would refuse.

    One scan of each statement's parameter text per column; rows are looked at only in a column
    that scan points to (core/refuse.py).
    """
    out: dict[int, BadWrite] = {}
    for rows, schema, _op, cols, _stmt, params in steps:
        suspects = suspect_columns(schema, cols, params)
        if not suspects:
            continue
        events = None
        for i, row in rows:
            if i in out:
                continue
            for c in suspects:
                v = row.key[c] if c in row.key else (row.data or {}).get(c)
                detail = refusal(schema, c, v)
                if detail is None:
                    continue
                events = events if events is not None else dict(todo)
                if events[i].ops is not None:  # an op of a group: the whole group goes, its op named
                    at = next(k for k, op in enumerate(events[i].ops) if op is row)
                    detail = f"ops[{at}]: {detail}"
                out[i] = BadWrite(DeadReason.schema, detail)
                break
    return out


def _steps(todo: list[tuple[int, WriteEvent]], schemas: dict[str, TableSchema], want_rows: bool,
           spelled: Spelled | None = None) -> list:
    steps = []
    for level in _levels(todo, schemas, spelled):
        shapes: dict[tuple, list[tuple[int, object]]] = defaultdict(list)
        for i, op in level:
            shapes[_shape(op, schemas)].append((i, op))
        for (table, op, key_cols, data_cols), rows in shapes.items():
            cols = tuple(sorted({*key_cols, *data_cols}))  # as _columns() has it
            schema = schemas[table]
            steps.append((rows, schema, op, cols, _statement(schema, op, cols, want_rows),
                          _payload(schema, op, cols, rows)))
    return steps


def _inbox_table(w) -> str:
    """The inbox's ``tbl`` of an event: its table, or ``group:<first op's table>`` (for operators)."""
    return w.table if w.ops is None else f"group:{w.ops[0].table}"


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


def _columns(op, schemas) -> tuple[str, ...]:
    """The columns of the statement that applies ``op`` alone."""
    _table, _op, key_cols, data_cols = _shape(op, schemas)
    return tuple(sorted({*key_cols, *data_cols}))


def _statement(schema: TableSchema, op: Op, cols, want_rows: bool = False) -> str:
    return build_statement(schema, op, cols, returning=want_rows)


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


def _shape(w: WriteEvent, schemas: dict[str, TableSchema]) -> tuple:
    """Writes of one shape (table, op, column names) share one statement."""
    if w.op is not Op.delete:
        return (w.table, w.op, tuple(w.key), tuple(w.data))
    ver = schemas[w.table].version
    if ver and w.data and w.data.get(ver) is not None:
        return (w.table, w.op, tuple(w.key), (ver,))  # a versioned delete only removes rows no newer than itself
    return (w.table, w.op, tuple(w.key), ())


def _in_form(w, schemas: dict[str, TableSchema]):
    """``w`` with key and data values in their columns' form (core/cast.py), or a ``schema`` BadWrite.

    Without it ``{"id": 42}`` and ``{"id": "42"}`` were two rows to the planner and one to
    PostgreSQL: one statement then lost an update or failed an upsert (SQLSTATE 21000).
    """
    if w.ops is None:
        try:
            return _row_in_form(w, schemas[w.table])
        except CastError as exc:
            return BadWrite(DeadReason.schema, exc.detail)
    ops = None
    for at, op in enumerate(w.ops):
        try:
            cast = _row_in_form(op, schemas[op.table])
        except CastError as exc:
            return BadWrite(DeadReason.schema, f"ops[{at}]: {exc.detail}")
        if cast is not op:
            if ops is None:
                ops = list(w.ops)
            ops[at] = cast
    return w if ops is None else _replace(w, ops=ops)


def _row_in_form(op, schema: TableSchema):
    cast = schema.casts.row(op.key, op.data)
    if cast is None:
        return op  # the common case: already in form, no copy
    key, data = cast
    if key is op.key and data is op.data:
        return op
    return _replace(op, key=key, data=data)


def _replace(w, **changes):
    """A copy of a decoded event or op (a msgspec Struct on the hot path, a pydantic model elsewhere)."""
    if isinstance(w, msgspec.Struct):
        return msgspec.structs.replace(w, **changes)
    return w.model_copy(update=changes)


def _precheck(w: WriteEvent, schemas: dict[str, TableSchema], barred: frozenset[str]) -> BadWrite | None:
    if w.ops is None:
        return _precheck_row(w, w.region, schemas, barred)
    for at, op in enumerate(w.ops):
        bad = _precheck_row(op, w.region, schemas, barred)
        if bad is not None:
            return BadWrite(bad.reason, f"ops[{at}]: {bad.detail}")
    return None


def _precheck_row(op, region: str, schemas: dict[str, TableSchema], barred: frozenset[str]) -> BadWrite | None:
    if op.table in barred:
        # data residency: never written here, so never required here either (decoding dead-letters
        # such a write for its home region; this is the same rule for any other way in)
        return BadWrite(DeadReason.schema, f"table {op.table!r} may not be stored in this region "
                                           f"(tables.{op.table}.allowed_regions)")
    schema = schemas.get(op.table)
    if schema is None:
        # allow-listed but absent in this database: the operator must create it; hold, don't drop
        raise RegionNotReady(f"allow-listed table {op.table!r} does not exist in region {region}")
    return check_columns(op, schema)


def _payload(schema: TableSchema, op: Op, cols: tuple[str, ...], rows: list[tuple[int, WriteEvent]]) -> list:
    return statement_params(schema, op, cols, [w.row() for _, w in rows])


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


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release RESET ALL round trip: we never change session state."""


#: pg_advisory_xact_lock key serialising the inbox DDL of every lane and service on one database.
INBOX_DDL_LOCK = 0x7267_0001


async def ensure_inbox(conn: asyncpg.Connection) -> None:
    """Create the inbox (and tombstones) if missing, one creator at a time.

    Two lanes or services starting together on a fresh database would otherwise race in
    ``CREATE TABLE IF NOT EXISTS`` and one would get a unique violation on PostgreSQL's
    catalog, which is not a constraint error of any write.

    When both exist nothing is created: ``CREATE TABLE IF NOT EXISTS`` needs ``CREATE`` on the
    schema even for a table that exists (SQLSTATE 42501), and a least-privilege role has none
    (``regionguard grants`` has the owner create them, docs/grants.md).
    """
    if await conn.fetchval(INBOX_EXISTS):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", INBOX_DDL_LOCK)
        await conn.execute(INBOX_DDL)


class RegionDB:
    """A region's pool plus what we learned about its schema."""

    def __init__(self, cfg: Config, region: str, *, dsn: str | None = None, pool_size: int | None = None):
        self.cfg, self.region = cfg, region
        self.dsn = dsn or cfg.regions[region].dsn
        self.pool_size = pool_size or cfg.router.pool_size
        self.pool: asyncpg.Pool | None = None
        self.schemas: dict[str, TableSchema] = {}
        #: PostgreSQL's readings of key values only it reads (core/spelling.py), for the planner
        self.spellings = Spellings()
        #: tables this region may not hold (data residency): never required, never written
        self.barred = frozenset(t for t in cfg.tables if not cfg.allowed_in(t, region))
        self.ready = False

    def __repr__(self) -> str:
        return f"RegionDB({self.region}@{dsn_host(self.dsn)})"

    async def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            self.pool = await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=self.pool_size,
                timeout=self.cfg.health.timeout_s * 5,
                command_timeout=self.cfg.router.statement_timeout_s,
                max_inactive_connection_lifetime=60,
                statement_cache_size=statement_cache_size(self.cfg, self.region),
                reset=_no_reset,
            )
        return self.pool

    async def prepare(self) -> None:
        """Create the inbox if missing and learn the allow-listed tables' columns."""
        pool = await self._pool()
        try:
            async with pool.acquire() as conn:
                await ensure_inbox(conn)
                self.schemas = await load_schemas(conn, self.cfg)
                self.spellings.forget()
        except RegionGuardError:
            raise
        except Exception as exc:  # noqa: BLE001
            err = classify_db_error(self.region, exc)
            if isinstance(err, PreparedStatementLost):
                await pool.expire_connections()  # their statement caches are stale: start afresh
            raise err from exc
        self.ready = True

    async def apply(self, writes: list[WriteEvent], *, source: str, want_rows: bool = False,
                    plan: Plan | None = None) -> ApplyResult:
        if not self.ready:
            await self.prepare()
        pool = await self._pool()
        try:
            conn = await pool.acquire()
        except Exception as exc:  # noqa: BLE001
            raise classify_db_error(self.region, exc) from exc
        try:
            return await apply_writes(conn, self.schemas, writes, source=source, region=self.region,
                                      want_rows=want_rows, plan=plan, barred=self.barred, spellings=self.spellings)
        except (RegionUnavailable, PreparedStatementLost, asyncio.CancelledError):
            try:
                # a half-dead or mid-query socket must not go back to the pool, nor one whose
                # statement cache names statements its pooler's session does not have
                conn.terminate()
            except asyncpg.InterfaceError:
                pass  # the connection was lost and the pool has already dropped it
            raise
        except RegionNotReady:
            self.ready = False  # learn the tables again next time: the operator may be creating one
            raise
        finally:
            await pool.release(conn)

    async def applied(self, write_ids: list[str]) -> set[str]:
        """The write ids among ``write_ids`` that the inbox says were applied here."""
        if not write_ids:
            return set()
        if not self.ready:
            await self.prepare()
        pool = await self._pool()
        try:
            async with pool.acquire() as conn:
                rows = await conn.fetch(INBOX_APPLIED, write_ids)
        except Exception as exc:  # noqa: BLE001
            raise classify_db_error(self.region, exc) from exc
        return {r[0] for r in rows}

    async def ping(self) -> None:
        """``SELECT 1`` with the health timeout; raises a typed error."""
        pool = await self._pool()
        try:
            async with asyncio.timeout(self.cfg.health.timeout_s * 3):
                async with pool.acquire() as conn:
                    await conn.execute("SELECT 1")
        except Exception as exc:  # noqa: BLE001
            raise classify_db_error(self.region, exc) from exc

    async def check_ready(self) -> None:
        """Replay readiness: reachable, a writable primary, inbox and the tables it may hold present.

        A table outside the region's ``allowed_regions`` is usually absent there, and no write of it
        ever applies there: requiring it would keep the region's held backlog from ever replaying.
        """
        pool = await self._pool()
        try:
            async with pool.acquire() as conn:
                if await conn.fetchval("SELECT pg_is_in_recovery()"):
                    raise RegionNotReady(f"region {self.region} is in recovery (a standby)")
                if await conn.fetchval("SHOW transaction_read_only") == "on":
                    raise RegionNotReady(f"region {self.region} is read-only")
                await ensure_inbox(conn)
                self.schemas = await load_schemas(conn, self.cfg)
                self.spellings.forget()
                missing = [t for t in self.cfg.tables if t not in self.schemas and t not in self.barred]
                if missing:
                    raise RegionNotReady(f"region {self.region} lacks allow-listed table {missing[0]!r}")
        except RegionGuardError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise classify_db_error(self.region, exc) from exc
        self.ready = True

    async def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            try:
                pool.terminate()
            except Exception:  # noqa: BLE001
                pass


async def load_schemas(conn: asyncpg.Connection, cfg: Config) -> dict[str, TableSchema]:
    out: dict[str, TableSchema] = {}
    for name, t in cfg.tables.items():
        rows = await conn.fetch(COLUMNS_QUERY, name)
        if not rows:
            continue
        types = {r["column_name"]: r["data_type"] for r in rows}
        bases = {r["column_name"]: r["base_type"] for r in rows if r["base_type"] and r["base_type"] != r["data_type"]}
        allowed = set(types) if t.columns is None else set(t.columns) & set(types)
        out[name] = TableSchema(name=name, key=t.key, version=t.version, columns=frozenset(allowed), types=types,
                                bases=bases)
    return out


__all__ = ["ApplyResult", "RegionDB", "apply_writes", "load_schemas", "INBOX_TABLE"]
