"""The SDK producer's delivery settings and its one error for writes Kafka did not acknowledge
(clients/python/regionguard_client/delivery.py; the brokers themselves: tests/integration/test_producer_failover.py)."""

from __future__ import annotations

import math
import uuid

import pytest
from confluent_kafka import KafkaError

from regionguard.client import WriteProducer
from regionguard.client.delivery import (DELIVERY_SETTINGS, DELIVERY_TIMEOUT_MS, WriteNotAcknowledged,
                                         delivery_timeout_s, not_acknowledged)
from regionguard.core.config import parse_config
from regionguard.core.kafka import Confirmer, KafkaDeliveryError
from regionguard.core.models import Op, WriteEvent

CFG = {"regions": {"eu": {"dsn": "postgresql://x@h/db"}, "us": {"dsn": "postgresql://x@h/db2"}},
       "tables": {"users": {"key": ["id"]}}}


def _event(region: str, n: int) -> WriteEvent:
    return WriteEvent(id=uuid.uuid4(), region=region, table="users", op=Op.upsert, key={"id": n}, data={"n": n})


class _Msg:
    def topic(self) -> str:
        return "rg.writes.eu"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 7


def _round(outcomes: list[KafkaError | str | None]) -> tuple[Confirmer, list[tuple[str, WriteEvent]]]:
    """A flush round: per write, "ok" (acknowledged), a KafkaError (failed) or None (no report yet)."""
    c = Confirmer()
    sent = []
    for i, outcome in enumerate(outcomes):
        region = "eu" if i < 3 else "us"
        sent.append((f"rg.writes.{region}", _event(region, i)))
        c.pending += 1
        if isinstance(outcome, str):  # KafkaError.__eq__ refuses a str
            c._report(i, None, _Msg())
        elif outcome is not None:
            c._report(i, outcome, None)
    return c, sent


def test_the_settings_every_language_shares():
    assert DELIVERY_SETTINGS["message.timeout.ms"] == DELIVERY_TIMEOUT_MS == 30_000
    # a request stuck on a silent leader is given up well inside the delivery timeout, then retried
    assert DELIVERY_SETTINGS["socket.timeout.ms"] == DELIVERY_SETTINGS["request.timeout.ms"] == 10_000
    assert DELIVERY_SETTINGS["max.in.flight.requests.per.connection"] == 5  # idempotence's most, in order
    assert DELIVERY_SETTINGS["retries"] == 2**31 - 1  # left to the delivery timeout


def test_the_sdk_producer_gets_them_and_the_user_may_tune_them(monkeypatch):
    from regionguard.core import kafka

    seen = {}
    monkeypatch.setattr(kafka, "Producer", lambda conf: seen.setdefault("conf", conf))
    p = WriteProducer(parse_config(CFG))
    conf = seen.pop("conf")
    assert (conf["enable.idempotence"], conf["acks"]) == (True, "all")
    assert {k: conf[k] for k in DELIVERY_SETTINGS} == DELIVERY_SETTINGS
    assert p.delivery_timeout_s == 30.0
    p = WriteProducer(parse_config({**CFG, "kafka": {"client": {"delivery.timeout.ms": 12000}}}))
    assert p.delivery_timeout_s == 12.0  # librdkafka's other name for it, set by the user, wins
    assert seen["conf"]["delivery.timeout.ms"] == 12000


def test_delivery_timeout_of_a_conf():
    assert delivery_timeout_s({}) == 30.0
    assert delivery_timeout_s({"message.timeout.ms": 5000, "delivery.timeout.ms": 8000}) == 8.0  # the last set
    assert delivery_timeout_s({"delivery.timeout.ms": 8000, "message.timeout.ms": "5000"}) == 5.0
    assert delivery_timeout_s({"message.timeout.ms": 0}) == math.inf  # librdkafka never times out


def test_every_write_acknowledged_is_no_error():
    c, sent = _round(["ok", "ok"])
    assert not_acknowledged(c, sent, 30, None) is None


def test_the_error_names_the_writes_to_send_again_their_region_topic_and_cause():
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
    c, sent = _round(["ok", timed_out, None, timed_out])
    err = not_acknowledged(c, sent, 30, "broker 10.0.0.1:9092: Connect to ipv4#10.0.0.1:9092 failed:\nrefused")
    assert isinstance(err, WriteNotAcknowledged) and isinstance(err, KafkaDeliveryError)  # old excepts still catch it
    assert [ev.key["id"] for ev in err.writes] == [1, 2, 3]  # failed or unreported, in the order sent
    assert (err.region, err.topic, err.code, err.retriable) == ("eu", "rg.writes.eu", KafkaError._MSG_TIMED_OUT, True)
    assert str(err) == ("3 of 4 write(s) to region eu (topic rg.writes.eu) and 1 other region(s) not acknowledged "
                        "(delivery timeout 30 s): Local: Message timed out; broker 10.0.0.1:9092: "
                        "Connect to ipv4#10.0.0.1:9092 failed: refused")


def test_writes_never_reported_are_unconfirmed_and_retriable():
    c, sent = _round(["ok", None])
    err = not_acknowledged(c, sent, 30, None, waited_s=35)
    assert err is not None and err.retriable and err.code is None
    assert str(err).endswith("not acknowledged (delivery timeout 30 s): unconfirmed after 35 s")


@pytest.mark.parametrize("code, retriable", [(KafkaError.MSG_SIZE_TOO_LARGE, False), (KafkaError.INVALID_RECORD, False),
                                             (KafkaError.NOT_ENOUGH_REPLICAS, True), (KafkaError._TRANSPORT, True)])
def test_retriable_unless_every_failure_is_the_records_own(code, retriable):
    """Decided by the error's code (core.kafka.RECORD_ERRORS), never by its text."""
    c, sent = _round([KafkaError(code), KafkaError(code)])
    err = not_acknowledged(c, sent, 30, None)
    assert err is not None and err.retriable is retriable
    c, sent = _round([KafkaError(code), KafkaError(KafkaError._MSG_TIMED_OUT)])
    assert not_acknowledged(c, sent, 30, None).retriable is True  # one of them may go through again


def test_write_ids_are_time_ordered_uuid7_so_the_inbox_index_grows_at_one_end(monkeypatch):
    """Random uuid4 ids made every inbox claim a random read of a large index (bench/inbox_ids.py:
    claims 2.12x faster with UUIDv7 ids against an inbox of 10 million, median of 3 rounds)."""
    p = WriteProducer(parse_config({**CFG, "kafka": {"bootstrap": "127.0.0.1:1"}}))
    sent: list[WriteEvent] = []
    monkeypatch.setattr(p, "send", sent.append)
    for n in range(50):
        p.write("eu", "users", "upsert", {"id": n}, {"n": n})
    with p.group("eu", ordering_key="o1") as g:
        g.insert("users", {"id": 99}, {"n": 1})
    ids = [ev.id for ev in sent]
    assert {u.version for u in ids} == {7}
    assert [u.int >> 80 for u in ids] == sorted(u.int >> 80 for u in ids)  # millisecond stamps never go back
    assert len(set(ids)) == len(ids)
