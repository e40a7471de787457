"""Event models: the JSON contract of every topic (DESIGN.md).

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


Scalar = str | int | float | bool | None


class WriteEvent(BaseModel):
    """One write to one row of one region. ``id`` is the idempotency key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: uuid.UUID
    region: str = Field(min_length=1, max_length=63)
    table: str = Field(min_length=1, max_length=63)
    op: Op
    key: dict[str, Scalar] = Field(min_length=1)
    data: dict[str, Any] | None = None
    policy: Policy = Policy.hold
    fallback_regions: list[str] = Field(default_factory=list)
    expires_at: AwareDatetime | None = None
    created_at: AwareDatetime = Field(default_factory=utcnow)
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _data_required(self):
        if self.op is not Op.delete and not self.data:
            raise ValueError(f"data is required for op {self.op.value}")
        return self

    def row(self) -> dict[str, Any]:
        """Key and data merged: the row as the table should hold it."""
        return {**(self.data or {}), **self.key}

    def kafka_key(self) -> bytes:
        return entity_key(self.table, self.key)


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
