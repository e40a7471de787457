"""Event models: the JSON contract of every topic (docs/contract.md).

``regionguard schemas`` writes their JSON Schemas to ``schemas/``.
"""

from __future__ import annotations

import base64
import enum
import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Op(str, enum.Enum):
    insert = "insert"
    upsert = "upsert"
    update = "update"
    delete = "delete"


class Policy(str, enum.Enum):
    hold = "hold"
    failover = "failover"
    shed = "shed"


class State(str, enum.Enum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class DeadReason(str, enum.Enum):
    invalid_json = "invalid_json"
    schema = "schema"
    unknown_table = "unknown_table"
    unknown_column = "unknown_column"
    constraint = "constraint"
    shed = "shed"
    expired = "expired"
    poison = "poison"
    too_large = "too_large"


Scalar = str | int | float | bool | None


#: The most row operations one atomic write group may carry (docs/contract.md).
MAX_GROUP_OPS = 1000
#: The WriteEvent format version this release reads. A producer may omit ``schema_version`` (it means
#: 1); a record of a newer version is a ``schema`` dead letter naming both versions, so it can be
#: redriven once routers and replayers are upgraded (docs/production.md, "Upgrades").
SCHEMA_VERSION = 1


#: JSON Schema of "data is required (non-empty) unless op is delete"
DATA_UNLESS_DELETE = {"if": {"required": ["op"], "properties": {"op": {"not": {"const": "delete"}}}},
                      "then": {"required": ["data"], "properties": {"data": {"type": "object", "minProperties": 1}}}}


class RowOp(BaseModel):
    """One row operation of an atomic write group: checked like a single-row write."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=DATA_UNLESS_DELETE)

    table: str = Field(min_length=1, max_length=63)
    op: Op
    key: dict[str, Scalar] = Field(min_length=1)
    data: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _data_required(self):
        if self.op is not Op.delete and not self.data:
            raise ValueError(f"data is required for op {self.op.value}")
        return self

    def row(self) -> dict[str, Any]:
        return {**(self.data or {}), **self.key}


def _write_event_schema(schema: dict[str, Any]) -> None:
    """JSON Schema of the two shapes: a single-row write or a group, never both, never null fields."""
    props = schema["properties"]
    for name in ("table", "op", "key", "ops", "ordering_key"):
        not_null = [t for t in props[name].pop("anyOf") if t.get("type") != "null"]
        props[name].update(not_null[0])
        props[name].pop("default", None)
    row = ("table", "op", "key")
    schema["oneOf"] = [
        {"title": "single-row write", "required": ["table", "op", "key"], "not": {"required": ["ops"]},
         **DATA_UNLESS_DELETE},
        {"title": "atomic write group", "required": ["ops", "ordering_key"],
         "not": {"anyOf": [*({"required": [f]} for f in row),
                           {"required": ["data"], "properties": {"data": {"type": "object"}}}]}},
    ]


class WriteEvent(BaseModel):
    """One write: a row (``table``/``op``/``key``/``data``) or an atomic group (``ops``).

    ``id`` is the idempotency key, of the whole group for a group.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_write_event_schema)

    id: uuid.UUID
    region: str = Field(min_length=1, max_length=63)
    table: str | None = Field(None, min_length=1, max_length=63)
    op: Op | None = None
    key: dict[str, Scalar] | None = Field(None, min_length=1)
    data: dict[str, Any] | None = None
    ops: list[RowOp] | None = Field(None, min_length=1, max_length=MAX_GROUP_OPS, description=(
        "An atomic write group: applied in one transaction, in this order, all or nothing. "
        "Excludes table, op, key and data; needs ordering_key."))
    ordering_key: str | None = Field(None, min_length=1, max_length=256, description=(
        "The Kafka key instead of <table>/<key>: events sharing it apply in order. Required with ops."))
    policy: Policy = Policy.hold
    fallback_regions: list[str] = Field(default_factory=list)
    expires_at: AwareDatetime | None = None
    created_at: AwareDatetime = Field(default_factory=utcnow)
    meta: dict[str, Any] = Field(default_factory=dict)
    # never serialized: what this release writes is version 1, and a router older than the field
    # would refuse an event carrying it (unknown fields are a schema dead letter)
    schema_version: int = Field(SCHEMA_VERSION, ge=1, exclude=True, description=(
        "The event format's version (absent: 1). A newer version than the router reads is a schema "
        "dead letter, redrivable after the upgrade."))

    @model_validator(mode="after")
    def _shape(self):
        problem = shape_problem(self)
        if problem:
            raise ValueError(problem)
        return self

    def row(self) -> dict[str, Any]:
        """Key and data merged: the row as the table should hold it (single-row events)."""
        return {**(self.data or {}), **(self.key or {})}

    def kafka_key(self) -> bytes:
        return kafka_key(self)


