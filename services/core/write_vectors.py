"""Language-neutral WriteEvent test vectors: valid and invalid record values and what the router
must do with each (``schemas/vectors/write-events.json``).

The cases and their expected outcomes are written here, by hand, as the contract says them
(docs/contract.md, "WriteEvent" and "DeadLetter"); the file is rendered from them, and
``tests/unit/test_write_vectors.py`` checks every case against the router's decoder
(:func:`regionguard.core.writes.decode_write`) and the pydantic model, and that the committed
file is the rendering, so neither can drift from the code. A producer in any language can use
the accepted cases to check its events and keys, and the rejected ones to know what it must
never send::

    python -m regionguard.core.write_vectors --write   # refresh the vectors file

Outcomes: ``accepted`` (decoded; ``kafka_key`` is the key the producer must use) or
``dead_letter`` with the reason the router gives it. ``stage`` says why: ``event`` (the value
alone breaks ``schemas/write-event.schema.json``: any client-side check finds it) or ``config``
(a valid event the vectors' config refuses: table/column allow-list, key columns, regions,
versioned table). Outcomes decided later by the router (``shed`` and ``expired`` depend on the
region's state and the clock, ``constraint`` and ``poison`` on the database) are not vectors.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

VECTORS_PATH = Path(__file__).resolve().parents[2] / "schemas" / "vectors" / "write-events.json"

#: The config every case is decoded against (the record comes from ``rg.writes.us-east-1``).
CONFIG: dict[str, Any] = {
    "regions": {"us-east-1": {"dsn": "postgresql://app@db-east/app", "fallbacks": ["us-west-2"]},
                "us-west-2": {"dsn": "postgresql://app@db-west/app", "fallbacks": ["us-east-1"]}},
    "tables": {
        "users": {"key": ["id"], "version": "version"},
        "orders": {"key": ["id"], "columns": ["id", "user_id", "amount", "status"]},
        "order_lines": {"key": ["order_id", "line"]},
        "docs": {"key": ["path"]},
    },
}
TOPIC_REGION = "us-east-1"

_ID = "7f0c3f1e-5a0e-4c83-9d1a-0b8f3f1c2d4e"
_AT = "2026-11-26T10:00:00Z"


def _replace(doc: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with ``fields`` replacing its fields (``_DROP``-valued: removing them)."""
    for k, v in fields.items():
        if v is _DROP:
            doc.pop(k, None)
        else:
            doc[k] = v
    return doc


def _ev(**fields: Any) -> dict[str, Any]:
    """A minimal valid upsert of users/42, with ``fields`` replacing (None-valued: removing) fields."""
    ev = {"id": _ID, "region": "us-east-1", "table": "users", "op": "upsert", "key": {"id": 42},
          "data": {"name": "Ada", "version": 7}, "created_at": _AT}
    return _replace(ev, fields)


_DROP = object()
ACCEPTED = ("accepted", None)


def _dead(reason: str, stage: str) -> tuple[str, str]:
    return ("dead_letter", f"{reason}:{stage}")


