"""The producer SDK and ``regionguard write``.

``WriteProducer`` publishes WriteEvents with an idempotent, ``acks=all``
producer and the Kafka key docs/contract.md asks for (the event's ``ordering_key``, else
``<table>/<key values>``), so every write to one row -- or of one ordering key --
lands in one partition, in order. ``WriteProducer.group`` builds an atomic write
group: several row operations published as one record. Any language can do
the same: see docs/producers.md ("From any language").
"""

from __future__ import annotations

import argparse
import json
import logging
import uuid
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from uuid6 import uuid7

from .core.config import Config, UsageError, load_config
from .core.kafka import Confirmer, KafkaDeliveryError, make_producer
from .core.models import MAX_GROUP_OPS, Op, Policy, RowOp, WriteEvent
from .core.log import rdkafka_log
from .delivery import DELIVERY_SETTINGS, WriteNotAcknowledged, delivery_timeout_s, not_acknowledged
from .consistency import WriteToken


class WriteProducer:
    """Publish writes for any configured region.

    ``write()`` queues; ``flush()`` waits until Kafka acknowledged every queued
    write and raises :class:`WriteNotAcknowledged` (a :class:`KafkaDeliveryError`) otherwise,
    at the latest a few seconds after the delivery timeout (client/delivery.py). A write counts
    as acknowledged, and so is guaranteed by regionguard, only after that.
    """

    def __init__(self, cfg: Config, **client: Any) -> None:
        self.cfg = cfg
        self.last_broker_error: str | None = None  # librdkafka's latest complaint, for a one-line failure
        client.setdefault("logger", rdkafka_log)  # not librdkafka's own stderr lines, one per reconnect
        client.setdefault("error_cb", self._on_error)
        client = {**DELIVERY_SETTINGS, **client}
        self.delivery_timeout_s = delivery_timeout_s({**client, **cfg.kafka.client})
        self._producer = make_producer(cfg, **client)
        self._confirmer = Confirmer()
        self._sent: list[tuple[str, WriteEvent]] = []  # this flush round's writes, by Confirmer index

    def _on_error(self, err: Any) -> None:
        self.last_broker_error = err.str() if hasattr(err, "str") else str(err)

    def write(
        self, region: str, table: str, op: Op | str, key: dict[str, Any], data: dict[str, Any] | None = None, *,
        policy: Policy | str = Policy.hold, fallback_regions: list[str] | None = None,
        expires_at: datetime | None = None, meta: dict[str, Any] | None = None, id: uuid.UUID | None = None,
        ordering_key: str | None = None,
    ) -> WriteToken:
        """Queue one row write; returns its read-your-writes token (``token.event`` is the event).

        ``ordering_key`` (when given) is the Kafka key, as for the groups it must stay ordered with.
        """
        if region not in self.cfg.regions:
            raise ValueError(f"unknown region {region!r}")
        ev = WriteEvent(
            id=id or uuid7(), region=region, table=table, op=Op(op), key=key, data=data,
            policy=Policy(policy), fallback_regions=fallback_regions or [], expires_at=expires_at, meta=meta or {},
            ordering_key=ordering_key,
        )
        self.send(ev)
        return WriteToken.of(ev)

    def group(
        self, region: str, *, ordering_key: str, policy: Policy | str = Policy.hold,
        fallback_regions: list[str] | None = None, expires_at: datetime | None = None,
        meta: dict[str, Any] | None = None, id: uuid.UUID | None = None,
    ) -> "WriteGroup":
        """An atomic write group: ``with producer.group(region, ordering_key=...) as g: g.insert(...)``.

        The ops are published as one record when the block ends without an error (nothing is sent
        otherwise); the router applies them in one transaction, in order, all or nothing.
        """
        if region not in self.cfg.regions:
            raise ValueError(f"unknown region {region!r}")
        return WriteGroup(self, dict(id=id or uuid7(), region=region, ordering_key=ordering_key,
                                     policy=Policy(policy), fallback_regions=fallback_regions or [],
                                     expires_at=expires_at, meta=meta or {}))

    def send(self, ev: WriteEvent) -> None:
        """Queue one event (a write, a group, or one of :attr:`WriteNotAcknowledged.writes` again)."""
        topic = self.cfg.topic("writes", ev.region)
        self._sent.append((topic, ev))
        self._confirmer.produce(self._producer, topic, ev.model_dump_json().encode(), key=ev.kafka_key())
        self._producer.poll(0)

    def flush(self, timeout: float | None = None) -> None:
        """Wait for Kafka's acknowledgements; :class:`WriteNotAcknowledged` names the writes it did not give.

        ``timeout`` defaults to the delivery timeout and a margin: by then librdkafka has reported
        every write, acknowledged or failed, so the error is final, never a write still on its way.
        """
        confirmer, self._confirmer = self._confirmer, Confirmer()
        sent, self._sent = self._sent, []
        if timeout is None:
            timeout = self.delivery_timeout_s + 5.0
        try:
            confirmer.wait(self._producer, timeout)
        except KafkaDeliveryError:
            pass
        broker = f"broker {self.cfg.kafka.bootstrap}: {self.last_broker_error}" if self.last_broker_error else None
        err = not_acknowledged(confirmer, sent, self.delivery_timeout_s, broker, waited_s=timeout)
        if err is not None:
            raise err
        self.last_broker_error = None  # a complaint the producer got over must not explain a later failure

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> "WriteProducer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WriteGroup:
    """Collects the row operations of one atomic write group (see :meth:`WriteProducer.group`)."""

    def __init__(self, producer: WriteProducer, fields: dict[str, Any]) -> None:
        self._producer, self._fields = producer, fields
        self.ops: list[RowOp] = []
        self.event: WriteEvent | None = None  # the published event, once the block has ended

    @property
    def token(self) -> WriteToken:
        """The group's read-your-writes token (once sent)."""
        if self.event is None:
            raise RuntimeError("the write group has not been sent yet")
        return WriteToken.of(self.event)

    def add(self, table: str, op: Op | str, key: dict[str, Any], data: dict[str, Any] | None = None) -> "WriteGroup":
        if len(self.ops) >= MAX_GROUP_OPS:
            raise ValueError(f"a write group holds at most {MAX_GROUP_OPS} ops")
        self.ops.append(RowOp(table=table, op=Op(op), key=key, data=data))
        return self

    def insert(self, table: str, key: dict[str, Any], data: dict[str, Any]) -> "WriteGroup":
        return self.add(table, Op.insert, key, data)

    def upsert(self, table: str, key: dict[str, Any], data: dict[str, Any]) -> "WriteGroup":
        return self.add(table, Op.upsert, key, data)

    def update(self, table: str, key: dict[str, Any], data: dict[str, Any]) -> "WriteGroup":
        return self.add(table, Op.update, key, data)

    def delete(self, table: str, key: dict[str, Any], data: dict[str, Any] | None = None) -> "WriteGroup":
        return self.add(table, Op.delete, key, data)

    def send(self) -> WriteEvent:
        """Publish the group as one record (``flush()`` confirms it, as for any write)."""
        if self.event is not None:
            raise RuntimeError("this write group was already sent")
        self.event = WriteEvent(ops=self.ops, **self._fields)
        self._producer.send(self.event)
        return self.event

    def __enter__(self) -> "WriteGroup":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None and self.event is None:
            self.send()


