"""DSN redaction covers every secret parameter; a DSN without sslmode is warned about."""

from __future__ import annotations

import pytest

from regionguard.core.config import parse_config
from regionguard.core.dsn import dsn_sslmode, redact_dsn, tls_warnings


@pytest.mark.parametrize("dsn, secret", [
    ("postgresql://app:pw1@h/db", "pw1"),
    ("postgresql://app@h/db?password=pw2&sslmode=require", "pw2"),
    ("postgresql://app@h/db?sslmode=verify-full&sslpassword=keypw3", "keypw3"),
    ("postgresql://app@h/db?sslmode=verify-full&SSLPassword=keypw4#frag", "keypw4"),
    ("host=h user=app password=pw5 dbname=db", "pw5"),
    ("host=h sslpassword='key pw6' dbname=db", "key pw6"),
    ("host=h password = pw7", "pw7"),
])
def test_every_secret_dsn_parameter_is_redacted(dsn, secret):
    out = redact_dsn(f"cannot connect to {dsn}: refused")
    assert secret not in out and "***" in out


def test_redaction_keeps_the_rest_of_a_query_string():
    assert redact_dsn("postgresql://a@h/db?password=x&sslmode=require") == \
        "postgresql://a@h/db?password=***&sslmode=require"


@pytest.mark.parametrize("dsn, mode", [
    ("postgresql://a@h/db", None),
    ("postgresql://a@h/db?sslmode=disable", "disable"),
    ("postgresql://a@h/db?connect_timeout=3&sslmode=verify-full", "verify-full"),
    ("host=h sslmode=require", "require"),
    ("host=h sslmode='verify-ca'", "verify-ca"),
    ("postgresql://a@h/db?notsslmode=require", None),
])
def test_sslmode_of_a_dsn(dsn, mode):
    assert dsn_sslmode(dsn) == mode


def _cfg(eu_dsn, replicas=()):
    return parse_config({"regions": {"eu": {"dsn": eu_dsn, "read_replicas": list(replicas)},
                                     "us": {"dsn": "postgresql://a@us-db/db?sslmode=verify-full"}},
                         "tables": {"t": {"key": ["id"]}}})


def test_a_dsn_without_sslmode_gets_one_line_naming_the_region_not_the_password():
    lines = tls_warnings(_cfg("postgresql://a:pw9@eu-db:5432/db").regions, environ={})
    assert len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith("regions.eu.dsn (eu-db:5432) sets no sslmode") and "pw9" not in lines[0]


def test_explicit_sslmode_even_disable_or_pgsslmode_silences_the_warning():
    assert tls_warnings(_cfg("postgresql://a@eu-db/db?sslmode=disable").regions, environ={}) == []
    assert tls_warnings(_cfg("postgresql://a@eu-db/db").regions, environ={"PGSSLMODE": "require"}) == []


def test_read_replicas_are_checked_too():
    lines = tls_warnings(_cfg("postgresql://a@eu-db/db?sslmode=require", ["postgresql://a@eu-r1/db"]).regions,
                         environ={})
    assert [ln.split(" ")[0] for ln in lines] == ["regions.eu.read_replicas[0]"]