# (name, value: dict (sent as compact JSON) | str (exact UTF-8 text) | bytes | None (no value), outcome)
CASES: tuple[tuple[str, Any, tuple[str, str | None]], ...] = (
    # ---- accepted
    ("minimal upsert", _ev(), ACCEPTED),
    ("every field", _ev(policy="failover", fallback_regions=["us-west-2"], expires_at="2026-11-27T10:00:00Z",
                        meta={"trace": "abc"}), ACCEPTED),
    ("created_at may be left out", _ev(created_at=_DROP), ACCEPTED),
    ("timestamps with an offset", _ev(created_at="2026-11-26T11:00:00+01:00",
                                      expires_at="2026-11-26T12:00:00.123456-05:00"), ACCEPTED),
    ("delete needs no data", _ev(op="delete", data=_DROP), ACCEPTED),
    ("delete of a versioned table may carry the version", _ev(op="delete", data={"version": 8}), ACCEPTED),
    ("insert", _ev(op="insert"), ACCEPTED),
    ("update", _ev(op="update", data={"name": "Grace", "version": 8}), ACCEPTED),
    ("policy shed (dead-lettered as shed only while the region is not closed)", _ev(policy="shed"), ACCEPTED),
    ("composite key, columns in any order: the Kafka key takes them sorted",
     _ev(table="order_lines", key={"order_id": 9, "line": 2}, data={"sku": "A1", "qty": 2}), ACCEPTED),
    ('"/" inside a key value', _ev(table="docs", key={"path": "a/b/c"}, data={"body": "x"}), ACCEPTED),
    ("unicode key and data", _ev(table="docs", key={"path": "Zoë/東京/🚀"}, data={"body": "ünïcødé"}), ACCEPTED),
    ("integer key beyond 2^53", _ev(table="orders", key={"id": 2**63 - 1}, data={"amount": 1}), ACCEPTED),
    ("integer key beyond 64 bits, sent as a string", _ev(table="docs", key={"path": str(2**64 + 1)},
                                                         data={"body": "x"}), ACCEPTED),
    ("negative integer key", _ev(key={"id": -1}), ACCEPTED),
    ("whitespace and key order in the JSON text do not matter",
     '{ "key": {"id": 42}, "op": "upsert", "table": "users", "region": "us-east-1",\n'
     '  "id": "7f0c3f1e-5a0e-4c83-9d1a-0b8f3f1c2d4e", "data": {"version": 7, "name": "Ada"} }', ACCEPTED),
    ("data may hold nested JSON", _ev(table="docs", key={"path": "p"}, data={"body": {"a": [1, 2]}}), ACCEPTED),
    # ---- invalid_json
    ("no value (a tombstone)", None, _dead("invalid_json", "event")),
    ("empty value", "", _dead("invalid_json", "event")),
    ("not JSON", "{this is not json", _dead("invalid_json", "event")),
    ("truncated JSON", json.dumps(_ev())[:-5], _dead("invalid_json", "event")),
    ("binary, not UTF-8", b"\x00\xff\xfe binary", _dead("invalid_json", "event")),
    # ---- schema: the event alone is wrong
    ("a JSON array", "[1, 2]", _dead("schema", "event")),
    ("a JSON string", '"users/42"', _dead("schema", "event")),
    ("id missing", _ev(id=_DROP), _dead("schema", "event")),
    ("id not a UUID", _ev(id="42"), _dead("schema", "event")),
    ("op unknown", _ev(op="merge"), _dead("schema", "event")),
    ("policy unknown", _ev(policy="maybe"), _dead("schema", "event")),
    ("data missing on upsert", _ev(data=_DROP), _dead("schema", "event")),
    ("data empty on insert", _ev(op="insert", data={}), _dead("schema", "event")),
    ("key empty", _ev(key={}), _dead("schema", "event")),
    ("key value an object", _ev(key={"id": {"n": 42}}), _dead("schema", "event")),
    ("table missing", _ev(table=_DROP), _dead("schema", "event")),
    ("table name longer than 63", _ev(table="t" * 64), _dead("schema", "event")),
    ("an unknown field", _ev(tenant="acme"), _dead("schema", "event")),
    ("created_at without a time zone", _ev(created_at="2026-11-26T10:00:00"), _dead("schema", "event")),
    ("created_at null", _ev(created_at=None), _dead("schema", "event")),
    ("expires_at not a timestamp", _ev(expires_at="tomorrow"), _dead("schema", "event")),
    # ---- schema: valid events the config refuses
    ("region other than the topic's", _ev(region="us-west-2"), _dead("schema", "config")),
    ("fallback region not configured", _ev(policy="failover", fallback_regions=["mars-1"]),
     _dead("schema", "config")),
    ("versioned table without the version", _ev(data={"name": "Ada"}), _dead("schema", "config")),
    ("a key column missing", _ev(table="order_lines", key={"order_id": 9}, data={"qty": 1}),
     _dead("schema", "config")),
    # ---- unknown_table / unknown_column
    ("table not in the allow-list", _ev(table="secrets", key={"id": 1}, data={"x": 1}),
     _dead("unknown_table", "config")),
    ("an extra key column", _ev(key={"id": 42, "tenant": "acme"}), _dead("unknown_column", "config")),
    ("a data column outside the table's column allow-list",
     _ev(table="orders", key={"id": 9}, data={"amount": 1, "is_admin": True}), _dead("unknown_column", "config")),
)


def _group(**fields: Any) -> dict[str, Any]:
    """A valid atomic group (an order and two lines, docs/contract.md), with ``fields`` replacing fields."""
    ev = {"id": _ID, "region": "us-east-1", "ordering_key": "user/42",
          "ops": [{"table": "orders", "op": "insert", "key": {"id": 9}, "data": {"user_id": 42, "amount": 30}},
                  {"table": "order_lines", "op": "insert", "key": {"order_id": 9, "line": 1}, "data": {"qty": 2}},
                  {"table": "order_lines", "op": "insert", "key": {"order_id": 9, "line": 2}, "data": {"qty": 1}}],
          "created_at": _AT}
    return _replace(ev, fields)


def _with_op(i: int, **fields: Any) -> list[dict[str, Any]]:
    """The group's ops with op ``i`` changed (None-valued fields: removed)."""
    ops = [dict(o) for o in _group()["ops"]]
    _replace(ops[i], fields)
    return ops


