"""``regionguard grants`` (services/ops/grants.py): the generated SQL, and what a missing grant is (issue 28).

Pure: the script is generated from a parsed config; no database.
"""

from __future__ import annotations

import asyncpg
import pytest

from regionguard.cli import main
from regionguard.core.config import UsageError, parse_config
from regionguard.core.errors import MissingPrivilege, classify_db_error
from regionguard.ops.grants import DEFAULT_ROLES, grant_statements, parse_roles

CFG = parse_config({
    "kafka": {"bootstrap": "x:1"},
    "regions": {"eu": {"dsn": "postgresql://svc:s3cret-pw@db-eu/app"},
                "us": {"dsn": "postgresql://svc:s3cret-pw@db-us/app"}},
    "tables": {"users": {"key": ["id"], "version": "version"}, "orders": {"key": ["id"], "allowed_regions": ["eu"]}},
})


def script(region: str = "eu", **kw) -> str:
    return "\n".join(grant_statements(CFG, region, DEFAULT_ROLES, **kw))


def grants_of(text: str, role: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("GRANT ") and line.endswith(f'"{role}";')]


def test_router_writes_the_tables_and_owns_the_inbox_housekeeping():
    g = grants_of(script(), "regionguard_router")
    assert g == [
        'GRANT USAGE ON SCHEMA "public" TO "regionguard_router";',
        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE "public"."users", "public"."orders" TO "regionguard_router";',
        'GRANT SELECT, INSERT, DELETE ON TABLE "public"."regionguard_applied" TO "regionguard_router";',
        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE "public"."regionguard_tombstones" TO "regionguard_router";',
    ]


def test_replayer_does_not_prune_tombstones_health_only_connects_reader_only_selects():
    text = script()
    assert grants_of(text, "regionguard_replayer")[-1] == \
        'GRANT SELECT, INSERT, UPDATE ON TABLE "public"."regionguard_tombstones" TO "regionguard_replayer";'
    assert grants_of(text, "regionguard_health") == []
    assert grants_of(text, "regionguard_reader") == [
        'GRANT USAGE ON SCHEMA "public" TO "regionguard_reader";',
        'GRANT SELECT ON TABLE "public"."users", "public"."orders" TO "regionguard_reader";',
        'GRANT SELECT ON TABLE "public"."regionguard_applied" TO "regionguard_reader";',
    ]
    connect = [line for line in text.splitlines() if "GRANT CONNECT ON DATABASE" in line]
    assert len(connect) == 1 and all(f'"{r}"' in connect[0] for r in DEFAULT_ROLES.values())
    assert "current_database()" in connect[0]


def test_a_table_a_region_may_not_hold_gets_no_grant_there():
    assert '"orders"' in script("eu") and '"orders"' not in script("us")


def test_the_owner_creates_the_inbox_first_and_roles_are_idempotent():
    lines = script().splitlines()
    first_grant = next(i for i, line in enumerate(lines) if line.startswith("GRANT "))
    assert any("CREATE TABLE IF NOT EXISTS regionguard_applied" in line for line in lines[:first_grant])
    assert any("CREATE TABLE IF NOT EXISTS regionguard_tombstones" in line for line in lines[:first_grant])
    assert sum("EXCEPTION WHEN duplicate_object" in line for line in lines) == 4


def test_identifiers_are_quoted_and_nothing_of_a_dsn_is_printed():
    text = script(schema="app", services=("router",))
    assert 'SET search_path TO "app";' in text and '"app"."users"' in text
    assert "s3cret" not in text and "db-eu" not in text and "svc" not in text
    assert "regionguard_reader" not in text


def test_roles_can_be_renamed_but_only_to_plain_identifiers():
    assert parse_roles(["router=app_router"])["router"] == "app_router"
    for bad in (["router=a;drop"], ["nobody=x"], ["router"], ['reader=x"y']):
        with pytest.raises(UsageError):
            parse_roles(bad)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka: {bootstrap: 'x:1'}\nregions: {eu: {dsn: 'postgresql://h/eu'}}\n"
                   "tables: {users: {key: [id]}}\n")
    assert main(["grants", "--config", str(cfg), "--region", "zz"]) == 2
    assert main(["grants", "--config", str(cfg), "--schema", "a b"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("regionguard grants: ") for line in err)
    assert main(["grants", "--config", str(cfg), "--service", "router"]) == 0
    assert '"regionguard_router"' in capsys.readouterr().out


def test_a_missing_privilege_is_retried_never_a_rows_dead_letter():
    exc = asyncpg.exceptions.InsufficientPrivilegeError("permission denied for table users")
    err = classify_db_error("eu", exc)
    assert isinstance(err, MissingPrivilege) and err.retriable and err.kind == "insufficient_privilege"
