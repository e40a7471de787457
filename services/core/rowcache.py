"""Redis write-through of applied rows, for the RegionalReader's last tier.

Best effort by design: Redis is a cache. A failed cache write is logged and
counted, never retried into the hot path, and never blocks an offset
commit. Rows come from the apply statements' RETURNING (the row as stored,
so stale writes never reach the cache); deletes remove the key. Rows of a
table whose ``allowed_regions`` do not include ``redis.region`` are never
written (data residency).
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from .cache import cache_key, row_to_cache
from .config import Config
from .models import Op
from .supervise import swallowed

log = logging.getLogger(__name__)

CACHE_WRITES = Counter("regionguard_cache_writes_total", "Rows written through to Redis", ["region", "outcome"])


class RowCache:
    def __init__(self, cfg: Config) -> None:
        import redis.asyncio as redis  # optional dependency: only when redis.url is set

        self.cfg = cfg
        self.client = redis.from_url(cfg.redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)

    @staticmethod
    def maybe(cfg: Config) -> "RowCache | None":
        return RowCache(cfg) if cfg.redis.url else None

    async def write(self, region: str, rows: list[tuple[str, Op, dict]]) -> None:
        if not rows:
            return
        ttl = self.cfg.redis.ttl_s
        pipe = self.client.pipeline(transaction=False)
        for table, op, row in rows:
            if not self.cfg.cacheable(table):
                continue  # data residency: the cache lives outside the table's allowed_regions
            key_cols = self.cfg.tables[table].key
            k = cache_key(region, table, {c: row.get(c) for c in key_cols})
            if op is Op.delete:
                pipe.delete(k)
            else:
                pipe.set(k, row_to_cache(row), ex=ttl)
        try:
            await pipe.execute()
            CACHE_WRITES.labels(region, "ok").inc(len(rows))
        except Exception as exc:  # noqa: BLE001 - a cache must never break the write path
            CACHE_WRITES.labels(region, "error").inc(len(rows))
            log.warning("region %s: Redis write-through failed (%s); readers fall back to the databases",
                        region, type(exc).__name__)

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception as exc:  # noqa: BLE001 - closing goes on (reported)
            swallowed("rowcache", exc, what="closing the Redis client", logger=log)
