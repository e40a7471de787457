"""Config references (${env:NAME}, ${file:/path[:key]}, $${...}), and keeping their values out of errors and logs."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from regionguard.core import log as rglog
from regionguard.core.config import ConfigError, parse_config
from regionguard.core.refs import RefError, resolve, resolve_text

ENV = {"PG_PASSWORD": "hunter2-from-env", "EMPTY": ""}


def test_env_reference_is_replaced_inside_a_string():
    assert resolve_text("postgresql://app:${env:PG_PASSWORD}@db/app", environ=ENV) == \
        "postgresql://app:hunter2-from-env@db/app"
    assert resolve_text("${env:EMPTY}", environ=ENV) == ""


def test_escaped_reference_stays_literal_and_other_dollars_are_kept():
    assert resolve_text("pa$${env:PG_PASSWORD}ss", environ=ENV) == "pa${env:PG_PASSWORD}ss"
    assert resolve_text("$${anything at all}", environ=ENV) == "${anything at all}"
    assert resolve_text("cost: $5 ${notaref} $", environ=ENV) == "cost: $5 ${notaref} $"


def test_missing_variable_names_it_and_says_where():
    with pytest.raises(RefError) as err:
        resolve({"regions": {"eu": {"dsn": "postgresql://a:${env:NOPE}@h/db"}}}, environ=ENV)
    assert str(err.value) == "regions.eu.dsn: environment variable 'NOPE' is not set"


def test_unknown_provider_is_an_error():
    with pytest.raises(RefError, match="unknown provider 'vault'"):
        resolve_text("${vault:secret/x}", environ=ENV)


def test_file_reference_whole_file_and_properties_key(tmp_path):
    whole = tmp_path / "pw"
    whole.write_text("s3cret-file\n")
    props = tmp_path / "db.properties"
    props.write_text("# comment\nuser = app\npassword=from:props\\\n  -continued\n")
    assert resolve_text(f"${{file:{whole}}}", environ=ENV) == "s3cret-file"
    assert resolve_text(f"${{file:{props}:user}}/${{file:{props}:password}}", environ=ENV) == \
        "app/from:props-continued"


@pytest.mark.parametrize("ref, message", [
    ("${file:/nonexistent/rg-secret}", "file '/nonexistent/rg-secret' cannot be read"),
    ("${file:relative/path}", "the path must be absolute"),
    ("${file:PROPS:nokey}", "has no key 'nokey'"),
])
def test_file_problems_name_the_file_or_key_not_a_value(tmp_path, ref, message):
    props = tmp_path / "db.properties"
    props.write_text("password=do-not-show-me\n")
    with pytest.raises(RefError) as err:
        resolve_text(ref.replace("PROPS", str(props)), environ=ENV)
    assert message in str(err.value) and "do-not-show-me" not in str(err.value)


def test_keys_and_non_strings_are_not_resolved_and_lists_are_walked():
    got = resolve({"${env:PG_PASSWORD}": ["${env:PG_PASSWORD}", 3, None, True]}, environ=ENV)
    assert got.data == {"${env:PG_PASSWORD}": ["hunter2-from-env", 3, None, True]}
    assert got.secrets == {"hunter2-from-env"}


BASE = {"regions": {"eu": {"dsn": "postgresql://app:${env:RG_TEST_PW}@db-eu/app?sslmode=disable"}},
        "tables": {"users": {"key": ["id"]}}}


def test_config_resolves_references_when_loaded(monkeypatch):
    monkeypatch.setenv("RG_TEST_PW", "pw-resolved-1")
    cfg = parse_config(BASE)
    assert cfg.regions["eu"].dsn == "postgresql://app:pw-resolved-1@db-eu/app?sslmode=disable"


def test_config_missing_reference_is_one_line_config_error(monkeypatch):
    monkeypatch.delenv("RG_TEST_PW", raising=False)
    with pytest.raises(ConfigError) as err:
        parse_config(BASE, source="rg.yaml")
    assert str(err.value) == "rg.yaml: regions.eu.dsn: environment variable 'RG_TEST_PW' is not set"


def test_a_validator_quoting_a_resolved_value_does_not_show_it(monkeypatch):
    monkeypatch.setenv("RG_TEST_COL", "secret-column-name!")
    data = {**BASE, "tables": {"users": {"key": ["${env:RG_TEST_COL}"]}}}
    monkeypatch.setenv("RG_TEST_PW", "x")
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert "secret-column-name!" not in str(err.value) and "***" in str(err.value)


def test_resolved_values_are_scrubbed_from_log_lines(monkeypatch):
    monkeypatch.setenv("RG_TEST_PW", "pw-never-logged-2")
    parse_config({**BASE, "kafka": {"client": {"sasl.password": "${env:RG_TEST_PW}"}}})
    record = logging.LogRecord("t", logging.WARNING, __file__, 1, "client conf %s", ({"sasl": "pw-never-logged-2"},),
                               None)
    rglog.RedactingFilter().filter(record)
    assert "pw-never-logged-2" not in record.getMessage() and "***" in record.getMessage()


def test_short_resolved_values_are_not_scrubbed_everywhere():
    rglog.add_secrets(["eu", ""])
    assert rglog.scrub("region eu is open") == "region eu is open"


def test_cli_missing_env_reference_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "rg.yaml"
    cfg.write_text("regions:\n  eu: {dsn: 'postgresql://app:${env:RG_SURELY_UNSET_PW}@h/db'}\n"
                   "tables: {t: {key: [id]}}\n")
    proc = subprocess.run([sys.executable, "-m", "regionguard", "inbox", "prune", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"regionguard inbox: {cfg}: regions.eu.dsn: environment variable 'RG_SURELY_UNSET_PW' is not set"]


def test_a_reference_in_a_number_field_is_validated_as_that_number(monkeypatch):
    monkeypatch.setenv("RG_TEST_PW", "x")
    monkeypatch.setenv("RG_TEST_PORT", "9555")
    assert parse_config({**BASE, "metrics": {"port": "${env:RG_TEST_PORT}"}}).metrics.port == 9555
    monkeypatch.setenv("RG_TEST_PORT", "ninety")
    with pytest.raises(ConfigError, match="metrics.port: Input should be a valid integer"):
        parse_config({**BASE, "metrics": {"port": "${env:RG_TEST_PORT}"}})
