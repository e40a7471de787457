"""Reads that degrade instead of failing: ``RegionalReader``.

For a region, a read tries its tiers in order (``order=``, default
``home, replicas, fallbacks, redis``):

* ``home``      the region's own database (``regions.<r>.dsn``);
* ``replicas``  the region's ``read_replicas`` DSNs;
* ``fallbacks`` the primaries of the regions in ``regions.<r>.fallbacks``;
* ``redis``     the row cache the router keeps write-through (``redis.url``;
  point reads by full key only, see :mod:`regionguard_client.cache`).

Data residency: a table with ``allowed_regions`` is read only from regions
among them (a fallback outside is never tried) and from Redis only when
``redis.region`` is among them.

A tier is skipped without any I/O when its region's breaker is open (from
:class:`~regionguard_client.views.RegionStates`), or when this reader saw it
fail at connection level less than ``failure_cooldown_s`` ago. Each target
(region primary or replica) has a bulkhead: a bounded asyncpg pool plus an
``asyncio.Semaphore``; when all its slots are busy the tier is rejected at
once (no queueing), so a slow region can't pile up the application's
requests. Every tier attempt has its own timeout.

Every answer is a :class:`ReadResult` saying which tier and target served it
and how stale it may be:

* home: ``stale_by_s=0.0``;
* a replica: its replay lag, ``now() - pg_last_xact_replay_timestamp()``
  (``None`` when it is not a streaming standby);
* a fallback region: ``None`` -- another region's copy, staleness unknown;
* Redis: the cached row's age, from its remaining TTL.

``degraded`` is true whenever anything but the home database answered. When
no tier can answer, :class:`ReadUnavailable` lists every attempt.

Only allow-listed tables are read; columns must be in the table's
``columns`` allow-list when the config has one (otherwise the database's
columns are the allow-list and an unknown one is refused by PostgreSQL and
raised as :class:`BadRead`). Identifiers go through
:func:`regionguard_client.core.sql.quote_ident`, values are bind parameters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg

from .core.config import Config, statement_cache_size
from .core.errors import BadWrite, RegionGuardError, RegionUnavailable, classify_db_error
from .core.sql import quote_ident
from .core.supervise import swallowed
from .core.cache import cache_age_s, cache_key, row_from_cache
from .consistency import VISIBLE_SQL, BadToken, WriteToken

log = logging.getLogger("regionguard.client.reader")  # its name before the move (loggers stay in the regionguard tree)

__all__ = ["RegionalReader", "ReadResult", "TierAttempt", "ReadUnavailable", "NotVisible", "BadRead", "BulkheadFull",
           "BoundReader"]

#: how often a read with ``after=`` asks the tiers again while the write is not visible yet
AFTER_RETRY_S = 0.01

TIER_NAMES = ("home", "replicas", "fallbacks", "redis")

_REPLICA_LAG = (
    "SELECT CASE WHEN pg_is_in_recovery() "
    "THEN COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0)::float8 END"
)


class BadRead(RegionGuardError, ValueError):
    """A read that can never succeed as asked (table/column not allowed, bad key)."""


class BulkheadFull(RegionGuardError):
    retriable = True


class ReadUnavailable(RegionGuardError):
    """No tier could answer; ``attempts`` says what happened to each."""

    retriable = True

    def __init__(self, region: str, attempts: Sequence["TierAttempt"]):
        summary = ", ".join(f"{a.tier}:{a.source}={a.outcome}" for a in attempts) or "no tiers configured"
        super().__init__(f"no tier could serve a read for region {region} ({summary})")
        self.region, self.attempts = region, tuple(attempts)


class NotVisible(ReadUnavailable):
    """``after=token`` with ``strict=True``: no tier showed the write before the deadline."""


@dataclass(frozen=True)
class TierAttempt:
    tier: str          # home | replica | fallback | redis
    source: str        # region name, "<region>/replica<i>", or "redis"
    outcome: str       # ok | breaker_open | cooldown | rejected | timeout | unavailable | error | miss | unsupported
    elapsed_s: float = 0.0
    detail: str = ""


@dataclass(frozen=True)
class ReadResult:
    rows: list[dict[str, Any]]
    tier: str                   # home | replica | fallback | redis
    region: str                 # the region the read was for
    source: str                 # who answered: a region name, "<region>/replica<i>" or "redis"
    stale_by_s: float | None    # 0.0 fresh; None unknown
    degraded: bool
    attempts: tuple[TierAttempt, ...] = ()
    # read-your-writes (``after=token``): ``read_your_writes`` when the answering tier shows the write,
    # ``stale`` when the deadline passed and it answered without it; ``eventual`` without a token
    consistency: str = "eventual"

    @property
    def row(self) -> dict[str, Any] | None:
        return self.rows[0] if self.rows else None

    @property
    def served_region(self) -> str:
        """The region whose data answered (the home region for replicas and Redis)."""
        return self.source.split("/", 1)[0] if self.tier != "redis" else self.region


@dataclass
class _Target:
    """One database the reader may use: a region primary or a replica."""

    name: str                   # region, or "<region>/replica<i>"
    tier: str                   # home | replica | fallback
    region: str                 # the region whose data it holds
    dsn: str
    breaker_region: str | None  # whose published breaker state governs it (None: replicas)


@dataclass
class _Bulkhead:
    dsn: str
    pool_size: int
    limit: int
    connect_timeout_s: float
    statement_cache_size: int = 100
    sem: asyncio.Semaphore = field(init=False)
    pool: asyncpg.Pool | None = None
    _pool_lock: asyncio.Lock = field(init=False)
    down_until: float = 0.0

    def __post_init__(self) -> None:
        self.sem = asyncio.Semaphore(self.limit)
        self._pool_lock = asyncio.Lock()

    async def get_pool(self) -> asyncpg.Pool:
        if self.pool is None:
            async with self._pool_lock:
                if self.pool is None:
                    self.pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=0,
                        max_size=self.pool_size,
                        timeout=self.connect_timeout_s,
                        command_timeout=30,
                        max_inactive_connection_lifetime=60,
                        statement_cache_size=self.statement_cache_size,
                    )
        return self.pool

    @property
    def busy(self) -> int:
        return self.limit - self.sem._value  # noqa: SLF001 - asyncio has no public getter


class RegionalReader:
    """Allow-listed reads for a region, with fallback tiers, bulkheads and timeouts.

    Create it inside the event loop that will use it (its semaphores and
    pools belong to that loop); :meth:`close` releases the pools.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        states=None,
        order: Iterable[str] = TIER_NAMES,
        tier_timeout_s: float | None = None,
        max_concurrency: int = 16,
        pool_size: int = 4,
        failure_cooldown_s: float = 1.0,
        redis: Any = None,
        after_wait_s: float = 2.0,
    ) -> None:
        self.cfg = cfg
        self.after_wait_s = after_wait_s
        self.states = states
        self.order = tuple(order)
        bad = [t for t in self.order if t not in TIER_NAMES]
        if bad:
            raise ValueError(f"unknown tier {bad[0]!r}; choose from {', '.join(TIER_NAMES)}")
        self.tier_timeout_s = tier_timeout_s if tier_timeout_s is not None else max(1.0, 2 * cfg.health.timeout_s)
        self.max_concurrency = max_concurrency
        self.pool_size = pool_size
        self.failure_cooldown_s = failure_cooldown_s
        self._bulkheads: dict[str, _Bulkhead] = {}
        self._redis = redis
        self._redis_owned = False
        self._redis_down_until = 0.0
        self.served: Counter[tuple[str, str]] = Counter()  # (region, tier) -> reads served
        self.rejected: Counter[str] = Counter()            # target -> bulkhead rejections
        self.after_looks: Counter[str] = Counter()         # region -> rounds of the tiers asked for a token's write

    # -- tiers ------------------------------------------------------------------------
    def tiers(self, region: str, table: str | None = None) -> list[tuple[str, _Target | None]]:
        """The (tier, target) plan for ``region``; target None is Redis.

        With ``table``, data residency applies: a fallback region outside the table's
        ``allowed_regions``, and Redis unless ``redis.region`` is inside them, are left out.
        """
        if region not in self.cfg.regions:
            raise BadRead(f"unknown region {region!r}")
        if table is not None and not self.cfg.allowed_in(table, region):
            raise BadRead(f"table {table!r} may not be stored in region {region!r} (allowed_regions)")
        rc = self.cfg.regions[region]
        out: list[tuple[str, _Target | None]] = []
        for t in self.order:
            if t == "home":
                out.append(("home", _Target(region, "home", region, rc.dsn, region)))
            elif t == "replicas":
                for i, dsn in enumerate(rc.read_replicas):
                    out.append(("replica", _Target(f"{region}/replica{i}", "replica", region, dsn, None)))
            elif t == "fallbacks":
                for fb in rc.fallbacks:
                    if table is None or self.cfg.allowed_in(table, fb):
                        out.append(("fallback", _Target(fb, "fallback", fb, self.cfg.regions[fb].dsn, fb)))
            elif t == "redis" and (self._redis is not None or self.cfg.redis.url):
                if table is None or self.cfg.cacheable(table):
                    out.append(("redis", None))
        return out

    def _bulkhead(self, target: _Target) -> _Bulkhead:
        bh = self._bulkheads.get(target.name)
        if bh is None:
            bh = self._bulkheads[target.name] = _Bulkhead(
                target.dsn, self.pool_size, self.max_concurrency, connect_timeout_s=self.tier_timeout_s,
                statement_cache_size=statement_cache_size(self.cfg, target.region),
            )
        return bh

    def bulkhead_busy(self, target: str) -> int:
        bh = self._bulkheads.get(target)
        return 0 if bh is None else bh.busy

    def _redis_client(self):
        if self._redis is None and self.cfg.redis.url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(self.cfg.redis.url, socket_connect_timeout=self.tier_timeout_s,
                                            socket_timeout=self.tier_timeout_s)
            self._redis_owned = True
        return self._redis

    # -- allow-list -------------------------------------------------------------------
    def _columns(self, table: str, names: Iterable[str] | None) -> list[str] | None:
        tc = self.cfg.tables.get(table)
        if tc is None:
            raise BadRead(f"table {table!r} is not allow-listed")
        if names is None:
            return list(tc.columns) if tc.columns is not None else None
        names = list(names)
        for n in names:
            if tc.columns is not None and n not in tc.columns:
                raise BadRead(f"column {n!r} is not allow-listed for table {table!r}")
            try:
                quote_ident(n)
            except ValueError as exc:
                raise BadRead(str(exc)) from None
        return names

    # -- public reads -----------------------------------------------------------------
    async def get(self, table: str, key: Mapping[str, Any], *, region: str,
                  columns: Iterable[str] | None = None, after: WriteToken | str | None = None,
                  wait_s: float | None = None, strict: bool = False) -> ReadResult:
        """The row of ``table`` with primary key ``key`` (``rows`` empty when there is none).

        ``after`` (a write's token): serve only from a tier where that write is visible, trying the
        tiers again until ``wait_s`` (default ``after_wait_s``) has passed; then answer from the first
        tier that could, marked ``consistency="stale"`` -- or raise :class:`NotVisible` if ``strict``.
        The Redis tier cannot tell, so it is not used for such reads.
        """
        tc = self.cfg.tables.get(table)
        if tc is None:
            raise BadRead(f"table {table!r} is not allow-listed")
        if set(key) != set(tc.key):
            raise BadRead(f"key of {table!r} must be exactly {list(tc.key)}, got {sorted(key)}")
        cols = self._columns(table, columns)
        sql, args = self._select_sql(table, cols, dict(key), order_by=None, limit=1)
        return await self._read(region, table, sql, args, cache=(dict(key), cols),
                                after=self._token(after), wait_s=wait_s, strict=strict)

    async def select(self, table: str, *, region: str, where: Mapping[str, Any] | None = None,
                     columns: Iterable[str] | None = None, order_by: Sequence[str] | None = None,
                     limit: int = 100, after: WriteToken | str | None = None, wait_s: float | None = None,
                     strict: bool = False) -> ReadResult:
        """Rows of ``table`` matching ``where`` (column = value, all ANDed). No Redis tier; ``after`` as in get()."""
        cols = self._columns(table, columns)
        where = dict(where or {})
        self._columns(table, where)
        if order_by is None:
            order_by = self.cfg.tables[table].key
        self._columns(table, order_by)
        if not 1 <= limit <= 10_000:
            raise BadRead("limit must be between 1 and 10000")
        sql, args = self._select_sql(table, cols, where, order_by=order_by, limit=limit)
        return await self._read(region, table, sql, args, cache=None, after=self._token(after), wait_s=wait_s,
                                strict=strict)

    def _token(self, after: WriteToken | str | None) -> WriteToken | None:
        if after is None:
            return None
        try:
            return WriteToken.coerce(after, self.cfg)
        except BadToken as exc:
            raise BadRead(str(exc)) from None

    def for_region(self, region: str, after: WriteToken | None = None, *,
                   wait_s: float | None = None) -> "BoundReader":
        """A reader of ``region``; with ``after``, its reads share one wait of ``wait_s`` (``after_wait_s``)."""
        return BoundReader(self, region, after, wait_s=wait_s)

    async def close(self) -> None:
        for bh in self._bulkheads.values():
            if bh.pool is not None:
                pool, bh.pool = bh.pool, None
                try:
                    await asyncio.wait_for(pool.close(), 2.0)
                except Exception as exc:  # noqa: BLE001 - a pool that won't close is terminated (reported)
                    swallowed("reader", exc, what="closing a pool (terminated instead)", logger=log)
                    pool.terminate()
        if self._redis_owned and self._redis is not None:
            try:
                await self._redis.aclose()
            except Exception as exc:  # noqa: BLE001 - closing goes on (reported)
                swallowed("reader", exc, what="closing the Redis client", logger=log)
            self._redis = None

    async def __aenter__(self) -> "RegionalReader":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- internals --------------------------------------------------------------------
    @staticmethod
    def _select_sql(table: str, cols: list[str] | None, where: dict[str, Any],
                    order_by: Sequence[str] | None, limit: int) -> tuple[str, list[Any]]:
        col_sql = ", ".join(quote_ident(c) for c in cols) if cols else "*"
        sql = f"SELECT {col_sql} FROM {quote_ident(table)}"
        args: list[Any] = []
        if where:
            conds = []
            for c, v in where.items():
                if v is None:
                    conds.append(f"{quote_ident(c)} IS NULL")
                else:
                    args.append(v)
                    conds.append(f"{quote_ident(c)} = ${len(args)}")
            sql += " WHERE " + " AND ".join(conds)
        if order_by:
            sql += " ORDER BY " + ", ".join(quote_ident(c) for c in order_by)
        args.append(limit)
        sql += f" LIMIT ${len(args)}"
        return sql, args

    def _breaker_open(self, region: str | None) -> bool:
        if region is None or self.states is None:
            return False
        st = self.states.state(region)
        return st is not None and st.state.value == "open"

    async def _read(self, region: str, table: str, sql: str, args: list[Any],
                    cache: tuple[dict[str, Any], list[str] | None] | None, *, after: WriteToken | None = None,
                    wait_s: float | None = None, strict: bool = False) -> ReadResult:
        if after is not None:
            return await self._read_after(region, table, sql, args, after, wait_s, strict)
        attempts: list[TierAttempt] = []
        for tier, target in self.tiers(region, table):
            if target is None:
                res = await self._try_redis(region, table, cache, attempts)
            else:
                res = await self._try_db(region, tier, target, sql, args, attempts)
            if res is not None:
                self.served[(region, tier)] += 1
                return res
        raise ReadUnavailable(region, attempts)

    async def _read_after(self, region: str, table: str, sql: str, args: list[Any], after: WriteToken,
                          wait_s: float | None, strict: bool) -> ReadResult:
        """Tiers in order, each asked whether the write is visible; again until the deadline."""
        deadline = time.monotonic() + (self.after_wait_s if wait_s is None else wait_s)
        while True:
            self.after_looks[region] += 1
            attempts: list[TierAttempt] = []
            without: ReadResult | None = None  # the first answer that lacked the write
            for tier, target in self.tiers(region, table):
                if target is None:
                    attempts.append(TierAttempt("redis", "redis", "unsupported", 0.0,
                                                "cannot tell whether a write is visible"))
                    continue
                res = await self._try_db(region, tier, target, sql, args, attempts, after=after.id)
                if res is None:
                    continue
                if res.consistency == "read_your_writes":
                    self.served[(region, tier)] += 1
                    return res
                without = without or res
            left = deadline - time.monotonic()
            if left <= 0:
                if strict or without is None:
                    raise (NotVisible if without is not None else ReadUnavailable)(region, attempts)
                self.served[(region, without.tier)] += 1
                return replace(without, consistency="stale", degraded=True, attempts=tuple(attempts))
            await asyncio.sleep(min(AFTER_RETRY_S, left))

    async def _try_db(self, region: str, tier: str, target: _Target, sql: str, args: list[Any],
                      attempts: list[TierAttempt], after: str | None = None) -> ReadResult | None:
        now = time.monotonic()
        if self._breaker_open(target.breaker_region):
            attempts.append(TierAttempt(tier, target.name, "breaker_open"))
            return None
        bh = self._bulkhead(target)
        if bh.down_until > now:
            attempts.append(TierAttempt(tier, target.name, "cooldown"))
            return None
        if bh.sem.locked():
            self.rejected[target.name] += 1
            attempts.append(TierAttempt(tier, target.name, "rejected", 0.0, "bulkhead full"))
            return None
        t0 = time.monotonic()
        async with bh.sem:
            conn = None
            broken = False
            lag: float | None = 0.0
            try:
                async with asyncio.timeout(self.tier_timeout_s):
                    pool = await bh.get_pool()
                    conn = await pool.acquire()
                    if tier == "replica":
                        lag = await conn.fetchval(_REPLICA_LAG)
                    # the inbox row commits with the write's rows: seen here, the read below sees them too
                    visible = after is None or await _visible(conn, after)
                    rows = await conn.fetch(sql, *args)
            except (TimeoutError, asyncio.TimeoutError):
                broken = True
                self._cool_down(bh)
                attempts.append(TierAttempt(tier, target.name, "timeout", time.monotonic() - t0))
                return None
            except asyncio.CancelledError:
                broken = True
                raise
            except (asyncpg.exceptions.UndefinedColumnError, asyncpg.exceptions.DataError) as exc:
                raise BadRead(f"{target.name}: {type(exc).__name__}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - classified by type
                err = classify_db_error(target.region, exc)
                if isinstance(err, BadWrite):  # a data error: asking again elsewhere won't help
                    raise BadRead(f"{target.name}: {err}") from None
                if isinstance(err, RegionUnavailable):
                    broken = True
                    self._cool_down(bh)
                attempts.append(TierAttempt(tier, target.name, "unavailable" if broken else "error",
                                            time.monotonic() - t0, str(err)[:200]))
                return None
            finally:
                if conn is not None:
                    if broken:
                        try:
                            conn.terminate()  # a half-dead socket must not go back to the pool
                        except asyncpg.InterfaceError:
                            pass  # the connection was lost and the pool has already taken it back
                    try:
                        await bh.pool.release(conn)  # type: ignore[union-attr]
                    except Exception as exc:  # noqa: BLE001 - the read's answer stands (counted, DEBUG line)
                        swallowed("reader", exc, what="releasing a connection", logger=log, level=logging.DEBUG)
        elapsed = time.monotonic() - t0
        attempts.append(TierAttempt(tier, target.name, "ok" if visible else "not_visible", elapsed))
        if tier == "replica":
            stale = float(lag) if lag is not None else None
        elif tier == "home":
            stale = 0.0
        else:
            stale = None
        consistency = "eventual" if after is None else "read_your_writes" if visible else "stale"
        return ReadResult([dict(r) for r in rows], tier, region, target.name, stale, tier != "home", tuple(attempts),
                          consistency)

    def _cool_down(self, bh: _Bulkhead) -> None:
        if self.failure_cooldown_s > 0:
            bh.down_until = time.monotonic() + self.failure_cooldown_s

    async def _try_redis(self, region: str, table: str, cache, attempts: list[TierAttempt]) -> ReadResult | None:
        if cache is None:
            attempts.append(TierAttempt("redis", "redis", "unsupported", 0.0, "only point reads by key"))
            return None
        if self._redis_down_until > time.monotonic():
            attempts.append(TierAttempt("redis", "redis", "cooldown"))
            return None
        key, cols = cache
        k = cache_key(region, table, key)
        t0 = time.monotonic()
        try:
            client = self._redis_client()
            async with asyncio.timeout(self.tier_timeout_s):
                async with client.pipeline(transaction=False) as pipe:
                    pipe.get(k)
                    pipe.pttl(k)
                    raw, pttl = await pipe.execute()
        except (TimeoutError, asyncio.TimeoutError):
            self._redis_down_until = time.monotonic() + self.failure_cooldown_s
            attempts.append(TierAttempt("redis", "redis", "timeout", time.monotonic() - t0))
            return None
        except Exception as exc:  # noqa: BLE001 - redis errors: this tier is unavailable
            self._redis_down_until = time.monotonic() + self.failure_cooldown_s
            attempts.append(TierAttempt("redis", "redis", "unavailable", time.monotonic() - t0, type(exc).__name__))
            return None
        if raw is None:
            attempts.append(TierAttempt("redis", "redis", "miss", time.monotonic() - t0))
            return None
        try:
            row = row_from_cache(raw)
        except ValueError:
            attempts.append(TierAttempt("redis", "redis", "error", time.monotonic() - t0, "undecodable value"))
            return None
        if cols:
            row = {c: row.get(c) for c in cols}
        attempts.append(TierAttempt("redis", "redis", "ok", time.monotonic() - t0))
        age = cache_age_s(self.cfg.redis.ttl_s, pttl)
        return ReadResult([row], "redis", region, "redis", age, True, tuple(attempts))


async def _visible(conn: asyncpg.Connection, write_id: str) -> bool:
    """Whether this database shows the write (a database that never applied any write has no inbox)."""
    try:  # outside a transaction, so the error leaves the connection usable
        return bool(await conn.fetchval(VISIBLE_SQL, write_id))
    except asyncpg.exceptions.UndefinedTableError:
        return False


class BoundReader:
    """A :class:`RegionalReader` fixed to one region; remembers its results.

    The middleware hands one to every request (``request.state.reader``) and
    reads :attr:`results` back to set ``X-Region-Served`` / ``X-Degraded``.
    """

    def __init__(self, reader: RegionalReader, region: str, after: WriteToken | None = None, *,
                 wait_s: float | None = None) -> None:
        self.reader, self.region = reader, region
        self.after = after  # the request's token (middleware): every read is read-your-writes by default
        self.wait_s = reader.after_wait_s if wait_s is None else wait_s
        # one wait for the whole request, from its first read on: ten reads must not wait ten times
        self._deadline: float | None = None
        self.results: list[ReadResult] = []

    def _with_token(self, kw: dict[str, Any]) -> dict[str, Any]:
        kw.setdefault("after", self.after)
        if kw["after"] is self.after and self.after is not None and "wait_s" not in kw:
            if self._deadline is None:
                self._deadline = time.monotonic() + self.wait_s
            kw["wait_s"] = max(0.0, self._deadline - time.monotonic())
        return kw

    async def get(self, table: str, key: Mapping[str, Any], *, columns: Iterable[str] | None = None,
                  **kw: Any) -> ReadResult:
        res = await self.reader.get(table, key, region=self.region, columns=columns, **self._with_token(kw))
        self.results.append(res)
        return res

    async def select(self, table: str, **kw: Any) -> ReadResult:
        res = await self.reader.select(table, region=self.region, **self._with_token(kw))
        self.results.append(res)
        return res

    @property
    def consistency(self) -> str | None:
        """``stale`` if any read lacked its token's write, else ``read_your_writes`` / ``eventual``; None: no reads."""
        kinds = {r.consistency for r in self.results}
        for k in ("stale", "read_your_writes", "eventual"):
            if k in kinds:
                return k
        return None

    @property
    def degraded(self) -> bool:
        return any(r.degraded for r in self.results)
