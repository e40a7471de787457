"""Every kind of value a write's JSON can carry lands in PostgreSQL as sent, in columns of many types.

The router and the replayer send a batch's values as text, one JSON array per
column, and PostgreSQL casts them to each column's catalog type
(:mod:`regionguard.core.sql`). This applies one batch through
:func:`regionguard.core.db.apply_writes` (what both run) and reads the rows
back: quotes, backslashes, control characters, the string ``"NULL"``, empty
strings and arrays, NULL array elements, big numbers, JSON strings in a jsonb
column. A value its column refuses is that row's dead letter; the others apply.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import asyncpg

from regionguard.core.config import parse_config
from regionguard.core.db import apply_writes, load_schemas
from regionguard.core.models import DeadReason, Op, WriteEvent
from regionguard.core.sql import INBOX_DDL

CFG = parse_config({"regions": {"eu": {"dsn": "postgresql://unused@h/db"}}, "tables": {"kinds": {"key": ["id"]}}})
DDL = ("CREATE TABLE kinds (id bigint PRIMARY KEY, t text, b boolean, f double precision, n numeric, j jsonb, "
       "tags text[], at timestamptz, u uuid, short varchar(3))")
U = "7d4ab2a4-52d5-4a36-9d6f-4d3c43d7d0a7"

ROWS = {
    1: {"t": 'a "quote", a \\ backslash,\na newline, a \t tab', "b": True, "f": 1.5,
        "n": 123456789012345678901234567890, "j": {"k": [1, "x", None, True]}, "tags": ['a"b', None, "c\\d", ""],
        "at": "2026-11-29T20:00:00+00:00", "u": U, "short": "abc"},
    2: {"t": "", "b": False, "f": 1e-7, "n": 0.1, "j": "just a string", "tags": [], "at": None, "u": None,
        "short": None},
    3: {"t": "ünïcødé 😀 ∑ '; DROP TABLE kinds; --", "b": None, "f": None, "n": None, "j": [1, 2], "tags": None},
    4: {"t": "NULL", "j": None, "tags": ["NULL", "{}", ","], "f": -2.0, "n": -7},
}


def test_every_kind_of_value_arrives_as_sent_and_a_refused_one_is_its_rows_dead_letter(regions):
    lr = regions(["eu"], schema=None)

    async def run():
        conn = await asyncpg.connect(lr.direct_dsn("eu"))
        try:
            await conn.execute(DDL)
            await conn.execute(INBOX_DDL)
            schemas = await load_schemas(conn, CFG)
            writes = [WriteEvent(id=uuid.uuid4(), region="eu", table="kinds", op=Op.upsert, key={"id": k}, data=d)
                      for k, d in ROWS.items()]
            too_long = WriteEvent(id=uuid.uuid4(), region="eu", table="kinds", op=Op.upsert, key={"id": 5},
                                  data={"short": "abcd"})
            res = await apply_writes(conn, schemas, writes[:2] + [too_long] + writes[2:], source="test", region="eu")
            return res, await conn.fetch("SELECT * FROM kinds ORDER BY id")
        finally:
            await conn.close()

    res, rows = asyncio.run(run())
    assert [(i, e.reason) for i, e in res.failed] == [(2, DeadReason.schema)]
    assert "value too long for type character varying(3)" in str(res.failed[0][1])
    assert res.applied == 4
    got = {r["id"]: dict(r) for r in rows}
    assert sorted(got) == [1, 2, 3, 4]
    one, two, three, four = got[1], got[2], got[3], got[4]
    assert one["t"] == ROWS[1]["t"] and one["b"] is True and one["f"] == 1.5
    assert one["n"] == Decimal("123456789012345678901234567890")
    assert json.loads(one["j"]) == {"k": [1, "x", None, True]}
    assert one["tags"] == ['a"b', None, "c\\d", ""]
    assert one["at"] == datetime(2026, 11, 29, 20, 0, tzinfo=timezone.utc)
    assert str(one["u"]) == U and one["short"] == "abc"
    assert two["t"] == "" and two["b"] is False and two["f"] == 1e-7 and two["n"] == Decimal("0.1")
    assert json.loads(two["j"]) == "just a string" and two["tags"] == []
    assert two["at"] is None and two["u"] is None and two["short"] is None
    assert three["t"] == ROWS[3]["t"] and three["b"] is None and three["f"] is None and three["n"] is None
    assert json.loads(three["j"]) == [1, 2] and three["tags"] is None
    assert four["t"] == "NULL" and four["j"] is None and four["tags"] == ["NULL", "{}", ","]
    assert four["f"] == -2.0 and four["n"] == Decimal(-7)
