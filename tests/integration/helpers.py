"""Small helpers shared by the integration tests: producing raw records, reading topics, waiting.

Tests wait on observable state -- rows, offsets, topic contents, consumer group
assignments, a service's /metrics -- never on a service's log, and never sleep
and then assert that nothing happened (they wait for a later positive sign
first). :func:`wait_until` is the one polling loop; :func:`metric_value`,
:func:`group_members`, :func:`wait_group` and :func:`read_to_end` are what it
polls.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterable
from typing import Any, Callable

from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from regionguard.core.kafka import producer_conf, replayer_group, router_group


def produce_raw(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes | None]],
                partition: int | None = None, headers: list[tuple[str, bytes]] | None = None,
                timestamp_ms: int | None = None) -> None:
    p = Producer(producer_conf(bootstrap, **{"linger.ms": 5}))
    errors: list[str] = []

    def cb(err, _msg):
        if err is not None:
            errors.append(str(err))

    for key, value in items:
        kw: dict[str, Any] = {"key": key, "value": value, "on_delivery": cb}
        if headers:
            kw["headers"] = headers
        if partition is not None:
            kw["partition"] = partition
        if timestamp_ms is not None:
            kw["timestamp"] = timestamp_ms  # the record's CreateTime, as a producer may set it
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


def group_event(region: str, ordering_key: str, ops: list[dict], **extra: Any) -> dict:
    """An atomic write group; ``ops`` are ``{"table", "op", "key", "data"}`` dicts."""
    ev = {"id": str(uuid.uuid4()), "region": region, "ordering_key": ordering_key, "ops": ops}
    ev.update(extra)
    return ev


def ev_bytes(ev: dict) -> tuple[bytes, bytes]:
    """(Kafka key, value) as docs/contract.md has it: the ordering_key, else <table>/<key values>."""
    if ev.get("ordering_key") is not None:
        return ev["ordering_key"].encode(), json.dumps(ev).encode()
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


# ---------------------------------------------------------------------------------------- /metrics
def metric_value(port: int, name: str, **labels: str) -> float | None:
    """Sum of the samples ``name`` (exact sample name, e.g. ``regionguard_apply_errors_total``) whose
    labels include ``labels``, scraped from ``http://127.0.0.1:<port>/metrics``.

    0.0 when the service serves but has no such sample yet; None while nothing answers on the
    port (the service is still starting), so ``== 0`` never passes before the service is up.
    """
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def wait_metric(port: int, name: str, pred: Callable[[float], bool], *, timeout: float = 30.0, what: str = "",
                **labels: str) -> float:
    """Wait until ``pred(metric_value(port, name, **labels))`` holds (the service must serve); the value."""
    def check() -> tuple[float] | None:
        v = metric_value(port, name, **labels)
        return (v,) if v is not None and pred(v) else None

    label = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return wait_until(check, timeout=timeout, interval=0.1,
                      what=what or f"{name}{{{label}}} on :{port}")[0]


# ---------------------------------------------------------------------------------- consumer groups
#: what :func:`group_members` returns for a Stable group whose broker does not describe its members
UNDESCRIBED: dict[str, set[int]] = {"(members not described by the broker)": set()}


def group_members(bootstrap: str, group: str, topic: str | None = None) -> dict[str, set[int]] | None:
    """The broker's description of consumer group ``group``: member id -> partitions of ``topic``
    (of every topic when None) assigned to it, while the group is Stable; None while it forms,
    rebalances, is empty or unknown."""
    # a client per call, gone when this returns: one kept for later was destroyed by the garbage
    # collector at exit, after the test broker had stopped, and hung the process in rd_kafka_destroy
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    except KafkaException:
        return None
    finally:
        del admin
    if desc.state != ConsumerGroupState.STABLE:
        return None
    if not desc.members:
        # tansu: Stable once every member has its assignment (Empty before a join and after the last
        # leave, Unknown while joining), but it never lists members; the state is all it tells
        return dict(UNDESCRIBED)
    return {m.member_id: {tp.partition for tp in (m.assignment.topic_partitions if m.assignment else [])
                          if topic is None or tp.topic == topic}
            for m in desc.members}


def wait_group(bootstrap: str, group: str, *, topic: str | None = None, partitions: int | None = None,
               members: int | None = None, exclude: Iterable[str] = (), timeout: float = 30.0,
               what: str | None = None) -> dict[str, set[int]]:
    """Wait until consumer group ``group`` is Stable and, as asked: its members own every one of
    ``partitions`` partitions of ``topic``; it has exactly ``members`` members; none of the member
    ids in ``exclude`` is still listed (members of a killed process stay until their session times
    out). Returns :func:`group_members`. On a broker that describes no members (tansu) it waits
    for the Stable state only."""
    gone = set(exclude)

    def check() -> dict[str, set[int]] | None:
        ms = group_members(bootstrap, group, topic)
        if ms == UNDESCRIBED:
            return ms  # Stable is all this broker says: member counts and exclusions can't be checked
        if not ms or gone & set(ms):
            return None
        if members is not None and len(ms) != members:
            return None
        if partitions is not None and set().union(*ms.values()) != set(range(partitions)):
            return None
        return ms

    return wait_until(check, timeout=timeout, interval=0.1,
                      what=what or f"group {group}: stable, {members or 'any'} member(s)"
                                   + (f" owning {partitions} partition(s) of {topic}" if partitions else ""))


def wait_assigned(cf: Any, service: str, region: str, *, processes: int = 1, exclude: Iterable[str] = (),
                  timeout: float = 30.0) -> dict[str, set[int]]:
    """Wait until ``processes`` routers (``service="router"``: group on ``writes.<region>``) or
    replayers (``"replayer"``: group on ``held.<region>``) of config ``cf`` (a ConfigFile) are in
    their consumer group of ``region`` -- one member per lane -- and own all its partitions."""
    cfg = cf.load()
    if service == "router":
        group, topic, lanes = router_group(cfg, region), cf.topic("writes", region), cfg.router.lanes
    elif service == "replayer":
        group, topic, lanes = replayer_group(cfg, region), cf.topic("held", region), cfg.replay.lanes
    else:
        raise ValueError(f"no consumer group for {service!r}")
    return wait_group(cf.bootstrap, group, topic=topic, partitions=cfg.kafka.partitions,
                      members=processes * lanes, exclude=exclude, timeout=timeout,
                      what=f"{processes} {service}(s) of {region} assigned every partition of {topic}")


# ------------------------------------------------------------------------------------------- topics
def read_to_end(bootstrap: str, topic: str, *, timeout: float = 20.0) -> list:
    """Every record of ``topic`` up to its end *now* (the high watermarks taken first), nothing later.

    Unlike :func:`read_topic` it does not stop after a quiet spell: a record acknowledged
    before the call is always in the result.
    """
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False, "enable.partition.eof": False})
    try:
        md = c.list_topics(topic, timeout=10)
        ends: dict[int, int] = {}
        starts = []
        for p in md.topics[topic].partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        c.assign(starts)
        out: list = []
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: not read to {ends} in {timeout}s")
            for m in c.consume(500, 0.2):
                if m.error() is None and m.partition() in ends and m.offset() < ends[m.partition()]:
                    out.append(m)
            for tp in c.position([TopicPartition(topic, p) for p in list(ends)]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
    finally:
        c.close()
    return out


def read_json_to_end(bootstrap: str, topic: str, **kw: Any) -> list[dict]:
    return [json.loads(m.value()) for m in read_to_end(bootstrap, topic, **kw) if m.value()]
