"""Writes through a real PgBouncer in transaction pooling mode (docs/poolers.md, issue 28 item 7).

The region's DSN goes router/replayer -> PgBouncer (``pool_mode = transaction``, one server
session per database, no prepared-statement support) -> the region's fault proxy -> PostgreSQL.
Before the router starts, the shared server session is left holding prepared statements named
the way asyncpg names its own (``__asyncpg_stmt_<hex>__``), as any other asyncpg client of the
pooler leaves them. Then:

* with ``statement_cache_size: 0`` asyncpg prepares unnamed statements, so it meets none of
  them: writes apply directly, and held then replayed through an outage, exactly once;
* with the default 100 every named statement collides (``DuplicatePreparedStatementError``,
  SQLSTATE 42P05); the router retries the batch (``kind="prepared_statement"``) and dead-letters
  nothing. Before the fix it dead-lettered the good writes as ``poison``. Once the session is
  clean (``DEALLOCATE ALL``) the same writes apply, once.
"""

from __future__ import annotations

import asyncio

import asyncpg

from tests.harness import free_port
from tests.integration.helpers import (
    ev_bytes, metric_value, produce_raw, read_json, read_topic, wait_assigned, wait_metric, wait_until, write_event,
)

#: how many of asyncpg's statement names the pooler's session is left holding: more than the
#: router prepares before the test cleans the session, so the collisions cannot run out by themselves
LEFT_BEHIND = 2000


def _through(dsn: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(dsn, statement_cache_size=0, timeout=10)
        try:
            await conn.execute(sql)  # simple protocol: one server session, the pool's only one
        finally:
            await conn.close()
    asyncio.run(run())


def _leave_prepared_statements(dsn: str) -> None:
    _through(dsn, ";".join(f"PREPARE __asyncpg_stmt_{i:x}__ AS SELECT {i}" for i in range(1, LEFT_BEHIND + 1)))


def _bounced(lr, pgbouncer, region: str):
    """A PgBouncer before ``region``'s fault proxy (so the test can still cut the region off)."""
    proxy = lr.proxy(region)
    bouncer = pgbouncer(upstream=(proxy.host, proxy.port))
    print(f"pgbouncer {'.'.join(map(str, bouncer.version))} started in {bouncer.started_in:.3f}s")
    return bouncer


def _users(lr) -> dict[int, int]:
    return {r["id"]: r["version"] for r in lr.fetch("eu", "SELECT id, version FROM users")}


def test_statement_cache_off_applies_direct_and_replayed_writes_exactly_once(regions, rg_config, services,
                                                                              pgbouncer):
    lr = regions(["eu"])
    bouncer = _bounced(lr, pgbouncer, "eu")
    dsn = bouncer.dsn(lr.databases["eu"])
    _leave_prepared_statements(dsn)
    cfg = rg_config(lr, partitions=2, overrides={"regions": {"eu": {"dsn": dsn, "statement_cache_size": 0}}})
    port = free_port()
    router = services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    replayer = services("replayer", cfg.cli_args("replayer", "--no-health"))
    wait_assigned(cfg, "router", "eu")

    first = [write_event("eu", "users", "upsert", {"id": i}, {"name": "v1", "version": 1}) for i in range(30)]
    items = [ev_bytes(e) for e in first]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), items + items[:10])  # 10 delivered twice
    wait_until(lambda: set(_users(lr).values()) == {1} and len(_users(lr)) == 30, what="direct applies")

    # the region goes away behind the pooler: the router holds, the replayer replays through it
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    second = [write_event("eu", "users", "upsert", {"id": i}, {"name": "v2", "version": 2}) for i in range(30)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in second])
    wait_until(lambda: len(read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5)) >= 30,
               timeout=60, what="writes held while the region is cut off")
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: set(_users(lr).values()) == {2}, timeout=60, what="held writes replayed through pgbouncer")
    wait_metric(port, "regionguard_held_partitions", lambda n: n == 0, region="eu", timeout=60,
                what="eu back in direct mode")

    ids = [r["write_id"] for r in lr.fetch("eu", "SELECT write_id::text FROM regionguard_applied")]
    assert sorted(ids) == sorted(e["id"] for e in first + second)  # each once, none missing
    assert read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5) == []
    assert metric_value(port, "regionguard_apply_errors_total", region="eu", kind="prepared_statement") == 0
    router.terminate()
    replayer.terminate()
    assert router.returncode == 0 and replayer.returncode == 0


