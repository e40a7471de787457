"""The Redis write-through format, shared by the router (writer) and RegionalReader (reader).

It lives in ``core`` because both sides use it; :mod:`regionguard_client.cache`
re-exports it for applications.

One key per row: ``rg:<region>:<table>:<key values joined by "/">``, the key
values taken in sorted column order (like :func:`regionguard_client.core.models.entity_key`),
with ``%`` and ``/`` inside a value percent-encoded so keys stay unambiguous.
The value is the row as a JSON object; the key's TTL is ``redis.ttl_s``, set
on every write, so the age of a cached row is ``ttl_s - remaining TTL`` and
needs no extra field (:func:`cache_age_s`).

The router, after a batch commits::

    from regionguard_client.core.cache import cache_key, row_to_cache
    pipe = redis.pipeline(transaction=False)
    for w in applied:
        k = cache_key(w.region, w.table, w.key)
        if w.op == "delete":
            pipe.delete(k)
        else:
            pipe.set(k, row_to_cache(w.row()), ex=cfg.redis.ttl_s)
    await pipe.execute()

(An update carries only the changed columns; write the full row when known,
or delete the key so readers fall back to the database.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from uuid import UUID

__all__ = ["KEY_PREFIX", "cache_key", "row_to_cache", "row_from_cache", "cache_age_s"]

KEY_PREFIX = "rg"


def _part(v: Any) -> str:
    return str(v).replace("%", "%25").replace("/", "%2F")


def cache_key(region: str, table: str, key: Mapping[str, Any]) -> str:
    """``rg:<region>:<table>:<values of key, sorted by column name, joined by "/">``."""
    if not key:
        raise ValueError("cache_key needs at least one key column")
    return f"{KEY_PREFIX}:{region}:{table}:" + "/".join(_part(key[k]) for k in sorted(key))


def _default(v: Any) -> Any:
    if isinstance(v, (datetime, date, time)):
        return v.isoformat()
    if isinstance(v, (Decimal, UUID)):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    return str(v)


def row_to_cache(row: Mapping[str, Any]) -> bytes:
    """The row as compact JSON (dates ISO 8601, decimals and UUIDs as strings)."""
    return json.dumps(dict(row), default=_default, separators=(",", ":")).encode()


def row_from_cache(raw: bytes | str) -> dict[str, Any]:
    row = json.loads(raw)
    if not isinstance(row, dict):
        raise ValueError("cached value is not a JSON object")
    return row


def cache_age_s(ttl_s: float, remaining_ms: int | None) -> float | None:
    """Age of a cached row from its remaining TTL (``PTTL``); None when it has no TTL."""
    if remaining_ms is None or remaining_ms < 0:
        return None
    return max(0.0, ttl_s - remaining_ms / 1000.0)
