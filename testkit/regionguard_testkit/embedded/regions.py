"""Regions on the local PostgreSQL server, each behind its own fault proxy.

Every region gets a fresh database (``rg_<prefix>_<region>``) on the shared
server at 127.0.0.1:5432 plus a :class:`~regionguard_testkit.embedded.proxy.FaultProxy`, so
tests can take one region "down" (refuse, blackhole, reset) while the others
keep working, and still check the truth through :meth:`LocalRegions.direct_dsn`.
Sync methods work from sync and async code (see :func:`~regionguard_testkit.embedded.net.run_sync`);
the ``a``-prefixed coroutines are there for async callers that must not block.

:func:`regions_config` (from :mod:`regionguard_testkit.embedded.config`, re-exported here)
builds the matching regionguard config (dict + YAML).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import asyncpg

from .config import DEFAULT_TABLES, deep_merge, regions_config, write_config
from .net import run_sync
from .proxy import FaultProxy

__all__ = ["LocalRegions", "DEFAULT_SCHEMA", "DEFAULT_TABLES", "DEFAULT_REGIONS", "db_name",
           "regions_config", "write_config", "deep_merge"]

DEFAULT_REGIONS = ("eu", "us", "ap")
DEFAULT_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id bigint PRIMARY KEY, name text, email text, version bigint NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id bigint PRIMARY KEY, user_id bigint, amount numeric CHECK (amount >= 0), status text);
"""


def db_name(prefix: str, region: str) -> str:
    """``rg_<prefix>_<region>``, lower-cased, non-identifier characters replaced, at most 63 chars."""
    raw = f"rg_{prefix}_{region}".lower()
    return re.sub(r"[^a-z0-9_]", "_", raw)[:63]


