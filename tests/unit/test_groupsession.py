"""The group session rule (core/groupsession.py): the brokers' fencing time plus a margin, within Kafka's bounds.

The behaviour it buys (a router keeps its partitions through its coordinator's loss) is shown on
three real brokers in tests/integration/test_coordinator_loss.py; this checks the arithmetic only.
"""

from __future__ import annotations

from regionguard.core.config import MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS, parse_config
from regionguard.core.groupsession import MIN_REQUEST_TIMEOUT_MS, client_timeouts, group_settings, session_ms


def cfg(**kafka):
    return parse_config({"kafka": kafka, "regions": {"eu": {"dsn": "postgresql://u@h/db"}},
                         "tables": {"users": {"key": ["id"]}}})


def test_the_session_outlives_the_brokers_fencing_by_the_margin():
    assert session_ms(9000, 6.0) == 15000  # Apache Kafka's default broker.session.timeout.ms
    assert session_ms(9000, 3.0) == 12000  # with the default margin
    assert session_ms(3000, 6.0) == 9000


def test_unknown_fencing_or_a_small_sum_keeps_kafkas_minimum_and_a_huge_one_its_maximum():
    assert session_ms(None, 6.0) == MIN_SESSION_TIMEOUT_MS
    assert session_ms(1000, 0.0) == MIN_SESSION_TIMEOUT_MS
    assert session_ms(MAX_SESSION_TIMEOUT_MS, 6.0) == MAX_SESSION_TIMEOUT_MS


def test_the_margin_is_a_setting_and_kafka_client_wins():
    assert group_settings(cfg(group_session_margin_s=2), "router", 9000)["session.timeout.ms"] == 11000
    assert group_settings(cfg(), "router", None) == {"session.timeout.ms": MIN_SESSION_TIMEOUT_MS}
    # the guide's 3 s fencing keeps Kafka's 6 s minimum by default: a crashed router is still replaced within 8 s
    assert group_settings(cfg(), "router", 3000)["session.timeout.ms"] == MIN_SESSION_TIMEOUT_MS
    assert group_settings(cfg(client={"session.timeout.ms": 7000}), "router", 9000) == {}


def test_requests_to_a_silent_broker_are_given_up_after_the_brokers_fencing_time():
    """Issue 26: a broker cut off by a partition answers nothing; librdkafka's 60 s socket timeout held a
    router's commit (and its heartbeats and revocation) on it long after its coordinator had moved."""
    assert group_settings(cfg(), "router", 3000)["socket.timeout.ms"] == 3000
    assert group_settings(cfg(), "router", 9000)["socket.timeout.ms"] == 9000
    assert group_settings(cfg(), "router", 1000)["socket.timeout.ms"] == MIN_REQUEST_TIMEOUT_MS  # slow is not dead
    assert "socket.timeout.ms" not in group_settings(cfg(), "router", None)  # unknown fencing: librdkafka's default
    assert "socket.timeout.ms" not in group_settings(cfg(client={"socket.timeout.ms": 20000}), "router", 3000)
    group = group_settings(cfg(), "router", 3000)
    assert client_timeouts(group) == {"socket.timeout.ms": 3000}
    assert client_timeouts(group, producer=True) == {"socket.timeout.ms": 3000, "request.timeout.ms": 3000}
    assert client_timeouts({"session.timeout.ms": 6000}, producer=True) == {}
    assert client_timeouts(None) == {}
