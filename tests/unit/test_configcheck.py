"""``regionguard config check`` offline: every problem on its own line, exit 0 or 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from regionguard.ops.configcheck import dsn_problem, offline


@pytest.mark.parametrize("dsn, problem", [
    ("postgresql://a:pw@h:5432/db?sslmode=verify-full", None),
    ("postgres://a@h1:5432,h2:5433/db", None),
    ("postgresql://a@[::1]:5432/db", None),
    ("host=h user=a", "is not a postgresql:// URL"),
    ("mysql://a@h/db", "scheme 'mysql'"),
    ("postgresql://a@h:54x/db", "port '54x' is not a number"),
    ("postgresql://a@h/db?sslmode=verify_full", "sslmode 'verify_full' is not one of"),
])
def test_dsn_shape(dsn, problem):
    got = dsn_problem(dsn)
    assert (got is None) if problem is None else (got is not None and problem in got)


def test_every_problem_is_listed_not_only_the_first(tmp_path, monkeypatch):
    monkeypatch.delenv("RG_CC_UNSET", raising=False)
    path = tmp_path / "rg.yaml"
    path.write_text("regions:\n"
                    "  eu: {dsn: 'postgresql://a:${env:RG_CC_UNSET}@h/db'}\n"
                    "  us: {dsn: 'host=h password=kvsecret', fallbacks: [mars]}\n"
                    "tables: {t: {key: [id], bogus: 1}}\n"
                    "router: {batch_max: 0}\n")
    cfg, problems, _ = offline(str(path))
    assert cfg is None
    assert problems == [
        "regions.eu.dsn: environment variable 'RG_CC_UNSET' is not set",
        "regions.us.dsn: is not a postgresql:// URL (asyncpg takes URL DSNs only)",
        "tables.t.bogus: unknown key",
        "router.batch_max: Input should be greater than or equal to 1",
    ]


def test_cross_section_names_are_checked(tmp_path):
    path = tmp_path / "rg.yaml"
    path.write_text("regions:\n  eu: {dsn: 'postgresql://a@h/db?sslmode=disable', fallbacks: [mars]}\n"
                    "tables: {t: {key: [id]}}\n")
    assert offline(str(path))[1] == ["regions.eu.fallbacks names unknown region 'mars'"]


def test_a_good_config_warns_about_sslmode_but_has_no_problem(tmp_path):
    path = tmp_path / "rg.yaml"
    path.write_text("regions:\n  eu: {dsn: 'postgresql://a@h/db'}\ntables: {t: {key: [id]}}\n")
    cfg, problems, warnings = offline(str(path))
    assert cfg is not None and problems == [] and len(warnings) == 1 and "sslmode" in warnings[0]


@pytest.mark.parametrize("text, rc, line", [
    ("regions: [unclosed\n", 2, "invalid YAML at line 2"),
    ("- a list\n", 2, "expected a mapping at the top level"),
    ("regions:\n  eu: {dsn: 'postgresql://a@h/db?sslmode=disable'}\ntables: {t: {key: [id]}}\n", 0,
     "OK (1 regions, 1 tables; offline checks only)"),
])
def test_cli_exit_codes_and_one_line(tmp_path, text, rc, line):
    path = tmp_path / "rg.yaml"
    path.write_text(text)
    proc = subprocess.run([sys.executable, "-m", "regionguard", "config", "check", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == rc and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.splitlines() == [f"{path}: {line}"]
