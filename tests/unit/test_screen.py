"""The CHECK screen's statement (core/screen.py): built from the catalog's names and types, quoted (pure)."""

from __future__ import annotations

import pytest

from regionguard.core.screen import screen_statement
from regionguard.core.sql import TableSchema, UnsafeIdentifier


def _orders(**types) -> TableSchema:
    return TableSchema(name="orders", key=("id",), version=None, columns=frozenset({"id", "amount", "Status"}),
                       types={"id": "bigint", "amount": "numeric", "Status": "text", **types})


def test_only_false_is_a_violation_and_the_first_refusing_check_is_named():
    sql = screen_statement(_orders(), ("amount", "id"), ["(amount >= (0)::numeric)", "(id > 0)"])
    assert 'WHERE ((amount >= (0)::numeric)) IS FALSE OR ((id > 0)) IS FALSE' in sql  # NULL passes a CHECK
    assert "CASE WHEN ((amount >= (0)::numeric)) IS FALSE THEN 0 WHEN ((id > 0)) IS FALSE THEN 1 END" in sql
    # the values are cast as the apply statement casts them, one bind parameter per column, rows numbered
    assert '"_rg_u"."amount"::numeric AS "amount"' in sql and '"_rg_u"."id"::bigint AS "id"' in sql
    assert "json_array_elements_text($1::json), json_array_elements_text($2::json)" in sql
    assert 'WITH ORDINALITY AS "_rg_u"("amount", "id", "_rg_n")' in sql


def test_names_are_quoted_and_types_come_only_from_the_catalog():
    assert '"_rg_u"."Status"::text AS "Status"' in screen_statement(_orders(), ("Status",), ['("Status" <> \'\')'])
    with pytest.raises(UnsafeIdentifier):
        screen_statement(_orders(amount="numeric); DROP TABLE orders; --"), ("amount",), ["(amount > 0)"])