def shape_problem(w: Any) -> str | None:
    """What makes an event neither a complete single-row write nor a proper group (pydantic and wire share it)."""
    if w.ops is not None:
        mixed = [f for f in ("table", "op", "key", "data") if getattr(w, f) is not None]
        if mixed:
            return f"ops cannot be combined with {mixed[0]}"
        if w.ordering_key is None:
            return "ordering_key is required with ops"
        for i, o in enumerate(w.ops):
            if o.op is not Op.delete and not o.data:
                return f"ops[{i}]: data is required for op {o.op.value}"
        return None
    for f in ("table", "op", "key"):
        if getattr(w, f) is None:
            return f"{f} is required (or ops, for a group)"
    if w.op is not Op.delete and not w.data:
        return f"data is required for op {w.op.value}"
    return None


def row_ops(w: Any) -> tuple | list:
    """The row operations of an event: its ``ops``, or the event itself for a single-row write."""
    return (w,) if w.ops is None else w.ops


def kafka_key(w: Any) -> bytes:
    """The Kafka key of an event: its ``ordering_key`` when it has one, else :func:`entity_key`."""
    if w.ordering_key is not None:
        return w.ordering_key.encode()
    return entity_key(w.table, w.key)


def entity_key(table: str, key: dict[str, Any]) -> bytes:
    """The recommended Kafka key: ``<table>/<key values joined by "/">``.

    Values are taken in sorted column order so every producer agrees.
    """
    parts = [str(key[k]) for k in sorted(key)]
    return "/".join([table, *parts]).encode()


class RegionState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    region: str
    state: State
    since: datetime
    seq: int = Field(ge=0)
    epoch: int = Field(0, ge=0, description=(
        "Leader epoch of the health instance that published it: each new leader takes one above every "
        "epoch it has read, so a deposed leader's records (lower epoch) never win over the new leader's."))
    reason: str = ""
    observer: str = ""
    heartbeat: bool = False
    at: datetime = Field(default_factory=utcnow)
    stats: dict[str, Any] = Field(default_factory=dict)

    def order(self) -> tuple[int, int]:
        """Readers keep, per region, the record with the highest ``(epoch, seq)``."""
        return (self.epoch, self.seq)


class FailoverEvent(BaseModel):
    """One decision of one service, appended to ``rg.failover-events``."""

    model_config = ConfigDict(extra="ignore")

    kind: str = Field(description="transition, hold_started, replay_started, replay_progress, replay_finished, ...")
    region: str
    service: str
    at: datetime = Field(default_factory=utcnow)
    detail: dict[str, Any] = Field(default_factory=dict)


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="ignore")

    reason: DeadReason
    detail: str
    topic: str
    partition: int
    offset: int
    original: str = Field(description="The exact original bytes: UTF-8 text, or base64 when original_encoding says so.")
    original_encoding: Literal["text", "base64"] = "text"
    original_truncated: bool = Field(
        False, description="True when `original` is only the start of the record (the whole would not fit in the "
                           "dead-letter topic); `regionguard dead-letters redrive` then reads the record from "
                           "topic/partition/offset while the topic retains it.")
    original_size: int | None = Field(None, description="The original record value's size in bytes.")
    key: str | None = None
    region: str | None = None
    write_id: str | None = None
    at: datetime = Field(default_factory=utcnow)

    @staticmethod
    def encode_original(raw: bytes | None) -> tuple[str, Literal["text", "base64"]]:
        raw = raw or b""
        try:
            return raw.decode("utf-8"), "text"
        except UnicodeDecodeError:
            return base64.b64encode(raw).decode(), "base64"

    def original_bytes(self) -> bytes:
        if self.original_encoding == "base64":
            return base64.b64decode(self.original)
        return self.original.encode("utf-8")


class FeatureFlags(BaseModel):
    model_config = ConfigDict(extra="ignore")

    region: str
    disabled: list[str] = Field(default_factory=list)
    seq: int = Field(ge=0)
    since: datetime
    reason: str = ""
    heartbeat: bool = False
    at: datetime = Field(default_factory=utcnow)


class Observation(BaseModel):
    """One probe result (from a health instance or a router's passive check)."""

    model_config = ConfigDict(extra="ignore")

    region: str
    observer: str
    ok: bool
    latency_s: float = 0.0
    kind: str = Field("ok", description="ok, timeout, refused, reset, auth, read_only, recovery, error")
    at: datetime = Field(default_factory=utcnow)


class ControlRecord(BaseModel):
    """Internal coordination on ``rg.control`` (drained markers, readiness, ...)."""

    model_config = ConfigDict(extra="ignore")

    kind: str
    region: str
    partition: int | None = None
    offset: int | None = None
    service: str = ""
    at: datetime = Field(default_factory=utcnow)
    detail: dict[str, Any] = Field(default_factory=dict)


SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "write-event": WriteEvent,
    "region-state": RegionState,
    "failover-event": FailoverEvent,
    "dead-letter": DeadLetter,
    "feature-flags": FeatureFlags,
    "observation": Observation,
    "control": ControlRecord,
}
