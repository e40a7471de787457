"""Delete tombstones in the batched statements (pure, no I/O); behaviour on PostgreSQL: test_apply_order.py."""

from __future__ import annotations

from regionguard.core.models import Op
from regionguard.core.sql import (INBOX_DDL, TOMBSTONE_TABLE, TableSchema, build_statement, statement_params,
                                  uses_tombstones)

USERS = TableSchema("users", ("id",), "version", frozenset({"id", "name", "version"}),
                    {"id": "bigint", "name": "text", "version": "bigint"})
PAIRS = TableSchema("pairs", ("a", "b"), "ts", frozenset({"a", "b", "ts", "x"}),
                    {"a": "text", "b": "integer", "ts": "timestamp with time zone", "x": "text"})
ORDERS = TableSchema("orders", ("id",), None, frozenset({"id", "amount"}), {"id": "bigint", "amount": "numeric"})
FULL = ("id", "name", "version")


def test_tombstones_are_created_with_the_inbox():
    assert f"CREATE TABLE IF NOT EXISTS {TOMBSTONE_TABLE}" in INBOX_DDL
    assert "PRIMARY KEY (table_name, key)" in INBOX_DDL


def test_only_versioned_inserts_upserts_and_deletes_use_tombstones():
    assert uses_tombstones(USERS, Op.upsert, FULL) and uses_tombstones(USERS, Op.insert, FULL)
    assert uses_tombstones(USERS, Op.delete, ("id", "version")) and uses_tombstones(USERS, Op.delete, ("id",))
    assert not uses_tombstones(USERS, Op.update, FULL)  # an existing row is always newer than its tombstone
    for op in Op:
        assert not uses_tombstones(ORDERS, op, ("id", "amount"))
        if op is not Op.update:
            assert TOMBSTONE_TABLE not in build_statement(ORDERS, op, ("id", "amount"))


def test_the_table_name_is_the_last_bind_parameter():
    rows = [{"id": 1, "name": "a", "version": 2}]
    assert statement_params(USERS, Op.upsert, FULL, rows) == ['["1"]', '["a"]', '["2"]', "users"]
    assert statement_params(USERS, Op.update, FULL, rows) == ['["1"]', '["a"]', '["2"]']
    assert statement_params(ORDERS, Op.delete, ("id",), [{"id": 1}]) == ['["1"]']
    for op, cols in ((Op.upsert, FULL), (Op.insert, FULL), (Op.delete, ("id", "version")), (Op.delete, ("id",))):
        sql = build_statement(USERS, op, cols)
        assert f"${len(cols) + 1}::text" in sql and f"${len(cols) + 2}" not in sql
        assert "'" not in sql  # still no literal in the SQL text


def test_older_or_equal_versions_than_the_tombstone_are_filtered_out_before_the_write():
    for op in (Op.upsert, Op.insert):
        sql = build_statement(USERS, op, FULL)
        assert (f'WHERE NOT EXISTS (SELECT 1 FROM {TOMBSTONE_TABLE} AS "_rg_d" WHERE "_rg_d"."table_name" = $4::text '
                f'AND "_rg_d"."key" = jsonb_build_array("_rg_s"."id") '
                f'AND "_rg_d"."version"::bigint >= "_rg_s"."version")') in sql
    # composite key in config order; the version compared in the column's own type
    sql = build_statement(PAIRS, Op.upsert, ("a", "b", "ts", "x"))
    assert 'jsonb_build_array("_rg_s"."a", "_rg_s"."b")' in sql
    assert '"_rg_d"."version"::timestamp with time zone >= "_rg_s"."ts"' in sql


def test_a_versioned_delete_records_its_version_even_without_a_row():
    sql = build_statement(USERS, Op.delete, ("id", "version"))
    assert sql.startswith('WITH "_rg_src" AS (SELECT')
    assert (f'INSERT INTO {TOMBSTONE_TABLE} ("table_name", "key", "version") SELECT $3::text, '
            f'jsonb_build_array("_rg_v"."id"), ("_rg_v"."version")::text FROM "_rg_src" AS "_rg_v"') in sql
    assert ('DO UPDATE SET "version" = GREATEST(regionguard_tombstones."version"::bigint, '
            'EXCLUDED."version"::bigint)::text, "deleted_at" = now()') in sql
    assert 'DELETE FROM "users" AS "_rg_t" USING "_rg_src" AS "_rg_r"' in sql  # its status counts deleted rows


def test_an_unversioned_delete_buries_the_deleted_rows_version():
    sql = build_statement(USERS, Op.delete, ("id",))
    assert sql.startswith('WITH "_rg_x" AS (DELETE FROM "users" AS "_rg_t" USING')
    assert 'RETURNING "_rg_t".*)' in sql and 'FROM "_rg_x" AS "_rg_v" WHERE "_rg_v"."version" IS NOT NULL' in sql
    assert sql.endswith('SELECT 1 FROM "_rg_x"')  # SELECT n: the deleted rows
    returning = build_statement(USERS, Op.delete, ("id",), returning=True)
    assert returning.endswith('SELECT to_jsonb("_rg_x".*) FROM "_rg_x"')
