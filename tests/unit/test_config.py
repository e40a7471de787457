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


@pytest.mark.parametrize("replay, size", [
    ({}, 4000),                                    # default max_rate 20,000/s: a fifth of a second is 4,000
    ({"max_rate": 0}, 4000),                       # unlimited: batch_max
    ({"max_rate": 0, "batch_max": 250}, 250),
    ({"max_rate": 1000}, 200),                     # a rate-limited replay goes in fifths of a second
    ({"max_rate": 1000, "batch_max": 50}, 50),
    ({"max_rate": 2}, 1),                          # never an empty batch
])
def test_replay_batches_are_large_but_never_a_lump_of_the_rate(replay, size):
    assert parse_config({**GOOD, "replay": replay}).replay.batch_size == size


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
    logging.getLogger().setLevel(logging.DEBUG)  # DEBUG keeps the traceback, redacted
    try:
        raise OSError("could not connect: password=s3cret host=db")
    except OSError:
        log.debug("details", exc_info=True)
    err = capsys.readouterr().err
    assert "Traceback" in err and "s3cret" not in err and "password=***" in err
    logging.getLogger().handlers.clear()
    logging.getLogger().setLevel(logging.WARNING)


# ---- kafka.client: the user's values win; guarantee-breaking ones are refused (issue 11, 5e/5g) ----

def _with_client(client: dict, **sections) -> dict:
    return {**GOOD, "kafka": {"client": client}, **sections}


