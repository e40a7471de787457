"""Planning a batch of writes into statements: pure, no I/O.

The router plans the next batch while the current one applies (core/batch.py), so all
that needs no database lives here: rows brought to their columns' form (core/cast.py,
core/spelling.py), values PostgreSQL would refuse found first (core/refuse.py), writes
ordered into levels per row, group and ordering key, and one statement per shape within
a level. :mod:`.apply` runs a :class:`Plan`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import msgspec

from .cast import CastError
from .errors import BadWrite, RegionNotReady
from .models import DeadReason, Op, WriteEvent, row_ops
from .refuse import refusal, suspect_columns
from .spelling import Spelled, identity
from .spelling import refusal as spelling_refusal
from .sql import TableSchema, build_statement, statement_params
from .writes import check_columns


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


def _columns(op, schemas) -> tuple[str, ...]:
    """The columns of the statement that applies ``op`` alone."""
    _table, _op, key_cols, data_cols = _shape(op, schemas)
    return tuple(sorted({*key_cols, *data_cols}))


def _statement(schema: TableSchema, op: Op, cols, want_rows: bool = False) -> str:
    return build_statement(schema, op, cols, returning=want_rows)


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