# ---- CLI -----------------------------------------------------------------

def _pairs(items: list[str] | None, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--{what} {item!r}: expected NAME=VALUE")
        try:
            out[name] = json.loads(raw)  # numbers, true/false/null, quoted strings
        except ValueError:
            out[name] = raw
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--region", required=True, help="the write's home region (its topic is <prefix>writes.<region>)")
    p.add_argument("--table", required=True, help="an allow-listed table of the config")
    p.add_argument("--op", required=True, choices=[o.value for o in Op], help="the row operation")
    p.add_argument("--key", action="append", metavar="COL=VALUE", required=True,
                   help="a key column's value (repeat for each key column); VALUE is JSON or a plain string")
    p.add_argument("--data", action="append", metavar="COL=VALUE",
                   help="a column's value (repeat); required except for delete")
    p.add_argument("--policy", choices=[x.value for x in Policy], default="hold",
                   help="while the region is down: hold it (default), fail over, or shed it")
    p.add_argument("--fallback", action="append", metavar="REGION", dest="fallbacks",
                   help="a fallback region for --policy failover (repeat, in order)")
    p.add_argument("--ordering-key", metavar="KEY",
                   help="Kafka key instead of <table>/<key>: writes sharing it apply in order")
    p.add_argument("--id", help="write id (UUID); default: a new one")
    p.add_argument("--json", action="store_true",
                   help="accepted for every data command's sake: the output is always one JSON object")


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    try:
        key, data = _pairs(args.key, "key"), _pairs(args.data, "data") or None
        wid = uuid.UUID(args.id) if args.id else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.table not in cfg.tables:
        raise UsageError(f"--table: {args.table!r} is not in the config's tables")
    logging.getLogger(rdkafka_log.name).disabled = True  # the one-line error below says it all
    timeout_s = 15
    producer = WriteProducer(cfg, **{"message.timeout.ms": timeout_s * 1000})
    try:
        token = producer.write(args.region, args.table, args.op, key, data, policy=args.policy,
                               fallback_regions=args.fallbacks, id=wid, ordering_key=args.ordering_key)
        ev = token.event
        producer.flush(timeout_s + 5)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"{'.'.join(map(str, err['loc'])) or 'write'}: {err['msg']}") from None
    except KafkaDeliveryError as exc:
        producer._producer.purge()  # nothing left to deliver: exit now, not after librdkafka's own wait
        raise UsageError(str(exc)) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps({"id": str(ev.id), "topic": cfg.topic("writes", ev.region), "key": ev.kafka_key().decode(),
                      "token": str(token)}))
    return 0