GROUP_CASES: tuple[tuple[str, Any, tuple[str, str | None]], ...] = (
    ("atomic group: an order and its lines, keyed by ordering_key", _group(), ACCEPTED),
    ("group with every op kind", _group(ops=[
        {"table": "users", "op": "upsert", "key": {"id": 42}, "data": {"name": "Ada", "version": 8}},
        {"table": "orders", "op": "update", "key": {"id": 9}, "data": {"status": "paid"}},
        {"table": "order_lines", "op": "delete", "key": {"order_id": 9, "line": 2}},
        {"table": "docs", "op": "insert", "key": {"path": "receipts/9"}, "data": {"body": "ok"}}],
        policy="failover", fallback_regions=["us-west-2"]), ACCEPTED),
    ("group of one op", _group(ops=_group()["ops"][:1]), ACCEPTED),
    ("group of 1,000 ops (the most)", _group(ops=[
        {"table": "docs", "op": "delete", "key": {"path": f"p{i}"}} for i in range(1000)]), ACCEPTED),
    ("ordering_key on a single-row write is its Kafka key", _ev(ordering_key="user/42"), ACCEPTED),
    ("group mixing ops with table", _group(table="orders"), _dead("schema", "event")),
    ("group mixing ops with key", _group(key={"id": 9}), _dead("schema", "event")),
    ("group without ordering_key", _group(ordering_key=_DROP), _dead("schema", "event")),
    ("ordering_key empty", _group(ordering_key=""), _dead("schema", "event")),
    ("ops empty", _group(ops=[]), _dead("schema", "event")),
    ("group of 1,001 ops", _group(ops=[
        {"table": "docs", "op": "delete", "key": {"path": f"p{i}"}} for i in range(1001)]), _dead("schema", "event")),
    ("group op without data", _group(ops=_with_op(1, data=_DROP)), _dead("schema", "event")),
    ("group op with an unknown field", _group(ops=_with_op(0, region="us-east-1")), _dead("schema", "event")),
    ("group op on a table outside the allow-list", _group(ops=_with_op(2, table="secrets")),
     _dead("unknown_table", "config")),
    ("group op with a column outside the allow-list", _group(ops=_with_op(0, data={"amount": 1, "is_admin": True})),
     _dead("unknown_column", "config")),
    ("group op on a versioned table without the version", _group(ops=[
        {"table": "users", "op": "upsert", "key": {"id": 42}, "data": {"name": "Ada"}}]), _dead("schema", "config")),
)
CASES = CASES + GROUP_CASES


def _value(v: Any) -> dict[str, Any]:
    if v is None:
        return {"value_utf8": None}
    if isinstance(v, bytes):
        return {"value_base64": base64.b64encode(v).decode()}
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    return {"value_utf8": text}


def case_bytes(case: dict[str, Any]) -> bytes | None:
    """The exact record value of a rendered case."""
    if "value_base64" in case:
        return base64.b64decode(case["value_base64"])
    return None if case["value_utf8"] is None else case["value_utf8"].encode("utf-8")


def vectors() -> dict[str, Any]:
    from .models import entity_key

    cases = []
    for name, value, (outcome, why) in CASES:
        case: dict[str, Any] = {"name": name, **_value(value), "outcome": outcome}
        if outcome == "accepted":
            doc = value if isinstance(value, dict) else json.loads(value)
            key = doc.get("ordering_key")  # the Kafka key: ordering_key when given, else <table>/<key values>
            case["kafka_key"] = key if key is not None else entity_key(doc["table"], doc["key"]).decode()
        else:
            reason, stage = why.split(":")
            case["reason"], case["stage"] = reason, stage
        cases.append(case)
    return {
        "description": "regionguard WriteEvent test vectors: record values on rg.writes.<topic_region> and what "
                       "the router does with each, under `config`. Generated by `python -m "
                       "regionguard.core.write_vectors --write`; do not edit.",
        "outcomes": {"accepted": "decoded and applied (kafka_key: the key the producer must give the record: "
                                 "ordering_key when the event has one, else <table>/<key values>)",
                     "dead_letter": "published to rg.dead-letter with `reason`; stage `event`: the value alone "
                                    "breaks schemas/write-event.schema.json; stage `config`: a valid event the "
                                    "config refuses"},
        "not_covered": "shed and expired (decided by the region's state and the clock), constraint and poison "
                       "(decided by the database) happen after decoding",
        "topic_region": TOPIC_REGION,
        "config": CONFIG,
        "cases": cases,
    }


def render() -> str:
    return json.dumps(vectors(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m regionguard.core.write_vectors", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write the vectors to {VECTORS_PATH}")
    args = ap.parse_args(argv)
    if args.write:
        VECTORS_PATH.parent.mkdir(parents=True, exist_ok=True)
        VECTORS_PATH.write_text(render(), encoding="utf-8")
        print(f"wrote {VECTORS_PATH}")
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
