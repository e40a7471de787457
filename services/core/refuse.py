"""Values PostgreSQL would refuse, found before it sees them (pure, no I/O).

One row PostgreSQL refuses fails its whole statement, and a batch is a few
statements of up to 1,000 rows: the batch then takes the careful path (a
savepoint per statement, the bad rows isolated), which the fuzzer measured at
about 5 s for a 1,000-row batch, a partition stalled for 8.9 s (issue 25).
Two kinds of refusal are cheap to know beforehand, and each such write
becomes its own ``schema`` dead letter naming the column:

- a NUL character (``\\u0000``) in a value of any column but a ``json`` one:
  PostgreSQL's text cannot hold it (SQLSTATE 22P05), whether in a text
  column, inside a jsonb document or on its way to any other type (every
  value travels as text, core/sql.py). ``json`` keeps its input text and
  takes it;
- an integer out of its column's range (22003): :mod:`.cast` lets an int
  through an integer column without a call, to keep the common case cheap.

Finding them must not cost the common case a call per value. The statement
parameters are already JSON text, one per column (:func:`.sql.statement_params`):
a NUL shows there as the six characters ``\\u0000``, and an out-of-range
integer as a run of digits at least as long as the range's bound. So each
column's parameter is scanned once (C speed, microseconds per batch), and
only a column that shows either is looked at row by row; a false alarm (the
six characters written out, a long but valid number) costs that look only.

Written by hand: which column types refuse what, and how the dead letter
names it, are our rules.
"""

from __future__ import annotations

import re
from typing import Any

from .sql import TableSchema

#: how a NUL character is spelled in JSON text (orjson writes it so, and so does any encoder)
_NUL_JSON = "\\u0000"
_NUL = "\x00"

#: integer type -> (lowest, highest, a run of digits that the text of any value out of range holds)
_INTEGERS: dict[str, tuple[int, int, re.Pattern[str]]] = {
    # anchored on the opening quote of each text (core/sql.py column_arrays gives an int as str(v)):
    # a bare [0-9]{n} tries every position and measured six times slower
    t: (-(1 << (bits - 1)), (1 << (bits - 1)) - 1, re.compile('"-?[0-9]{%d}' % len(str(1 << (bits - 1)))))
    for t, bits in (("smallint", 16), ("integer", 32), ("bigint", 64))
}


def suspect_columns(schema: TableSchema, columns: tuple[str, ...], params: list) -> list[str]:
    """The columns of a statement whose parameter text may hold a value PostgreSQL refuses.

    ``params`` are :func:`.sql.statement_params` of ``columns``, in order (a trailing table name is
    ignored).
    """
    out = []
    types = schema.bases  # a domain's values follow its base type's rules
    for c, text in zip(columns, params):
        t = types.get(c, "text")
        if _NUL_JSON in text and t != "json":
            out.append(c)
            continue
        bounds = _INTEGERS.get(t)
        if bounds is not None and bounds[2].search(text):
            out.append(c)
    return out


def refusal(schema: TableSchema, column: str, value: Any) -> str | None:
    """Why PostgreSQL would refuse ``value`` in ``column`` (the dead letter's detail), or None."""
    t = schema.bases.get(column, "text")
    bounds = _INTEGERS.get(t)
    if bounds is not None and value.__class__ is int and not bounds[0] <= value <= bounds[1]:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return f"column {column!r} ({t}): cannot cast {shown} (out of range)"  # core/cast.py's wording
    if t != "json" and holds_nul(value):
        return f"column {column!r} ({t}): a NUL character (\\u0000), which PostgreSQL cannot store"
    return None


def holds_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character in any string, object keys included.

    A loop over a stack, not recursion: a document may be nested a thousand levels deep.
    """
    todo = [value]
    while todo:
        v = todo.pop()
        cls = v.__class__
        if cls is str:
            if _NUL in v:
                return True
        elif cls is dict:
            for k, x in v.items():
                if _NUL in k:
                    return True
                todo.append(x)
        elif cls is list or cls is tuple:
            todo.extend(v)
    return False
