"""Prepared-statement errors from a pooler are about the connection, never a row (docs/poolers.md).

Behind PgBouncer in transaction mode (or RDS Proxy) with asyncpg's statement cache on, a cached
statement is missing in the server session the pooler hands out (SQLSTATE 26000) or its name is
another client's (42P05). Before, both fell through to ``PoisonWrite`` and good writes were
dead-lettered as ``poison``; tests/integration/test_poolers.py shows it with a real PgBouncer.
"""

from __future__ import annotations

import asyncpg
import pytest

from regionguard.core.errors import (
    BadWrite, PoisonWrite, PreparedStatementLost, TransientDBError, classify_db_error,
)

POOLER_ERRORS = [
    asyncpg.exceptions.InvalidSQLStatementNameError('prepared statement "__asyncpg_stmt_7__" does not exist'),
    asyncpg.exceptions.DuplicatePreparedStatementError('prepared statement "__asyncpg_stmt_1__" already exists'),
]


@pytest.mark.parametrize("exc", POOLER_ERRORS, ids=lambda e: type(e).__name__)
def test_a_pooler_losing_prepared_statements_is_retried_not_dead_lettered(exc):
    err = classify_db_error("eu", exc)
    assert isinstance(err, PreparedStatementLost) and isinstance(err, TransientDBError)
    assert err.retriable and not isinstance(err, (BadWrite, PoisonWrite))
    assert err.kind == "prepared_statement" and err.region == "eu"  # the metric's label


@pytest.mark.parametrize("exc", POOLER_ERRORS, ids=lambda e: type(e).__name__)
def test_the_decision_is_the_sqlstate_not_the_message(exc):
    exc.args = ("a message that says nothing about statements",)
    assert isinstance(classify_db_error("eu", exc), PreparedStatementLost)


def test_its_message_names_the_error_type_and_no_value():
    err = classify_db_error("eu", POOLER_ERRORS[0])
    assert "InvalidSQLStatementNameError" in str(err) and "__asyncpg_stmt" not in str(err)


def test_a_trigger_raise_is_still_a_rows_poison():
    exc = asyncpg.exceptions.RaiseError("rejected by trigger")
    assert isinstance(classify_db_error("eu", exc), PoisonWrite)