class LocalRegions:
    """One fresh database and one :class:`FaultProxy` per region name."""

    def __init__(self, names: Iterable[str] = DEFAULT_REGIONS, *, prefix: str | None = None,
                 host: str = "127.0.0.1", port: int = 5432, user: str = "postgres", admin_db: str = "postgres",
                 servers: Mapping[str, tuple[str, int]] | None = None,
                 proxy_hosts: Mapping[str, str] | None = None) -> None:
        """``servers`` maps some regions to another PostgreSQL server ``(host, port)`` than
        ``host:port`` -- e.g. a :class:`~regionguard_testkit.embedded.pgcluster.PgCluster` that a test can crash.
        ``proxy_hosts`` binds some regions' fault proxies to their own loopback address (default 127.0.0.1)."""
        self.names = tuple(names)
        self.servers = {r: tuple((servers or {}).get(r, (host, port))) for r in self.names}
        if not self.names or len(set(self.names)) != len(self.names):
            raise ValueError("region names must be unique and non-empty")
        self.prefix = prefix or uuid.uuid4().hex[:8]
        self.host, self.port, self.user, self.admin_db = host, port, user, admin_db
        self.databases = {r: db_name(self.prefix, r) for r in self.names}
        if len(set(self.databases.values())) != len(self.names):
            raise ValueError(f"region names collide after sanitizing: {self.databases}")
        self.proxy_hosts = dict(proxy_hosts or {})
        self._proxies: dict[str, FaultProxy] = {}
        self.created = False

    # ---- addresses -------------------------------------------------------------------

    def _url(self, host: str, port: int, database: str) -> str:
        return f"postgresql://{self.user}@{host}:{port}/{database}"

    def dsn(self, region: str) -> str:
        """DSN through the region's fault proxy: what services get."""
        p = self.proxy(region)
        return self._url(p.host, p.port, self.databases[region])

    def direct_dsn(self, region: str) -> str:
        """DSN that bypasses the proxy: for checkers and set-up."""
        host, port = self.servers[region]
        return self._url(host, port, self.databases[region])

    def direct_dsns(self) -> dict[str, str]:
        return {r: self.direct_dsn(r) for r in self.names}

    def dsns(self) -> dict[str, str]:
        return {r: self.dsn(r) for r in self.names}

    def proxy(self, region: str) -> FaultProxy:
        if region not in self._proxies:
            raise KeyError(f"unknown region {region!r} (or regions not created yet)")
        return self._proxies[region]

    @property
    def admin_dsn(self) -> str:
        return self._url(self.host, self.port, self.admin_db)

    def _admin_dsns(self) -> dict[tuple[str, int], str]:
        """One admin DSN per server, for the regions each server holds."""
        return {srv: self._url(srv[0], srv[1], self.admin_db) for srv in dict.fromkeys(self.servers.values())}

    # ---- lifecycle -------------------------------------------------------------------

    async def acreate(self) -> LocalRegions:
        """Create (re-create if left over) every database; start the proxies."""
        for srv, admin in self._admin_dsns().items():
            conn = await asyncpg.connect(admin, timeout=10)
            try:
                for r, db in self.databases.items():
                    if self.servers[r] == srv:
                        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                        await conn.execute(f'CREATE DATABASE "{db}"')
            finally:
                await conn.close()
        for r in self.names:
            if r not in self._proxies:
                self._proxies[r] = FaultProxy(*self.servers[r], name=f"pg-{r}",
                                              host=self.proxy_hosts.get(r, "127.0.0.1"))
        self.created = True
        return self

    def create(self) -> LocalRegions:
        return run_sync(self.acreate())

    async def asetup_schema(self, sql: str = DEFAULT_SCHEMA, regions: Iterable[str] | None = None) -> None:
        for r in regions or self.names:
            await self.aexecute(r, sql)

    def setup_schema(self, sql: str = DEFAULT_SCHEMA, regions: Iterable[str] | None = None) -> None:
        """Run ``sql`` (may hold several statements) directly on every region (or the given ones)."""
        run_sync(self.asetup_schema(sql, regions))

    async def adrop(self) -> None:
        """Stop the proxies, terminate backends and drop every database. Idempotent."""
        for p in self._proxies.values():
            p.stop()
        self._proxies.clear()
        for srv, admin in self._admin_dsns().items():
            try:
                conn = await asyncpg.connect(admin, timeout=10)
            except (OSError, asyncpg.PostgresError):
                if srv == (self.host, self.port):
                    raise
                continue  # a private cluster that is already gone took its databases with it
            try:
                for r, db in self.databases.items():
                    if self.servers[r] != srv:
                        continue
                    await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                       "WHERE datname = $1 AND pid <> pg_backend_pid()", db)
                    await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            finally:
                await conn.close()
        self.created = False

    def drop(self) -> None:
        run_sync(self.adrop())

    def __enter__(self) -> LocalRegions:
        return self.create()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.drop()

    # ---- direct queries (checkers) -----------------------------------------------------

    async def aexecute(self, region: str, sql: str, *args: Any) -> str:
        conn = await asyncpg.connect(self.direct_dsn(region), timeout=10)
        try:
            return str(await conn.execute(sql, *args))
        finally:
            await conn.close()

    async def afetch(self, region: str, sql: str, *args: Any) -> list[dict[str, Any]]:
        conn = await asyncpg.connect(self.direct_dsn(region), timeout=10)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    def execute(self, region: str, sql: str, *args: Any) -> str:
        return run_sync(self.aexecute(region, sql, *args))

    def fetch(self, region: str, sql: str, *args: Any) -> list[dict[str, Any]]:
        """Rows as dicts, read directly (bypassing the proxy)."""
        return run_sync(self.afetch(region, sql, *args))

    def fetchval(self, region: str, sql: str, *args: Any) -> Any:
        rows = self.fetch(region, sql, *args)
        return next(iter(rows[0].values())) if rows else None

    def count(self, region: str, table: str) -> int:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", table):
            raise ValueError(f"bad table name {table!r}")
        return int(self.fetchval(region, f"SELECT count(*) FROM {table}"))

    def __repr__(self) -> str:
        return f"<LocalRegions {self.prefix} {list(self.names)}>"
