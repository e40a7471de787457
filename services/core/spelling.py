"""Keys only PostgreSQL can read: ask it, once per batch, how it reads them.

:mod:`.cast` brings a key to its column's form where Python has an exact rule
(integers, uuid, text, ISO dates and times...). Everything else, a ``citext``
key, an enum, ``inet``, a date spelled "Jan 2 2026" or "2026-002", a
timestamp without an offset for a ``timestamptz`` column, is read by
PostgreSQL alone; and two spellings of one row planned as two rows lose an
``update`` or fail an upsert with SQLSTATE 21000 (issue 25). So before a batch
is planned, the key values no rule reads are sent to the region's database in
one query (``unnest`` of their texts, each cast to its column's base type)
and its answer is their identity: the value's JSON text (``to_json``, ISO for
dates and times whatever the DateStyle), brought to the form of our own rule
for that type (:func:`.cast.canonical`), ``lower()`` of it for ``citext``
(whose equality ignores case), of ``justify_interval()`` for an interval
(whose equality compares spans: "1 day" and "24 hours" are one key). Only the planner uses that identity: the
statements send every value as it came, so a ``citext`` key keeps its case and
PostgreSQL reads each spelling as it always did.

A value PostgreSQL refuses fails the query; the texts are then asked in
halves until each refused one stands alone, and its write is a ``schema``
dead letter naming the column, before any statement. Readings are kept in a
bounded map per region (a type's reading of a text does not change while the
schema stays; the map is emptied when the schema is read again), so repeated
keys cost no round trip and a batch with no such key costs a dict look-up per
key value of the tables that have one. Refusals are not kept: an enum may
gain a label.

Written by hand: which keys need asking and what their identity is are our
rules. The bounded map is a dict in insertion order (the oldest readings go
first), a few lines where a cache library would be one more dependency.
"""

from __future__ import annotations

from typing import Any

from .cast import canonical, refused
from .errors import BadWrite, PoisonWrite, classify_db_error
from .models import row_ops
from .sql import TableSchema, checked_type, value_text

#: readings kept per region: a few batches' worth of distinct keys
KEPT = 10_000

Spelled = dict[tuple[str, str], Any]  # (base type, text) -> canonical text, or a Refusal


class Refusal:
    """PostgreSQL refused a text for its type: ``why`` is its SQLSTATE."""

    __slots__ = ("why",)

    def __init__(self, why: str):
        self.why = why


class Spellings:
    """One region's readings of the key values only PostgreSQL reads."""

    def __init__(self, kept: int = KEPT):
        self.kept = kept
        self._read: dict[tuple[str, str], str] = {}

    def forget(self) -> None:
        """The schema is read again: a column's type may have changed."""
        self._read.clear()

    def known(self, schemas: dict[str, TableSchema], writes: list) -> Spelled | None:
        """The readings ``writes`` need, from memory only; None when one must be asked (plan ahead)."""
        spelled, missing = self._wanted(schemas, writes)
        return None if missing else spelled

    async def learn(self, conn, schemas: dict[str, TableSchema], writes: list) -> Spelled:
        """The readings ``writes`` need, asking PostgreSQL on ``conn`` (one query) for those not known."""
        spelled, missing = self._wanted(schemas, writes)
        if missing:
            answers = await _ask(conn, sorted(missing))
            spelled.update(answers)
            for k, got in answers.items():
                if got.__class__ is str:
                    self._remember(k, got)
        return spelled

    def _remember(self, k: tuple[str, str], got: str) -> None:
        read = self._read
        read[k] = got
        while len(read) > self.kept:
            del read[next(iter(read))]

    def _wanted(self, schemas: dict[str, TableSchema], writes: list) -> tuple[Spelled, set]:
        spelled: Spelled = {}
        missing: set[tuple[str, str]] = set()
        if not any(s.casts.asks for s in schemas.values()):
            return spelled, missing  # the common case: no table has such a key
        read = self._read
        for w in writes:
            for op in row_ops(w):
                schema = schemas.get(op.table)
                if schema is None or not schema.casts.asks or not op.key:
                    continue
                for c, t, v in schema.casts.asked(op.key):
                    try:
                        k = (t, value_text(schema.types.get(c, t), v))
                    except Exception:  # noqa: BLE001 - no text for it: planning meets it and isolates it
                        continue
                    got = read.get(k)
                    if got is None:
                        missing.add(k)
                    else:
                        spelled[k] = got
        return spelled, missing


def refusal(key: dict, schema: TableSchema, spelled: Spelled) -> str | None:
    """The ``schema`` dead letter's detail when PostgreSQL refused a value of ``key``, else None.

    Raises LookupError for a value whose reading was not learned (a bug: the write is then isolated).
    """
    for c, t, v in schema.casts.asked(key):
        got = spelled[(t, value_text(schema.types.get(c, t), v))]
        if got.__class__ is Refusal:
            return refused(c, schema.types.get(c, t), v, got.why)
    return None


def identity(key: dict, schema: TableSchema, spelled: Spelled) -> dict:
    """``key`` with each value only PostgreSQL reads replaced by its reading: the row it names, for the planner."""
    out = key
    for c, t, v in schema.casts.asked(key):
        got = spelled.get((t, value_text(schema.types.get(c, t), v)))
        if got.__class__ is str and got != v:
            if out is key:
                out = dict(key)
            out[c] = got
    return out


def _is_citext(t: str) -> bool:
    return t.rsplit(".", 1)[-1].strip('"') == "citext"


def _reading(t: str, k: int) -> str:
    """The SQL that reads text ``u.t`` as base type ``t`` (from the catalog, checked, never from events)."""
    cast = f"u.t::{checked_type(t, 'a key column')}"
    if _is_citext(t):
        return f"WHEN {k} THEN lower({cast}::text)"  # citext's equality: lower() of both sides
    if t == "interval":  # the base type, as format_type(oid, NULL) spells it: no fields, no precision
        # interval equality compares spans (a month is 30 days, a day 24 hours): '1 day' = '24 hours'.
        # justify_interval writes each span one way (hours under a day, days under a month, one sign)
        return f"WHEN {k} THEN to_json(justify_interval({cast})) #>> '{{}}'"
    return f"WHEN {k} THEN to_json({cast}) #>> '{{}}'"


async def _ask(conn, pairs: list[tuple[str, str]]) -> Spelled:
    """PostgreSQL's reading of each (base type, text); a refused text alone in its query is a Refusal."""
    types = sorted({t for t, _ in pairs})
    kind = {t: k for k, t in enumerate(types)}
    query = ("SELECT u.k, u.t, CASE u.k " + " ".join(_reading(t, kind[t]) for t in types) + " END "
             "FROM unnest($1::int[], $2::text[]) AS u(k, t)")
    try:
        rows = await conn.fetch(query, [kind[t] for t, _ in pairs], [x for _, x in pairs])
    except Exception as exc:  # noqa: BLE001 - classified by type below
        err = classify_db_error("", exc)
        if err.retriable or not isinstance(err, (BadWrite, PoisonWrite)):
            raise
        if len(pairs) == 1:
            return {pairs[0]: Refusal(f"SQLSTATE {getattr(exc, 'sqlstate', None) or type(exc).__name__}")}
        mid = len(pairs) // 2
        return {**await _ask(conn, pairs[:mid]), **await _ask(conn, pairs[mid:])}
    return {(types[k], x): canonical(types[k], got) if got is not None else x for k, x, got in rows}
