"""Record size limits and dead letters that always fit (core/sizes.py), and the deliver stage's
handling of records Kafka refuses (core/outbox.py), with a fake producer: no I/O, no sleeps."""

from __future__ import annotations

import base64
import json
import time

import pytest

from confluent_kafka import KafkaError, KafkaException

from regionguard.core import metrics as m
from regionguard.core import sizes
from regionguard.core.errors import BadWrite
from regionguard.core.kafka import record_level
from regionguard.core.models import DeadLetter, DeadReason
from regionguard.core.outbox import GiveUp, Outbox, deliver
from regionguard.core.publish import dead_letter_value
from regionguard.core.writes import Record


def test_write_max_leaves_room_for_the_held_copy_headers():
    w = sizes.write_max(None, writes_max=1_048_588, held_max=1_048_588, producer_max=None)
    # the producer's own limit (librdkafka: 1,000,000) is the smaller one here
    assert w == 1_000_000 - sizes.RECORD_OVERHEAD - sizes.HELD_HEADROOM
    assert sizes.write_max(None, writes_max=200_000, held_max=1_048_588, producer_max=None) == \
        200_000 - sizes.RECORD_OVERHEAD
    assert sizes.write_max(5000, writes_max=200_000, held_max=200_000, producer_max=None) == 5000


def test_too_large_counts_key_and_value():
    assert sizes.too_large(b"k", b"x" * 9, 10) is None
    bad = sizes.too_large(b"kk", b"x" * 9, 10)
    assert isinstance(bad, BadWrite) and bad.reason is DeadReason.too_large
    assert "11 bytes" in bad.detail and "writes.max_bytes (10)" in bad.detail


def _rec(value: bytes, key: bytes = b"k1") -> Record:
    return Record("rg.writes.eu", 3, 42, key, value)


def test_a_small_dead_letter_is_whole():
    raw = b'{"not": "a write"'
    dl = DeadLetter.model_validate_json(dead_letter_value(_rec(raw), BadWrite(DeadReason.invalid_json, "x"),
                                                          region="eu", limit=10_000))
    assert not dl.original_truncated and dl.original_bytes() == raw and dl.original_size == len(raw)


def test_a_large_binary_original_is_truncated_to_fit_and_says_so():
    raw = bytes(range(256)) * 3200  # 800 KB, not UTF-8: base64 would make it ~1.07 MB
    limit = sizes.dead_letter_max(1_048_588, None)
    value = dead_letter_value(_rec(raw), BadWrite(DeadReason.invalid_json, "not JSON"), region="eu", limit=limit)
    assert len(value) + len(b"k1") <= limit
    dl = DeadLetter.model_validate_json(value)
    assert dl.original_truncated and dl.original_size == len(raw) and dl.original_encoding == "base64"
    prefix = dl.original_bytes()
    assert raw.startswith(prefix)
    # the longest prefix that fits: one more byte would not
    assert len(value) + len(b"k1") + 4 > limit
    assert (dl.topic, dl.partition, dl.offset) == ("rg.writes.eu", 3, 42)


def test_a_truncated_text_original_is_cut_at_a_character():
    raw = ("é" * 5000).encode()  # two bytes a character
    dl = DeadLetter(reason=DeadReason.schema, detail="d", topic="t", partition=0, offset=0, original=raw.decode())
    out = sizes.fit(dl, raw, 4000)
    assert len(out) <= 4000
    got = DeadLetter.model_validate_json(out)
    assert got.original_truncated and got.original_encoding == "text"
    assert raw.startswith(got.original_bytes()) and set(got.original) == {"é"}


