"""The rows of a failed batch that a table's CHECK constraints refuse, found in one statement a shape.

A batch whose fast path fails on a row is redone in halves (core/apply.py ``_bisect``): about
fifteen statements for one bad row among 1,000, but where bad rows are dense (a producer
sending out-of-range quantities, the fuzzer's 14% in one phase) nearly every row ends up alone
and a batch of 150 took 7-13 s on a loaded machine while its partitions stood still (issue 25).
CHECK violations are the common case there, and PostgreSQL can tell us all of them at once:
each constraint's expression (``pg_get_expr`` of the catalog, the database's own definition,
never anything from an event) evaluated over the batch's rows, cast to the columns' types
exactly as the apply statement casts them::

    SELECT n, CASE WHEN (e0) IS FALSE THEN 0 WHEN (e1) IS FALSE THEN 1 END
    FROM (SELECT "_rg_u"."qty"::integer AS "qty", ..., "_rg_u"."_rg_n"
          FROM ROWS FROM (json_array_elements_text($1::json), ...) WITH ORDINALITY AS "_rg_u"(...)) AS "_rg_s"
    WHERE (e0) IS FALSE OR (e1) IS FALSE

A CHECK passes on TRUE or NULL, so only ``IS FALSE`` is a violation. Only insert and upsert
rows are screened (PostgreSQL checks the proposed row before any conflict, so such a row can
never apply), and only constraints whose columns the statement sets (a column it leaves out
takes its default or keeps its value, which we don't see). A screened row is not dead-lettered
here: the caller applies the rest as one piece and tries each screened row alone, so what
happens to every row is still PostgreSQL's answer, only found with far fewer round trips.
Anything that goes wrong while screening (a value that doesn't cast, an expression that
doesn't evaluate outside its table) gives up the screen, never the batch: it runs outside the
batch's transaction and the caller falls back to halving.
"""

from __future__ import annotations

import logging

import asyncpg

from .models import Op
from .sql import TableSchema, cast_type, quote_ident

log = logging.getLogger(__name__)

CHECKS_QUERY = """
SELECT pg_get_expr(con.conbin, con.conrelid) AS expr,
       array(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey)) AS cols
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname = $1 AND con.contype = 'c'
ORDER BY con.conname
"""

#: the ops whose rows can be screened (see the docstring)
SCREENED_OPS = (Op.insert, Op.upsert)


def screen_statement(table: TableSchema, columns: tuple[str, ...], checks: list[str]) -> str:
    """The SELECT that returns (1-based row number, index of the first refusing check) of refused rows."""
    u = '"_rg_u"'
    casts = ", ".join(f"{u}.{quote_ident(c)}::{cast_type(table, c)} AS {quote_ident(c)}" for c in columns)
    params = ", ".join(f"json_array_elements_text(${i + 1}::json)" for i in range(len(columns)))
    names = ", ".join([*(quote_ident(c) for c in columns), '"_rg_n"'])
    which = " ".join(f"WHEN ({e}) IS FALSE THEN {k}" for k, e in enumerate(checks))
    refused = " OR ".join(f"({e}) IS FALSE" for e in checks)
    return (f'SELECT "_rg_s"."_rg_n", CASE {which} END FROM (SELECT {casts}, {u}."_rg_n" '
            f"FROM ROWS FROM ({params}) WITH ORDINALITY AS {u}({names})) AS \"_rg_s\" WHERE {refused}")


async def refused_by_checks(conn: asyncpg.Connection, steps) -> set[int]:
    """Batch indexes of the rows some CHECK constraint refuses; empty if none, or if screening failed.

    ``steps`` are a plan's (rows, schema, op, columns, statement, parameters), rows being
    (batch index, row op) pairs. Must run outside a transaction: an error here is ours to drop.
    """
    checks: dict[str, list[tuple[str, frozenset[str]]]] = {}
    refused: set[int] = set()
    try:
        for rows, schema, op, cols, _stmt, params in steps:
            if op not in SCREENED_OPS:
                continue
            if schema.name not in checks:
                checks[schema.name] = [(r["expr"], frozenset(r["cols"]))
                                       for r in await conn.fetch(CHECKS_QUERY, schema.name)]
            usable = [expr for expr, need in checks[schema.name] if need and need <= set(cols)]
            if not usable:
                continue
            for n, _which in await conn.fetch(screen_statement(schema, cols, usable), *params[:len(cols)]):
                refused.add(rows[n - 1][0])
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # a value that doesn't cast, an expression that needs its table: halving still finds the rows
        log.info("screening the batch's CHECK constraints gave up (%s); isolating by halves", type(exc).__name__)
        return set()
    return refused
