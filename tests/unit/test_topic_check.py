"""check_topics / topic_configs without a broker (a stand-in admin client answers)."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from regionguard.core.config import ConfigError, parse_config
from regionguard.core.kafka import TopicMismatchError, check_topics, topic_configs, topic_plan


def _cfg(**kafka):
    return parse_config({"kafka": {"partitions": 3, **kafka}, "regions": {"eu": {"dsn": "postgresql://x"}},
                         "tables": {"t": {"key": ["id"]}}})


class FakeAdmin:
    """list_topics from ``topics`` {name: (partitions, replicas)}; describe_configs from ``configs``."""

    def __init__(self, topics, configs=None, describe_error: Exception | None = None):
        self.topics, self.configs, self.describe_error = topics, configs or {}, describe_error

    def list_topics(self, timeout=None):
        return SimpleNamespace(topics={
            name: SimpleNamespace(error=None, partitions={p: SimpleNamespace(replicas=list(range(rf)))
                                                          for p in range(parts)})
            for name, (parts, rf) in self.topics.items()})

    def describe_configs(self, resources, request_timeout=None):
        if self.describe_error is not None:
            raise self.describe_error
        out = {}
        for res in resources:
            fut: Future = Future()
            fut.set_result({k: SimpleNamespace(value=v) for k, v in self.configs.get(res.name, {}).items()})
            out[res] = fut
        return out


def _good(cfg, rf=1):
    topics = {name: (parts, rf) for name, (parts, _c) in topic_plan(cfg).items()}
    return topics, topic_configs(cfg)


def test_created_settings():
    cfg = _cfg(replication_factor=3, min_insync_replicas=2, topics={"held_retention_days": 30})
    conf = topic_configs(cfg)
    assert conf["rg.held.eu"] == {"min.insync.replicas": "2", "cleanup.policy": "delete",
                                  "retention.ms": str(30 * 86_400_000), "retention.bytes": "-1"}
    assert conf["rg.writes.eu"]["retention.ms"] == str(7 * 86_400_000)
    assert conf["rg.dead-letter"]["retention.ms"] == str(30 * 86_400_000)
    for name in ("rg.region-state", "rg.features"):
        assert conf[name]["cleanup.policy"] == "compact" and conf[name]["segment.ms"] == "600000"
        assert conf[name]["min.cleanable.dirty.ratio"] == "0.1" and conf[name]["delete.retention.ms"] == "3600000"
    assert all(c["min.insync.replicas"] == "2" for c in conf.values())


def test_min_insync_above_replication_is_a_config_error():
    with pytest.raises(ConfigError, match=r"min_insync_replicas \(2\) exceeds replication_factor \(1\)"):
        _cfg(min_insync_replicas=2)
    with pytest.raises(ConfigError, match="compact_segment_s"):
        _cfg(topics={"compact_segment_s": 7200})


def test_matching_topics_pass():
    cfg = _cfg(replication_factor=3, min_insync_replicas=2)
    topics, configs = _good(cfg, rf=3)
    check_topics(cfg, FakeAdmin(topics, configs))


@pytest.mark.parametrize("change, message", [
    (lambda t, c: t.update({"rg.held.eu": (4, 3)}), "topic rg.held.eu: 4 partitions, but kafka.partitions is 3"),
    (lambda t, c: t.update({"rg.control": (1, 1)}), "topic rg.control: replication factor 1, but kafka.replication_factor is 3"),
    (lambda t, c: c["rg.features"].update({"cleanup.policy": "compact,delete"}),
     "topic rg.features: cleanup.policy is compact,delete, must be compact"),
    (lambda t, c: c["rg.writes.eu"].update({"cleanup.policy": "compact"}), "topic rg.writes.eu: cleanup.policy is compact"),
    (lambda t, c: c["rg.held.eu"].update({"retention.ms": "604800000"}), "topic rg.held.eu: retention.ms is 604800000 (7 days)"),
    (lambda t, c: c["rg.held.eu"].update({"retention.bytes": "1073741824"}), "topic rg.held.eu: retention.bytes is 1073741824"),
    (lambda t, c: c["rg.dead-letter"].update({"min.insync.replicas": "1"}),
     "topic rg.dead-letter: min.insync.replicas is 1, but kafka.min_insync_replicas is 2"),
])
def test_mismatches_name_the_topic(change, message):
    cfg = _cfg(replication_factor=3, min_insync_replicas=2)
    topics, configs = _good(cfg, rf=3)
    change(topics, configs)
    with pytest.raises(TopicMismatchError) as exc:
        check_topics(cfg, FakeAdmin(topics, configs))
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_infinite_held_retention_is_fine_and_long_segments_only_warn(caplog):
    cfg = _cfg()
    topics, configs = _good(cfg)
    configs["rg.held.eu"]["retention.ms"] = "-1"
    configs["rg.region-state"]["segment.ms"] = "604800000"
    with caplog.at_level(logging.WARNING):
        check_topics(cfg, FakeAdmin(topics, configs))
    assert "rg.region-state: segment.ms is 604800000" in caplog.text


def test_a_broker_without_describe_configs_checks_what_metadata_tells(caplog):
    cfg = _cfg()
    topics, _ = _good(cfg)
    with caplog.at_level(logging.WARNING):
        check_topics(cfg, FakeAdmin(topics, describe_error=RuntimeError("not supported")))
    assert "cannot describe topic configs (not supported)" in caplog.text
    topics["rg.held.eu"] = (2, 1)
    with pytest.raises(TopicMismatchError, match="rg.held.eu: 2 partitions"):
        check_topics(cfg, FakeAdmin(topics, describe_error=RuntimeError("not supported")))
