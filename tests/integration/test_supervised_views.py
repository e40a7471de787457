"""Issue 12 item 3 on a real broker: a view whose handler or consumer raises keeps running, and says so.

- a failing ``on_change`` callback and a record that makes the handler raise are
  reported (one WARNING line, ``regionguard_background_errors_total``) and skipped;
  the records after them are still read;
- a consumer that raises makes the thread start over (backoff, a restart in
  ``regionguard_background_restarts_total``) and the view goes on reading;
- no WARNING line carries a traceback; the traceback is at DEBUG.

Every wait is on observable state (the view's contents, the metric).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
from prometheus_client import REGISTRY

from regionguard.core.follower import CompactedFollower
from regionguard.core.config import parse_config
from regionguard.core.kafka import Confirmer, ensure_topics, make_producer
from regionguard.core.models import FeatureFlags, RegionState
from regionguard.core.log import rdkafka_log
from regionguard.core.stateview import RegionStateView
from tests.harness import regions_config

pytestmark = pytest.mark.timeout(90)
DSNS = {"eu": "postgresql://app@127.0.0.1:1/eu", "us": "postgresql://app@127.0.0.1:1/us"}


def until(pred, timeout=20.0, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def errors(component: str, kind: str) -> float:
    return metric("regionguard_background_errors_total", component=component, kind=kind)


def restarts(component: str) -> float:
    return metric("regionguard_background_restarts_total", component=component)


def rec(region, state, seq):
    now = datetime.now(timezone.utc)
    return RegionState(region=region, state=state, since=now, seq=seq, at=now)


def publish(cfg, producer, topic_kind: str, *records):
    c = Confirmer()
    for r in records:
        c.produce(producer, cfg.topic(topic_kind), r.model_dump_json().encode(), key=r.region.encode())
    c.wait(producer)


@pytest.fixture
def cfg(broker):
    cfg = parse_config(regions_config(DSNS, broker.bootstrap))
    ensure_topics(cfg)
    return cfg


def assert_no_traceback_in_warnings(caplog):
    for r in caplog.records:
        if r.levelno >= logging.WARNING:
            text = r.getMessage()
            assert "Traceback" not in text and "\n" not in text and r.exc_info is None, text


class FlakyConsumer:
    """A confluent-kafka consumer whose consume() raises while ``fail`` is set (once per set)."""

    def __init__(self, inner, fail: threading.Event) -> None:
        self._inner, self._fail = inner, fail

    def consume(self, *a, **kw):
        if self._fail.is_set():
            self._fail.clear()
            raise RuntimeError("consumer broke (injected)")
        return self._inner.consume(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_stateview_survives_a_failing_callback_a_poison_record_and_a_consumer_error(cfg, caplog):
    caplog.set_level(logging.DEBUG, logger="regionguard")
    producer = make_producer(cfg, logger=rdkafka_log)
    seen: list[int] = []

    def on_change(_old, new):
        seen.append(new.seq)
        if new.seq == 2:
            raise ValueError("callback bug (injected)")

    fail = threading.Event()

    class View(RegionStateView):
        consumers = 0

        def _consumer(self):
            View.consumers += 1
            return FlakyConsumer(super()._consumer(), fail)

        def _handle(self, value, **kw):  # kw: history (whether the record was read back from history)
            if value and b'"poison"' in value:
                raise RuntimeError("handler bug (injected)")
            super()._handle(value, **kw)

    before = {k: errors("stateview", k) for k in ("ValueError", "RuntimeError")}
    restarts_before = restarts("stateview")
    with View(cfg, on_change=on_change) as view:
        assert view.wait_ready(20)
        # a callback that raises: reported, the view goes on
        publish(cfg, producer, "region-state", rec("eu", "closed", 1), rec("eu", "open", 2), rec("eu", "closed", 3))
        assert until(lambda: view.state("eu") is not None and view.state("eu").seq == 3)
        assert seen[-3:] == [1, 2, 3]
        assert errors("stateview", "ValueError") == before["ValueError"] + 1
        # a record that makes the handler raise: reported, skipped, the next one is read
        poison = rec("eu", "open", 4).model_copy(update={"observer": "poison"})
        publish(cfg, producer, "region-state", poison, rec("eu", "open", 5))
        assert until(lambda: view.state("eu").seq == 5)
        assert errors("stateview", "RuntimeError") == before["RuntimeError"] + 1
        # the consumer itself raises: the thread starts over (new consumer) and reads on
        fail.set()
        assert until(lambda: restarts("stateview") == restarts_before + 1)
        assert until(lambda: View.consumers >= 2)
        publish(cfg, producer, "region-state", rec("eu", "half_open", 6))
        assert until(lambda: view.state("eu").seq == 6)
        assert view.state("eu").state.value == "half_open"
        # + the injected consumer error, + the poison record once more (the new consumer reads from the start)
        assert errors("stateview", "RuntimeError") == before["RuntimeError"] + 3
    assert_no_traceback_in_warnings(caplog)
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("Traceback" in d and "callback bug (injected)" in d for d in debug)
    assert any("Traceback" in d and "consumer broke (injected)" in d for d in debug)


def test_follower_survives_a_failing_callback_and_a_consumer_error(cfg, caplog):
    caplog.set_level(logging.DEBUG, logger="regionguard")
    producer = make_producer(cfg, logger=rdkafka_log)
    name = f"flags-{uuid.uuid4().hex[:6]}"
    comp = f"follower:{name}"
    fail = threading.Event()
    consumers = []

    def boom(_old, new):
        if new.seq == 1:
            raise KeyError("callback bug (injected)")

    class Follower(CompactedFollower):
        def _consumer(self):
            consumers.append(1)
            return FlakyConsumer(super()._consumer(), fail)

    def flags(seq, disabled):
        return FeatureFlags(region="eu", disabled=disabled, seq=seq, since=datetime.now(timezone.utc),
                            at=datetime.now(timezone.utc))

    with Follower(cfg, cfg.topic("features"), FeatureFlags, on_change=boom, name=name) as f:
        assert f.wait_ready(20)
        publish(cfg, producer, "features", flags(1, ["recommendations"]), flags(2, []))
        assert until(lambda: f.get("eu") is not None and f.get("eu").seq == 2)
        assert errors(comp, "KeyError") == 1
        fail.set()
        assert until(lambda: restarts(comp) == 1)
        publish(cfg, producer, "features", flags(3, ["search"]))
        assert until(lambda: f.get("eu").seq == 3)
        assert len(consumers) >= 2 and errors(comp, "RuntimeError") == 1
    assert_no_traceback_in_warnings(caplog)


def test_health_topic_tail_restarts_after_a_failing_delivery_and_delivers_nothing_twice(cfg, caplog):
    from confluent_kafka import OFFSET_BEGINNING

    from regionguard.health.service import TopicTail

    name = f"test-tail-{uuid.uuid4().hex[:6]}"
    got: list[int] = []

    def deliver(_p, offset, _value):
        got.append(offset)
        if offset == 1:
            raise RuntimeError("deliver bug (injected)")

    producer = make_producer(cfg, logger=rdkafka_log)
    c = Confirmer()
    for i in range(4):
        c.produce(producer, cfg.topic("control"), b'{"n": %d}' % i, key=b"eu")
    c.wait(producer)
    tail = TopicTail(cfg, cfg.topic("control"), OFFSET_BEGINNING, deliver, name).start()
    try:
        assert until(lambda: len(got) >= 4)
        assert restarts(name) == 1 and errors(name, "RuntimeError") == 1
    finally:
        tail.stop()
    assert got == [0, 1, 2, 3]  # the restart went on after the failed one: nothing read twice
    assert_no_traceback_in_warnings(caplog)
