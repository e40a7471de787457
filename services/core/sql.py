"""SQL building for batched, idempotent, order-safe applies.

Written by hand because it is specific to us: identifiers come only from the
config's allow-list (checked again here) and are always quoted; values are
always bind parameters, passed as one JSON document and expanded server-side
with ``jsonb_populate_recordset`` so a batch of N rows costs one statement and
PostgreSQL does the type conversion (a bad value is a data error we can
isolate, never an injection).

Every statement takes ``$1`` = a JSON array of row objects whose keys are
exactly ``columns``; its command status (``INSERT 0 n``, ``UPDATE n``...)
counts the rows it changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .models import Op

INBOX_TABLE = "regionguard_applied"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


class UnsafeIdentifier(ValueError):
    pass


def quote_ident(name: str) -> str:
    """Quote an identifier that the allow-list already accepted.

    Refuses anything that is not a plain identifier, so even a bug upstream
    cannot turn a name into SQL.
    """
    if not isinstance(name, str) or not _IDENT.match(name):
        raise UnsafeIdentifier(f"refusing identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class TableSchema:
    """An allow-listed table as it exists in one region's database."""

    name: str
    key: tuple[str, ...]
    version: str | None
    columns: frozenset[str]
    types: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def check_columns(self, names) -> str | None:
        """Return the first name that is not an allowed column, else None."""
        for n in names:
            if n not in self.columns:
                return n
        return None


INBOX_DDL = f"""
CREATE TABLE IF NOT EXISTS {INBOX_TABLE} (
    write_id   uuid PRIMARY KEY,
    tbl        text NOT NULL,
    source     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

INBOX_CLAIM = f"""
INSERT INTO {INBOX_TABLE} (write_id, tbl, source)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[])
ON CONFLICT (write_id) DO NOTHING
RETURNING write_id
"""

INBOX_RELEASE = f"DELETE FROM {INBOX_TABLE} WHERE write_id = ANY($1::uuid[])"

COLUMNS_QUERY = """
SELECT c.column_name, c.data_type
FROM information_schema.columns c
WHERE c.table_schema = current_schema() AND c.table_name = $1
ORDER BY c.ordinal_position
"""


def _cols(names) -> str:
    return ", ".join(quote_ident(c) for c in names)


def _key_match(t: str, r: str, key) -> str:
    return " AND ".join(f"{t}.{quote_ident(k)} = {r}.{quote_ident(k)}" for k in key)


def build_statement(table: TableSchema, op: Op, columns: tuple[str, ...], *, returning: bool = False) -> str:
    """One batched statement for ``op`` on rows that all carry ``columns``.

    Versioned tables converge by last-writer-wins: upsert and update change a
    row only when the incoming version is greater, so replays and sync-back in
    any order end at the highest version. A skipped row is *stale*, not an
    error: callers count rows in minus rows returned.
    """
    bad = table.check_columns(columns)
    if bad is not None:
        raise UnsafeIdentifier(f"column {bad!r} is not allowed for table {table.name!r}")
    for k in table.key:
        if k not in columns:
            raise UnsafeIdentifier(f"key column {k!r} missing")
    tbl = quote_ident(table.name)
    src = f"jsonb_populate_recordset(NULL::{tbl}, $1::jsonb)"
    t, r = '"_rg_t"', '"_rg_r"'
    # the changed rows, whole, for the Redis write-through (only when asked: it costs)
    ret_ins = f" RETURNING to_jsonb({tbl}.*)" if returning else ""
    ret_upd = f" RETURNING to_jsonb({t}.*)" if returning else ""
    ver = quote_ident(table.version) if table.version else None
    non_key = [c for c in columns if c not in table.key]

    if op is Op.insert:
        return f"INSERT INTO {tbl} ({_cols(columns)}) SELECT {_cols(columns)} FROM {src}{ret_ins}"

    if op is Op.upsert:
        conflict = f"ON CONFLICT ({_cols(table.key)})"
        if not non_key:
            return f"INSERT INTO {tbl} ({_cols(columns)}) SELECT {_cols(columns)} FROM {src} {conflict} DO NOTHING{ret_ins}"
        sets = ", ".join(f"{quote_ident(c)} = EXCLUDED.{quote_ident(c)}" for c in non_key)
        where = f" WHERE {tbl}.{ver} IS NULL OR {tbl}.{ver} < EXCLUDED.{ver}" if ver else ""
        return (
            f"INSERT INTO {tbl} ({_cols(columns)}) SELECT {_cols(columns)} FROM {src} "
            f"{conflict} DO UPDATE SET {sets}{where}{ret_ins}"
        )

    if op is Op.update:
        if not non_key:
            raise UnsafeIdentifier("update needs at least one non-key column")
        sets = ", ".join(f"{quote_ident(c)} = {r}.{quote_ident(c)}" for c in non_key)
        where = _key_match(t, r, table.key)
        if ver:
            where += f" AND ({t}.{ver} IS NULL OR {t}.{ver} < {r}.{ver})"
        return f"UPDATE {tbl} AS {t} SET {sets} FROM {src} AS {r} WHERE {where}{ret_upd}"

    if op is Op.delete:
        where = _key_match(t, r, table.key)
        if ver and ver.strip('"') in columns:
            # a versioned delete only removes a row no newer than itself
            where += f" AND ({r}.{ver} IS NULL OR {t}.{ver} IS NULL OR {t}.{ver} <= {r}.{ver})"
        return f"DELETE FROM {tbl} AS {t} USING {src} AS {r} WHERE {where}{ret_upd}"

    raise ValueError(f"unknown op {op!r}")
