"""Config loading: defaults, and one-line errors naming the field (exit 2 from the CLI)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from regionguard.core.config import ConfigError, load_config, parse_config
from regionguard.core.dsn import redact_dsn

GOOD = {
    "regions": {"eu": {"dsn": "postgresql://app:s3cret@db-eu/app", "fallbacks": ["us"]},
                "us": {"dsn": "postgresql://app@db-us/app"}},
    "tables": {"users": {"key": ["id"], "version": "version"}},
}


def test_defaults_fill_everything_but_regions_and_tables():
    cfg = parse_config(GOOD)
    assert cfg.kafka.topic_prefix == "rg." and cfg.router.batch_max == 1000
    assert cfg.metrics.host == "127.0.0.1"  # localhost by default
    assert cfg.topic("writes", "eu") == "rg.writes.eu"


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.update(bogus=1), "bogus: unknown key"),
    (lambda d: d["regions"]["eu"].pop("dsn"), "regions.eu.dsn: required field is missing"),
    (lambda d: d["tables"]["users"].update(key=[]), "tables.users.key"),
    (lambda d: d["tables"]["users"].pop("key"), "tables.users.key: required field is missing"),
    (lambda d: d["regions"]["eu"].update(fallbacks=["mars"]), "unknown region 'mars'"),
    (lambda d: d.update(tables={'users"; drop': {"key": ["id"]}}), "not a plain SQL identifier"),
    (lambda d: d["tables"]["users"].update(key=["id; --"]), "not a plain SQL identifier"),
    (lambda d: d.update(router={"batch_max": 0}), "router.batch_max"),
    (lambda d: d.pop("regions"), "regions: required field is missing"),
    (lambda d: d.update(router={"lanes": 5}), "router: lanes (5) exceeds pool_size (4)"),
    (lambda d: d.update(replay={"lanes": 5}), "replay.lanes (5) exceeds router.pool_size (4)"),
])
def test_bad_config_is_one_line_naming_the_field(mutate, field):
    doc = {"regions": {k: dict(v) for k, v in GOOD["regions"].items()},
           "tables": {k: dict(v) for k, v in GOOD["tables"].items()}}
    mutate(doc)
    with pytest.raises(ConfigError) as exc:
        parse_config(doc)
    msg = str(exc.value)
    assert field in msg and "\n" not in msg
    assert "s3cret" not in msg


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("regions:\n  eu: {dsn: 'postgresql://u:hunter2@h/db', fallbacks: [nowhere]}\ntables: {t: {key: [id]}}\n")
    proc = subprocess.run([sys.executable, "-m", "regionguard.cli", "router", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0] and "Traceback" not in proc.stderr
    assert "hunter2" not in proc.stderr


@pytest.mark.parametrize("text, needle", [("regions: [", "invalid YAML"), ("- a\n- b\n", "mapping")])
def test_unparseable_files(tmp_path, text, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(p)


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_kafka_bootstrap_env_overrides(tmp_path, monkeypatch):
    import yaml

    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(GOOD))
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "broker:1234")
    assert load_config(p).kafka.bootstrap == "broker:1234"


@pytest.mark.parametrize("dsn", [
    "postgresql://app:s3cret@db/app",
    "postgres://app:s3cret@db:5432/app?sslmode=require",
    "host=db user=app password=s3cret dbname=app",
    "host=db password='s3cret' dbname=app",
])
def test_dsn_passwords_are_redacted(dsn):
    assert "s3cret" not in redact_dsn(dsn)
    assert "s3cret" not in repr(parse_config({**GOOD, "regions": {"eu": {"dsn": dsn}}}).regions["eu"])


def test_log_lines_never_carry_a_dsn_password(capsys):
    import logging

    from regionguard.core.log import setup_logging

    log = setup_logging("test")
    log.warning("connect to %s failed", "postgresql://app:s3cret@db/app")
    try:
        raise OSError("could not connect: password=s3cret host=db")
    except OSError:
        log.exception("boom")
    err = capsys.readouterr().err
    assert "s3cret" not in err and "***" in err
    assert "Traceback" not in err  # one line per record
    logging.getLogger().handlers.clear()