def test_default_statement_cache_is_retried_never_dead_lettered_as_poison(regions, rg_config, services, pgbouncer):
    lr = regions(["eu"])
    bouncer = _bounced(lr, pgbouncer, "eu")
    dsn = bouncer.dsn(lr.databases["eu"])
    _leave_prepared_statements(dsn)
    cfg = rg_config(lr, partitions=1, overrides={"regions": {"eu": {"dsn": dsn}}})  # statement_cache_size: 100
    port = free_port()
    router = services("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(port)))
    wait_assigned(cfg, "router", "eu")

    writes = [write_event("eu", "users", "upsert", {"id": i}, {"name": "v1", "version": 1}) for i in range(20)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in writes])
    def retried_or_dead() -> bool:
        retries = metric_value(port, "regionguard_apply_errors_total", region="eu", kind="prepared_statement")
        return (retries or 0) >= 3 or bool(read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.2))

    wait_until(retried_or_dead, timeout=60, what="the collisions retried as the pooler's errors")
    dead = read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)
    assert [(d["reason"], d.get("detail")) for d in dead] == []  # was: every write a `poison` dead letter
    assert lr.count("eu", "users") == 0

    _through(dsn, "DEALLOCATE ALL")  # the session is clean again (what a fresh server session would be)
    wait_until(lambda: lr.count("eu", "users") == 20, timeout=60, what="the same writes applied")
    assert lr.count("eu", "regionguard_applied") == 20  # the inbox (created only now): each write once
    assert read_json(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5) == []
    router.terminate()
    assert router.returncode == 0


def test_inbox_pruning_goes_through_the_pooler_with_statement_cache_off(regions, pgbouncer, tmp_path):
    """The router's pruner and ``regionguard inbox prune`` take the region's statement_cache_size too."""
    from regionguard.core.config import parse_config
    from regionguard.core.inbox import InboxPruner
    from tests.harness import write_config
    from tests.integration.test_inbox_retention import _cli, counts, seed

    lr = regions(["eu"])
    seed(lr)  # 30 inbox rows and 3 tombstones past the retention
    bouncer = _bounced(lr, pgbouncer, "eu")
    dsn = bouncer.dsn(lr.databases["eu"])
    _leave_prepared_statements(dsn)
    data = {"regions": {"eu": {"dsn": dsn, "statement_cache_size": 0}},
            "tables": {"users": {"key": ["id"], "version": "version"}}, "inbox": {"prune_batch": 7, "prune_pause_s": 0}}
    dry = _cli("--config", str(write_config(data, tmp_path / "rg.yaml")), "--dry-run")
    assert dry.returncode == 0, dry.stderr  # was: exit 2, DuplicatePreparedStatementError
    assert dry.stdout.startswith("eu: 30 inbox rows and 3 tombstones")
    done = asyncio.run(InboxPruner(parse_config(data), "eu", dsn).round())
    assert done is not None and (done.inbox, done.tombstones) == (30, 3)  # was: None, a failed round
    assert counts(lr) == (11, 2)


def test_config_check_connect_goes_through_the_pooler_with_statement_cache_off(regions, pgbouncer):
    """``regionguard config check --connect`` asks each region about its tables with the region's setting."""
    from regionguard.core.config import parse_config
    from regionguard.ops.configcheck import region_problems

    lr = regions(["eu"])
    bouncer = _bounced(lr, pgbouncer, "eu")
    dsn = bouncer.dsn(lr.databases["eu"])
    _leave_prepared_statements(dsn)
    cfg = parse_config({"regions": {"eu": {"dsn": dsn, "statement_cache_size": 0}},
                        "tables": {"users": {"key": ["id"], "version": "version"}, "orders": {"key": ["id"]}}})
    # the inbox is missing on a fresh region but this user may create it: not a problem
    assert asyncio.run(region_problems(cfg, "eu", 10)) == []  # was: DuplicatePreparedStatementError