def test_user_client_values_win_over_regionguards_defaults():
    from regionguard.core.kafka import PARTITIONER

    cfg = parse_config(_with_client({"linger.ms": 50, "compression.type": "zstd", "session.timeout.ms": 10000,
                                     "fetch.wait.max.ms": 100, "security.protocol": "SASL_SSL",
                                     "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "rg", "sasl.password": "pw"}))
    producer = cfg.kafka_client_conf(**{"enable.idempotence": True, "acks": "all", "partitioner": PARTITIONER,
                                        "linger.ms": 2, "compression.type": "none"})
    assert producer["linger.ms"] == 50 and producer["compression.type"] == "zstd"
    assert producer["security.protocol"] == "SASL_SSL"
    assert producer["acks"] == "all" and producer["enable.idempotence"] is True
    assert producer["partitioner"] == "murmur2_random"
    consumer = cfg.kafka_client_conf(**{"group.id": "rg.router.eu", "enable.auto.commit": False,
                                        "session.timeout.ms": 6000, "fetch.wait.max.ms": 10})
    assert consumer["session.timeout.ms"] == 10000 and consumer["fetch.wait.max.ms"] == 100
    assert consumer["group.id"] == "rg.router.eu" and consumer["enable.auto.commit"] is False
    assert consumer["bootstrap.servers"] == cfg.kafka.bootstrap


def test_make_producer_and_make_consumer_let_the_user_tune(monkeypatch):
    """The real helpers: the user's tuning wins, the essentials stay (no broker needed: the handles are stubs)."""
    from regionguard.core import kafka

    made = []
    monkeypatch.setattr(kafka, "Producer", lambda conf: made.append(conf) or conf)
    monkeypatch.setattr(kafka, "Consumer", lambda conf: made.append(conf) or conf)
    cfg = parse_config(_with_client({"linger.ms": 25, "queue.buffering.max.kbytes": 1024,
                                     "session.timeout.ms": 45000, "partition.assignment.strategy": "cooperative-sticky"}))
    p = kafka.make_producer(cfg, **{"linger.ms": 0, "partitioner": "consistent_random"})
    assert p["linger.ms"] == 25 and p["queue.buffering.max.kbytes"] == 1024
    assert p["partitioner"] == "murmur2_random"  # whatever a caller passes
    assert p["acks"] == "all" and p["enable.idempotence"] is True
    c = kafka.make_consumer(cfg, "rg.router.eu")
    assert c["session.timeout.ms"] == 45000 and c["partition.assignment.strategy"] == "cooperative-sticky"
    assert c["group.id"] == "rg.router.eu"
    assert c["enable.auto.commit"] is False and c["enable.auto.offset.store"] is False
    assert c["auto.offset.reset"] == "earliest"
    defaults = kafka.make_consumer(parse_config(GOOD), "g")
    assert defaults["session.timeout.ms"] == 6000


def test_every_producer_conf_partitions_like_java():
    from regionguard.core.kafka import producer_conf

    conf = producer_conf("b:9092", **{"linger.ms": 5, "partitioner": "consistent_random"})
    assert conf["partitioner"] == "murmur2_random" and conf["linger.ms"] == 5
    assert conf["acks"] == "all" and conf["enable.idempotence"] is True and conf["bootstrap.servers"] == "b:9092"


@pytest.mark.parametrize("key, value", [
    ("acks", "all"), ("acks", 1), ("request.required.acks", 0), ("enable.idempotence", False),
    ("enable.auto.commit", True), ("auto.commit.enable", True), ("enable.auto.offset.store", True),
    ("isolation.level", "read_uncommitted"), ("partitioner", "consistent_random"),
    ("transactional.id", "x"), ("group.id", "mine"), ("group.instance.id", "m1"),
    ("auto.offset.reset", "latest"), ("enable.partition.eof", False), ("bootstrap.servers", "other:9092"),
])
def test_guarantee_breaking_client_settings_are_refused(key, value):
    with pytest.raises(ConfigError) as exc:
        parse_config(_with_client({key: value}))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("config: kafka.client: ")
    assert f"'{key}'" in msg and "set by regionguard" in msg


@pytest.mark.parametrize("client, needle", [
    ({"session.timeout.ms": 3000}, "'session.timeout.ms' (3000) must be between 6000"),
    ({"session.timeout.ms": "5999"}, "'session.timeout.ms' (5999)"),
    ({"session.timeout.ms": 1_800_001}, "'session.timeout.ms' (1800001)"),
    ({"session.timeout.ms": "six"}, "'session.timeout.ms' must be an integer"),
    ({"heartbeat.interval.ms": 6000}, "'heartbeat.interval.ms' (6000) must be positive and below"),
    ({"session.timeout.ms": 10000, "heartbeat.interval.ms": 10000}, "below session.timeout.ms (10000)"),
    ({"max.poll.interval.ms": 5000}, "'max.poll.interval.ms' (5000) must be at least session.timeout.ms (6000)"),
    ({"max.in.flight.requests.per.connection": 6}, "'max.in.flight.requests.per.connection' must be at most 5"),
    ({"max.in.flight": "10"}, "'max.in.flight' must be at most 5"),
    ({"retries": 0}, "'retries' must be at least 1"),
    ({"message.send.max.retries": 0}, "'message.send.max.retries' must be at least 1"),
    ({"queuing.strategy": "lifo"}, "'queuing.strategy' must be fifo"),
])
def test_unsafe_client_values_are_one_line_errors(client, needle):
    with pytest.raises(ConfigError) as exc:
        parse_config(_with_client(client))
    msg = str(exc.value)
    assert needle in msg and "kafka.client" in msg and "\n" not in msg


@pytest.mark.parametrize("client", [
    {"session.timeout.ms": 6000}, {"session.timeout.ms": "45000", "heartbeat.interval.ms": 3000},
    {"max.in.flight": 5, "retries": 3, "queuing.strategy": "fifo", "max.poll.interval.ms": 600000},
    {"security.protocol": "SSL", "ssl.ca.location": "/etc/ca.pem", "client.id": "rg"},
])
def test_safe_client_values_load(client):
    assert parse_config(_with_client(client)).kafka.client == client


@pytest.mark.parametrize("value, ok", [(6.0, True), (30, True), (5.9, False), (3.0, False), (1801, False)])
def test_health_leader_session_is_within_kafkas_limits(value, ok):
    doc = {**GOOD, "health": {"leader_session_timeout_s": value}}
    if ok:
        assert parse_config(doc).health.leader_session_timeout_s == value
        return
    with pytest.raises(ConfigError) as exc:
        parse_config(doc)
    assert str(exc.value).startswith("config: health.leader_session_timeout_s: ") and "\n" not in str(exc.value)


def test_cli_refused_client_setting_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kafka: {client: {enable.auto.commit: true}}\n"
                    "regions: {eu: {dsn: 'postgresql://u@h/db'}}\ntables: {t: {key: [id]}}\n")
    proc = subprocess.run([sys.executable, "-m", "regionguard.cli", "router", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "kafka.client" in lines[0] and "enable.auto.commit" in lines[0], proc.stderr
