"""Small helpers shared by the integration tests: producing raw records, reading topics, waiting."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from regionguard.core.kafka import producer_conf


def produce_raw(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes | None]],
                partition: int | None = None) -> None:
    p = Producer(producer_conf(bootstrap, **{"linger.ms": 5}))
    errors: list[str] = []

    def cb(err, _msg):
        if err is not None:
            errors.append(str(err))

    for key, value in items:
        kw: dict[str, Any] = {"key": key, "value": value, "on_delivery": cb}
        if partition is not None:
            kw["partition"] = partition
        while True:
            try:
                p.produce(topic, **kw)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(30) == 0, "produce not confirmed"
    assert not errors, errors


def write_event(region: str, table: str, op: str, key: dict, data: dict | None = None, **extra: Any) -> dict:
    ev = {"id": str(uuid.uuid4()), "region": region, "table": table, "op": op, "key": key}
    if data is not None:
        ev["data"] = data
    ev.update(extra)
    return ev


def ev_bytes(ev: dict) -> tuple[bytes, bytes]:
    key = "/".join([ev["table"], *[str(ev["key"][k]) for k in sorted(ev["key"])]]).encode()
    return key, json.dumps(ev).encode()


def read_topic(bootstrap: str, topic: str, *, idle: float = 1.0, timeout: float = 20.0) -> list:
    """Every record of ``topic`` (all partitions), stopping after ``idle`` seconds without news."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    out, last, start = [], time.monotonic(), time.monotonic()
    try:
        while time.monotonic() - last < idle and time.monotonic() - start < timeout:
            for m in c.consume(500, 0.2):
                if m.error() is None:
                    out.append(m)
                    last = time.monotonic()
    finally:
        c.close()
    return out


def read_json(bootstrap: str, topic: str, **kw) -> list[dict]:
    return [json.loads(m.value()) for m in read_topic(bootstrap, topic, **kw) if m.value()]


def wait_until(pred: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        res = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in res}
