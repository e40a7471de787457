"""Decoding and checking incoming write events (pure, no I/O).

A record either becomes a :class:`WireWrite` or a :class:`BadWrite` with a
dead-letter reason. Nothing here raises for bad input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .config import Config
from .errors import BadWrite
from .held import OWN_HEADERS
from . import wire
from .models import SCHEMA_VERSION, DeadReason, Op
from .wire import WireWrite
from .sql import TableSchema


@dataclass(slots=True)
class Record:
    """A Kafka record as the services see it, detached from the client library.

    ``headers`` is filled up front for records without a value only (see core/readahead.py);
    a record with a value reads them from ``source`` (the client's message) the first time
    :meth:`header` asks, which only the rare record that needs them pays for.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None = None
    source: Any = field(default=None, repr=False, compare=False)  # has ``headers()``; None: no more to read

    def header(self, name: str) -> bytes | None:
        if self.headers is None and self.source is not None:
            self.headers = self.source.headers() or []
        for k, v in self.headers or ():
            if k == name:
                return v
        return None

    def carried_headers(self) -> list[tuple[str, bytes]]:
        """The headers every copy of this write carries on: the producer's, a W3C ``traceparent``
        among them, less the ones regionguard sets itself (a producer must not forge those:
        ``rg-applied-in`` or ``rg-verify`` would change what the replayer does)."""
        if self.headers is None and self.source is not None:
            self.headers = self.source.headers() or []
        return [(k, v) for k, v in self.headers or () if k not in OWN_HEADERS]


def _classify_invalid(raw: bytes, exc: Exception) -> BadWrite:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as jexc:
        return BadWrite(DeadReason.invalid_json, f"not JSON: {str(jexc)[:120]}")
    if not isinstance(doc, dict):
        return BadWrite(DeadReason.schema, "event must be a JSON object")
    return BadWrite(DeadReason.schema, str(exc)[:300])


_TOO_DEEP = "nested too deeply to decode"


def decode_write(raw: bytes | None, *, region: str, cfg: Config) -> WireWrite | BadWrite:
    """Parse and check one record value against the contract and allow-list; never raises.

    An error nobody foresaw while reading one record is that record's dead letter (``poison``,
    naming the error), never a stopped service: the record was not committed, so a crash would
    meet it again at every start (issue 25, "one rule for the unknown").
    """
    try:
        return _decode_checked(raw, region=region, cfg=cfg)
    except RecursionError:
        # msgspec and json recurse once per level of nesting: a small record a thousand levels
        # deep exhausts the stack (seen: 2.5 KB). Bad input, not a reason to stop the service.
        return BadWrite(DeadReason.schema, _TOO_DEEP)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        return BadWrite(DeadReason.poison, f"decoding raised {type(exc).__name__}: {str(exc)[:200]}")


def _decode_checked(raw: bytes | None, *, region: str, cfg: Config) -> WireWrite | BadWrite:
    if raw is None:
        return BadWrite(DeadReason.invalid_json, "empty record value")
    try:
        w = wire.decode(raw)  # the hot path: see core/wire.py
    except msgspec.ValidationError as exc:
        return BadWrite(DeadReason.schema, str(exc)[:300])
    except msgspec.DecodeError as exc:
        return _classify_invalid(raw, exc)
    if w.schema_version > SCHEMA_VERSION:
        return BadWrite(DeadReason.schema, f"event schema_version {w.schema_version} is newer than this release "
                                           f"reads ({SCHEMA_VERSION}): upgrade routers and replayers, then redrive")
    if w.region != region:
        return BadWrite(DeadReason.schema, f"region {w.region!r} does not match topic region {region!r}")
    if w.fallback_regions:
        for fb in w.fallback_regions:
            if fb not in cfg.regions:
                return BadWrite(DeadReason.schema, f"fallback region {fb!r} is not configured")
    rules = _rules(cfg)
    if w.ops is None:
        return _check_row(w, rules, region) or w
    for i, op in enumerate(w.ops):
        bad = _check_row(op, rules, region)
        if bad is not None:  # the whole group goes: nothing of it may apply
            return BadWrite(bad.reason, f"ops[{i}]: {bad.detail}")
    return w


def _check_row(w, rules: dict[str, "_TableRule"], region: str) -> BadWrite | None:
    """The allow-list checks of one row operation (a single-row event or one op of a group)."""
    rule = rules.get(w.table)
    if rule is None:
        return BadWrite(DeadReason.unknown_table, f"table {w.table!r} is not in the allow-list")
    if rule.allowed is not None and region not in rule.allowed:
        return BadWrite(DeadReason.schema, f"table {w.table!r} may not be stored in region {region!r} "
                                           f"(tables.{w.table}.allowed_regions)")
    if w.key.keys() != rule.key:  # the common case is one comparison of two small sets
        missing = [k for k in rule.key_order if k not in w.key]
        if missing:
            return BadWrite(DeadReason.schema, f"key column {missing[0]!r} missing")
        extra = next(k for k in w.key if k not in rule.key)
        return BadWrite(DeadReason.unknown_column, f"{extra!r} is not a key column of {w.table!r}")
    if rule.columns is not None:
        bad = _first_unknown(w, rule.columns)
        if bad is not None:  # "" is a column name too, and falsy
            return BadWrite(DeadReason.unknown_column, f"column {bad!r} is not allowed for {w.table!r}")
    if rule.version and w.op is not _DELETE and (w.data or {}).get(rule.version) is None:
        return BadWrite(DeadReason.schema, f"versioned table {w.table!r} needs data.{rule.version}")
    return None


_DELETE = Op.delete


@dataclass(frozen=True, slots=True)
class _TableRule:
    key: frozenset[str]
    key_order: tuple[str, ...]
    version: str | None
    columns: frozenset[str] | None
    allowed: frozenset[str] | None  # data residency: regions that may hold the rows


_RULES: tuple = (None, {})  # (config, rules), replaced whole so threads never see a mismatched pair


def _rules(cfg: Config) -> dict[str, _TableRule]:
    """Per-table checks precomputed once per (frozen) config; holding the config keeps `is` exact."""
    global _RULES
    cached_cfg, rules = _RULES
    if cached_cfg is not cfg:
        rules = {name: _TableRule(frozenset(t.key), t.key, t.version,
                                  frozenset(t.columns) if t.columns is not None else None,
                                  frozenset(t.allowed_regions) if t.allowed_regions is not None else None)
                 for name, t in cfg.tables.items()}
        _RULES = (cfg, rules)
    return rules


def _first_unknown(w, allowed: frozenset[str]) -> str | None:
    if not w.data or w.data.keys() <= allowed:
        return None
    return next(c for c in w.data if c not in allowed)


def check_columns(w, schema: TableSchema) -> BadWrite | None:
    """Second check of a row operation, against the columns the region's database really has."""
    bad = _first_unknown(w, schema.columns)
    if bad is not None:
        return BadWrite(DeadReason.unknown_column, f"column {bad!r} is not allowed for {w.table!r}")
    if w.op is Op.update and not (w.data or {}).keys() - set(schema.key):
        return BadWrite(DeadReason.schema, "update needs at least one non-key column")
    return None
