"""One region's database: its pool, readiness, table schemas and the inbox's DDL.

Applying writes is core/apply.py and planning them core/plan.py; their names are
re-exported here, where the services and tests have always found them.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from .apply import ApplyResult, apply_writes
from .config import Config, statement_cache_size
from .dsn import dsn_host
from .errors import PreparedStatementLost, RegionGuardError, RegionNotReady, RegionUnavailable, classify_db_error
from .models import WriteEvent
from .plan import Plan, plan_writes
from .spelling import Spellings
from .sql import COLUMNS_QUERY, INBOX_APPLIED, INBOX_DDL, INBOX_EXISTS, INBOX_TABLE, TableSchema

log = logging.getLogger(__name__)


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release RESET ALL round trip: we never change session state."""


#: pg_advisory_xact_lock key serialising the inbox DDL of every lane and service on one database.
INBOX_DDL_LOCK = 0x7267_0001


async def ensure_inbox(conn: asyncpg.Connection) -> None:
    """Create the inbox (and tombstones) if missing, one creator at a time.

    Two lanes or services starting together on a fresh database would otherwise race in
    ``CREATE TABLE IF NOT EXISTS`` and one would get a unique violation on PostgreSQL's
    catalog, which is not a constraint error of any write.

    When both exist nothing is created: ``CREATE TABLE IF NOT EXISTS`` needs ``CREATE`` on the
    schema even for a table that exists (SQLSTATE 42501), and a least-privilege role has none
    (``regionguard grants`` has the owner create them, docs/grants.md).
    """
    if await conn.fetchval(INBOX_EXISTS):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", INBOX_DDL_LOCK)
        await conn.execute(INBOX_DDL)


class RegionDB:
    """A region's pool plus what we learned about its schema."""

    def __init__(self, cfg: Config, region: str, *, dsn: str | None = None, pool_size: int | None = None):
        self.cfg, self.region = cfg, region
        self.dsn = dsn or cfg.regions[region].dsn
        self.pool_size = pool_size or cfg.router.pool_size
        self.pool: asyncpg.Pool | None = None
        self.schemas: dict[str, TableSchema] = {}
        #: PostgreSQL's readings of key values only it reads (core/spelling.py), for the planner
        self.spellings = Spellings()
        #: tables this region may not hold (data residency): never required, never written
        self.barred = frozenset(t for t in cfg.tables if not cfg.allowed_in(t, region))
        self.ready = False

    def __repr__(self) -> str:
        return f"RegionDB({self.region}@{dsn_host(self.dsn)})"

    async def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            self.pool = await asyncpg.create_pool(
                self.dsn,
                min_size=0,
                max_size=self.pool_size,
                timeout=self.cfg.health.timeout_s * 5,
                command_timeout=self.cfg.router.statement_timeout_s,
                max_inactive_connection_lifetime=60,
                statement_cache_size=statement_cache_size(self.cfg, self.region),
                reset=_no_reset,
            )
        return self.pool

    async def prepare(self) -> None:
        """Create the inbox if missing and learn the allow-listed tables' columns."""
        pool = await self._pool()
        try:
            async with pool.acquire() as conn:
                await ensure_inbox(conn)
                self.schemas = await load_schemas(conn, self.cfg)
                self.spellings.forget()
        except RegionGuardError:
            raise
        except Exception as exc:  # noqa: BLE001
            err = classify_db_error(self.region, exc)
            if isinstance(err, PreparedStatementLost):
                await pool.expire_connections()  # their statement caches are stale: start afresh
            raise err from exc
        self.ready = True

    async def apply(self, writes: list[WriteEvent], *, source: str, want_rows: bool = False,
                    plan: Plan | None = None) -> ApplyResult:
        if not self.ready:
            await self.prepare()
        pool = await self._pool()
        try:
            conn = await pool.acquire()
        except Exception as exc:  # noqa: BLE001
            raise classify_db_error(self.region, exc) from exc
        try:
            return await apply_writes(conn, self.schemas, writes, source=source, region=self.region,
                                      want_rows=want_rows, plan=plan, barred=self.barred, spellings=self.spellings)
        except (RegionUnavailable, PreparedStatementLost, asyncio.CancelledError):
            try:
                # a half-dead or mid-query socket must not go back to the pool, nor one whose
                # statement cache names statements its pooler's session does not have
                conn.terminate()
            except asyncpg.InterfaceError:
                pass  # the connection was lost and the pool has already dropped it
            raise
        except RegionNotReady:
            self.ready = False  # learn the tables again next time: the operator may be creating one
            raise
        finally:
            await pool.release(conn)

    async def applied(self, write_ids: list[str]) -> set[str]:
        """The write ids among ``write_ids`` that the inbox says were applied here."""
        if not write_ids:
            return set()
        if not self.ready:
            await self.prepare()
        pool = await self._pool()
        try:
            async with pool.acquire() as conn:
                rows = await conn.fetch(INBOX_APPLIED, write_ids)
        except Exception as exc:  # noqa: BLE001
            raise classify_db_error(self.region, exc) from exc
        return {r[0] for r in rows}

    async def ping(self) -> None:
        """``SELECT 1`` with the health timeout; raises a typed error."""
        pool = await self._pool()
        try:
            async with asyncio.timeout(self.cfg.health.timeout_s * 3):
                async with pool.acquire() as conn:
                    await conn.execute("SELECT 1")
        except Exception as exc:  # noqa: BLE001
            raise classify_db_error(self.region, exc) from exc

    async def check_ready(self) -> None:
        """Replay readiness: reachable, a writable primary, inbox and the tables it may hold present.

        A table outside the region's ``allowed_regions`` is usually absent there, and no write of it
        ever applies there: requiring it would keep the region's held backlog from ever replaying.
        """
        pool = await self._pool()
        try:
            async with pool.acquire() as conn:
                if await conn.fetchval("SELECT pg_is_in_recovery()"):
                    raise RegionNotReady(f"region {self.region} is in recovery (a standby)")
                if await conn.fetchval("SHOW transaction_read_only") == "on":
                    raise RegionNotReady(f"region {self.region} is read-only")
                await ensure_inbox(conn)
                self.schemas = await load_schemas(conn, self.cfg)
                self.spellings.forget()
                missing = [t for t in self.cfg.tables if t not in self.schemas and t not in self.barred]
                if missing:
                    raise RegionNotReady(f"region {self.region} lacks allow-listed table {missing[0]!r}")
        except RegionGuardError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise classify_db_error(self.region, exc) from exc
        self.ready = True

    async def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            try:
                pool.terminate()
            except Exception:  # noqa: BLE001
                pass


async def load_schemas(conn: asyncpg.Connection, cfg: Config) -> dict[str, TableSchema]:
    out: dict[str, TableSchema] = {}
    for name, t in cfg.tables.items():
        rows = await conn.fetch(COLUMNS_QUERY, name)
        if not rows:
            continue
        types = {r["column_name"]: r["data_type"] for r in rows}
        bases = {r["column_name"]: r["base_type"] for r in rows if r["base_type"] and r["base_type"] != r["data_type"]}
        allowed = set(types) if t.columns is None else set(t.columns) & set(types)
        out[name] = TableSchema(name=name, key=t.key, version=t.version, columns=frozenset(allowed), types=types,
                                bases=bases)
    return out


__all__ = ["ApplyResult", "Plan", "RegionDB", "apply_writes", "load_schemas", "plan_writes", "INBOX_TABLE"]
