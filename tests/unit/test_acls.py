"""The Kafka ACL table of ``regionguard acls`` (pure: no broker)."""

from __future__ import annotations

import pytest

from regionguard.core.config import ConfigError, parse_config
from regionguard.core.kafka import topic_plan
from regionguard.ops.acls import acl_table, minimal, principals_from_args
from regionguard.core.config import UsageError

BASE = {
    "kafka": {"topic_prefix": "acme.rg."},
    "regions": {"eu": {"dsn": "postgresql://a@db-eu/app", "fallbacks": ["us"]}, "us": {"dsn": "postgresql://a@db-us/app"}},
    "tables": {"users": {"key": ["id"]}},
}
ROUTER, REPLAYER, HEALTH, FEATURES = "User:rg-router", "User:rg-replayer", "User:rg-health", "User:rg-features"
OPERATOR, APP = "User:rg-operator", "User:rg-app"
STRONG = ("READ", "WRITE", "CREATE")


def table(**kafka):
    cfg = parse_config({**BASE, "kafka": {**BASE["kafka"], **kafka}})
    return cfg, minimal(acl_table(cfg))


def rights(tab, principal, *, ops=STRONG):
    """(operation, resource, name, pattern) of ``principal``'s grants among ``ops``."""
    return {(g.operation, g.resource, g.name, g.pattern) for g in tab if g.principal == principal and g.operation in ops}


def may(tab, principal, op, topic):
    """Does some grant of ``principal`` allow ``op`` on ``topic`` (literal or prefixed match, as Kafka matches)?"""
    return any(g.principal == principal and g.operation == op and g.resource == "topic"
               and (g.name == topic if g.pattern == "literal" else topic.startswith(g.name)) for g in tab)


def writers(tab, topic):
    return {g.principal for g in tab if g.operation == "WRITE" and g.resource == "topic"
            and (g.name == topic if g.pattern == "literal" else topic.startswith(g.name))}


def test_applications_may_only_write_the_writes_topics():
    cfg, tab = table()
    assert rights(tab, APP, ops=None or ("READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS")) == {
        ("WRITE", "topic", "acme.rg.writes.", "prefixed")}


@pytest.mark.parametrize("kind, who", [
    ("region-state", {HEALTH}),
    ("control", {OPERATOR}),  # breaker commands: the replayer's markers go to failover-events
    ("dead-letter", {ROUTER, REPLAYER}),
    ("observations", {HEALTH, ROUTER, REPLAYER}),  # probes, and passive health from the apply path
    ("failover-events", {HEALTH, ROUTER, REPLAYER, FEATURES}),  # features_changed
    ("features", {FEATURES}),
])
def test_who_writes_each_shared_topic(kind, who):
    cfg, tab = table()
    assert writers(tab, cfg.topic(kind)) == who


def test_every_region_topic_is_written_by_its_writers_only():
    cfg, tab = table()
    for region in cfg.regions:
        assert writers(tab, cfg.topic("writes", region)) == {APP, OPERATOR}  # the operator: redrive
        assert writers(tab, cfg.topic("held", region)) == {ROUTER}


def test_readers_of_each_topic():
    cfg, tab = table()
    assert may(tab, HEALTH, "READ", cfg.topic("observations")) and may(tab, HEALTH, "READ", cfg.topic("control"))
    for p in (ROUTER, REPLAYER, FEATURES):
        assert not may(tab, p, "READ", cfg.topic("observations")) and not may(tab, p, "READ", cfg.topic("control"))
    for region in cfg.regions:
        assert may(tab, ROUTER, "READ", cfg.topic("writes", region))
        assert not may(tab, REPLAYER, "READ", cfg.topic("writes", region))
        assert may(tab, REPLAYER, "READ", cfg.topic("held", region))
    for p in (ROUTER, REPLAYER, HEALTH, FEATURES):
        assert may(tab, p, "READ", cfg.topic("region-state"))
        assert not may(tab, p, "READ", cfg.topic("dead-letter"))  # bad writes' contents stay with operators


def test_groups_follow_the_config():
    cfg, tab = table(**{})
    cfg = parse_config({**BASE, "router": {"group_id": "r1"}, "replay": {"group_id": "p1"}})
    tab = minimal(acl_table(cfg))
    groups = {(g.principal, g.name, g.operation) for g in tab if g.resource == "group" and g.pattern == "literal"}
    assert groups == {
        (ROUTER, "acme.rg.r1.eu", "READ"), (ROUTER, "acme.rg.r1.us", "READ"),
        (ROUTER, "acme.rg.p1.eu", "DESCRIBE"), (ROUTER, "acme.rg.p1.us", "DESCRIBE"),  # the switch-back gate
        (REPLAYER, "acme.rg.p1.eu", "READ"), (REPLAYER, "acme.rg.p1.us", "READ"),
        (HEALTH, "acme.rg.health", "READ"),
    }


def test_services_see_every_topic_but_create_only_faust_s():
    cfg, tab = table()
    for p in (ROUTER, REPLAYER, HEALTH, FEATURES):
        described = {g.name for g in acl_table(cfg) if g.principal == p and g.operation == "DESCRIBE"}
        assert set(topic_plan(cfg)) <= described
    creates = {(g.principal, g.name) for g in tab if g.operation == "CREATE"}
    assert creates == {(HEALTH, "acme.rg.health-__assignor-__leader")}
    assert not [g for g in tab if g.resource == "cluster"]


def test_minimal_drops_describe_implied_by_read_or_write():
    cfg, _ = table()
    full = acl_table(cfg)
    small = minimal(full)
    assert any(g.operation == "DESCRIBE" and g.name == "acme.rg.writes.eu" and g.principal == ROUTER for g in full)
    assert not any(g.operation == "DESCRIBE" and g.name == "acme.rg.writes.eu" and g.principal == ROUTER
                   for g in small)
    assert any(g.operation == "DESCRIBE" and g.name == "acme.rg.features" and g.principal == ROUTER for g in small)


def test_principals_from_config_and_flags():
    cfg = parse_config({**BASE, "kafka": {"principals": {"router": "User:r", "applications": ["User:a", "User:b"],
                                                         "features": None}}})
    tab = minimal(acl_table(cfg, principals_from_args(cfg, ["replayer=User:p"])))
    who = {g.principal for g in tab}
    assert who == {"User:r", "User:p", HEALTH, OPERATOR, "User:a", "User:b"}
    with pytest.raises(UsageError):
        principals_from_args(cfg, ["nobody=User:x"])
    with pytest.raises(UsageError):
        principals_from_args(cfg, ["router=rg-router"])


@pytest.mark.parametrize("bad", ["rg-router", "User:", "User:a b", ":x"])
def test_a_bad_principal_is_a_one_line_config_error(bad):
    with pytest.raises(ConfigError, match=r"kafka.principals.router: principal .* must be TYPE:NAME"):
        parse_config({**BASE, "kafka": {"principals": {"router": bad}}})


def test_table_is_deterministic_and_free_of_duplicates():
    cfg, tab = table()
    assert tab == sorted(tab) and len(tab) == len(set(tab))
    assert minimal(acl_table(cfg)) == tab