def test_record_level_errors_are_told_by_code():
    assert record_level(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert record_level(KafkaError(KafkaError.INVALID_RECORD))
    assert not record_level(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert not record_level(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert not record_level(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, fatal=True))


class _Msg:
    def __init__(self, topic, partition, offset):
        self._t, self._p, self._o = topic, partition, offset

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def offset(self):
        return self._o


class FakeProducer:
    """Refuses what ``refuse(topic, value)`` names: ``("raise", code)`` from produce(), ``("report", code)``
    in the delivery report; acknowledges the rest on flush."""

    def __init__(self, refuse):
        self.refuse = refuse
        self.queued: list = []
        self.log: list[tuple[str, bytes]] = []  # every acknowledged record
        self.offset = 0

    def produce(self, topic, key=None, value=None, on_delivery=None, partition=None, headers=None):
        verdict = self.refuse(topic, value)
        if verdict and verdict[0] == "raise":
            raise KafkaException(KafkaError(verdict[1]))
        self.queued.append((topic, partition, value, on_delivery, verdict))

    def flush(self, timeout=None):
        queued, self.queued = self.queued, []
        for topic, partition, value, cb, verdict in queued:
            if verdict:
                cb(KafkaError(verdict[1]), None)
            else:
                self.offset += 1
                self.log.append((topic, value))
                cb(None, _Msg(topic, partition or 0, self.offset))
        return 0

    def poll(self, timeout=None):
        return 0


def _outbox_with_big_held_copy() -> tuple[Outbox, Record, Record]:
    out = Outbox("rg.dead-letter", "eu", 100_000)
    big, small = Record("rg.writes.eu", 0, 7, b"k", b"B" * 5000), Record("rg.writes.eu", 0, 8, b"k", b"ok")
    out.add("rg.held.eu", big.key, big.value, 0, [("rg-hold-reason", b"x")], source=big, write_id="w-big")
    out.add("rg.held.eu", small.key, small.value, 0, [("rg-hold-reason", b"x")], source=small)
    return out, big, small


async def _no_pause(_s):  # pragma: no cover - asserted not to be called where it matters
    raise AssertionError("a record-level refusal must not back off")


async def test_a_held_copy_refused_by_produce_becomes_a_too_large_dead_letter():
    out, big, small = _outbox_with_big_held_copy()
    p = FakeProducer(lambda topic, value: ("raise", KafkaError.MSG_SIZE_TOO_LARGE)
                     if topic == "rg.held.eu" and len(value) > 1000 else None)
    before = _count(m.DEAD_LETTERS, "eu", "too_large")
    offsets = await deliver(p, out, retry_s=0.01, retry_max_s=0.01, pause=_no_pause, still_ours=lambda: True)
    assert [(t, v) for t, v in p.log if t == "rg.held.eu"] == [("rg.held.eu", b"ok")]  # produced once, not twice
    [(topic, value)] = [(t, v) for t, v in p.log if t == "rg.dead-letter"]
    dl = DeadLetter.model_validate_json(value)
    assert dl.reason is DeadReason.too_large and (dl.topic, dl.partition, dl.offset) == ("rg.writes.eu", 0, 7)
    assert dl.original_bytes() == big.value and "MSG_SIZE_TOO_LARGE" in dl.detail and dl.write_id == "w-big"
    assert offsets[("rg.held.eu", 0)] >= 1
    assert _count(m.DEAD_LETTERS, "eu", "too_large") == before + 1


async def test_a_dead_letter_refused_in_its_delivery_report_is_sent_again_with_an_empty_original():
    out = Outbox("rg.dead-letter", "eu", 100_000)
    rec = Record("rg.writes.eu", 1, 9, b"k", b"\xff" * 3000)
    out.dead_letter(rec, BadWrite(DeadReason.invalid_json, "not JSON"), write_id=None)
    p = FakeProducer(lambda topic, value: ("report", KafkaError.MSG_SIZE_TOO_LARGE) if len(value) > 1000 else None)
    await deliver(p, out, retry_s=0.01, retry_max_s=0.01, pause=_no_pause, still_ours=lambda: True)
    [(_, value)] = p.log
    dl = DeadLetter.model_validate_json(value)
    assert dl.reason is DeadReason.invalid_json and dl.original_truncated and dl.original == ""
    assert dl.original_size == 3000 and (dl.topic, dl.partition, dl.offset) == ("rg.writes.eu", 1, 9)


async def test_a_topic_level_refusal_is_retried_with_backoff_and_counted():
    out, _, _ = _outbox_with_big_held_copy()
    denied = {"n": 2}

    def refuse(topic, value):
        return ("report", KafkaError.TOPIC_AUTHORIZATION_FAILED) if denied["n"] > 0 else None

    pauses: list[float] = []

    async def pause(s):
        pauses.append(s)
        denied["n"] -= 1

    before = _count(m.PRODUCE_ERRORS, "eu", "rg.held.eu", "TOPIC_AUTHORIZATION_FAILED")
    p = FakeProducer(refuse)
    await deliver(p, out, retry_s=0.01, retry_max_s=0.02, pause=pause, still_ours=lambda: True)
    assert pauses == [0.01, 0.02]
    assert [v for _, v in p.log] == [b"B" * 5000, b"ok"]  # nothing dropped, nothing dead-lettered
    assert _count(m.PRODUCE_ERRORS, "eu", "rg.held.eu", "TOPIC_AUTHORIZATION_FAILED") == before + 4


def _count(metric, *labels) -> float:
    return metric.labels(*labels)._value.get()


def test_dead_letter_json_keeps_its_fields():
    raw = b"\xff\x01" * 10
    doc = json.loads(dead_letter_value(_rec(raw), BadWrite(DeadReason.schema, "d"), region="eu", limit=None))
    assert base64.b64decode(doc["original"]) == raw and doc["original_truncated"] is False


def test_producer_batches_fit_the_smallest_topic():
    assert sizes.Limits({}, 1, None).producer_conf() == {}
    assert sizes.Limits({}, 1, 1_048_588).producer_conf() == {}  # the broker's default takes librdkafka's batches
    assert sizes.Limits({}, 1, 200_000).producer_conf() == {"batch.size": 200_000 - sizes.RECORD_OVERHEAD}


class _SlowProducer(FakeProducer):
    """Acknowledges nothing for the first ``quiet`` flushes (a broker away), then everything queued."""

    def __init__(self, quiet: int):
        super().__init__(lambda topic, value: None)
        self.quiet = quiet
        self.produced = 0

    def produce(self, *args, **kwargs):
        self.produced += 1
        super().produce(*args, **kwargs)

    def flush(self, timeout=None):
        if self.quiet > 0:
            self.quiet -= 1
            time.sleep(timeout or 0)  # as librdkafka's flush waits out its timeout with nothing acknowledged
            return len(self.queued)
        return super().flush(timeout)


async def test_an_unconfirmed_round_is_waited_on_never_produced_again():
    """Issue 25, finding 7: a resend while the first copies may still be written could put r3 ahead of
    r2 in the held topic (r1, r3, r1', r2', r3'). Unconfirmed records are waited on instead."""
    out, _, _ = _outbox_with_big_held_copy()
    p = _SlowProducer(quiet=3)
    pauses: list[float] = []

    async def pause(s):
        pauses.append(s)

    offsets = await deliver(p, out, retry_s=0.01, retry_max_s=0.01, pause=pause, still_ours=lambda: True,
                            wait_s=0.01)
    assert p.produced == 2 and [v for _, v in p.log] == [b"B" * 5000, b"ok"]  # each copy once, in order
    assert pauses and offsets[("rg.held.eu", 0)] == 2


async def test_an_unconfirmed_round_no_longer_ours_is_given_up_not_resent():
    out, _, _ = _outbox_with_big_held_copy()
    p = _SlowProducer(quiet=10**6)

    async def pause(_s):
        return None

    with pytest.raises(GiveUp):
        await deliver(p, out, retry_s=0.01, retry_max_s=0.01, pause=pause, still_ours=lambda: False, wait_s=0.01)
    assert p.produced == 2


def test_the_router_and_replayer_producers_never_time_a_record_out(monkeypatch):
    from regionguard.core import kafka
    from regionguard.core.config import parse_config

    seen = {}
    monkeypatch.setattr(kafka, "Producer", lambda conf: seen.setdefault("conf", conf))
    cfg = parse_config({"regions": {"eu": {"dsn": "postgresql://x@h/db"}}, "tables": {"t": {"key": ["id"]}},
                        "kafka": {"client": {"message.timeout.ms": 5000}}})
    kafka.make_producer(cfg, ordered=True)
    assert seen["conf"]["message.timeout.ms"] == 0 and "delivery.timeout.ms" not in seen["conf"]
