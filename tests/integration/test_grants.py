"""Each service on a role with only the grants ``regionguard grants`` prints (issue 28), on real PostgreSQL.

The script is printed by the real CLI and run as the superuser in each region's
(per-test) database; CONNECT is revoked from PUBLIC first, so every role has
only what it was granted. Then the real health, router and replayer processes,
and a reader, each connect as their own role: probes succeed, a write is
applied, a held write is replayed, a read is served. A role missing a grant
holds its writes and reports it instead of dead-lettering them.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
import uuid

import asyncpg
import pytest

from regionguard.client.consistency import WriteToken
from regionguard.client.reader import RegionalReader
from regionguard.core.config import parse_config
from regionguard_testkit.embedded.config import ConfigFile, write_config
from tests.harness import free_port
from tests.integration.helpers import (
    ev_bytes, metric_value, produce_raw, read_json, read_topic, wait_assigned, wait_metric, wait_until, write_event,
)

SERVICES = ("router", "replayer", "health", "reader")


@pytest.fixture
def roles(regions, rg_config, tmp_path):
    """(LocalRegions, {service: ConfigFile connecting as its role}, the roles, the admin ConfigFile)."""
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=2)
    tag = uuid.uuid4().hex[:6]
    names = {s: f"rg{tag}_{s}" for s in SERVICES}
    for region in lr.names:
        out = subprocess.run([sys.executable, "-m", "regionguard", "grants", *cfg.cli_args(), "--region", region,
                              *(a for s in SERVICES for a in ("--role", f"{s}={names[s]}"))],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        as_json = subprocess.run([sys.executable, "-m", "regionguard", "grants", *cfg.cli_args(), "--region", region,
                                  "--json", *(a for s in SERVICES for a in ("--role", f"{s}={names[s]}"))],
                                 capture_output=True, text=True, timeout=60)
        assert "\n".join(json.loads(as_json.stdout)["statements"]) == out.stdout.rstrip("\n")
        lr.execute(region, f'REVOKE ALL ON DATABASE "{lr.databases[region]}" FROM PUBLIC')
        lr.execute(region, out.stdout)
    files = {}
    for s in SERVICES:
        data = copy.deepcopy(cfg.data)
        for region in lr.names:
            data["regions"][region]["dsn"] = lr.dsn(region).replace("://postgres@", f"://{names[s]}@", 1)
        files[s] = ConfigFile(write_config(data, tmp_path / f"{s}.yaml"), data, lr)
    try:
        yield lr, files, names, cfg
    finally:
        asyncio.run(_drop_roles(lr, names.values()))


async def _drop_roles(lr, names) -> None:
    for region in lr.names:  # the privileges first: a role with grants in any database can't be dropped
        conn = await asyncpg.connect(lr.direct_dsn(region), timeout=10)
        try:
            for name in names:
                await conn.execute(f'DROP OWNED BY "{name}"')
        finally:
            await conn.close()
    conn = await asyncpg.connect(lr.admin_dsn, timeout=10)
    try:
        # its connections first (a reader's pool, a killed service's backend not yet gone)
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ANY($1::text[])",
                           list(names))
        for name in names:
            await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await conn.close()


def _users(lr, region):
    return {r["id"]: r for r in lr.fetch(region, "SELECT id, name, version FROM users")}


def test_every_service_works_with_only_its_printed_grants(roles, services):
    lr, files, names, admin = roles
    # the roles really are that narrow: the health role may connect, nothing more
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        asyncio.run(_as(files["health"], "eu", "SELECT count(*) FROM users"))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        asyncio.run(_as(files["reader"], "eu", "DELETE FROM users"))

    hport, rport = free_port(), free_port()
    services("health", files["health"].cli_args("health", "--metrics-port", str(hport)))
    services("router", files["router"].cli_args("router", "--metrics-port", str(rport)))
    services("replayer", files["replayer"].cli_args("replayer", "--metrics-port", "0"))
    # probes succeed: the leader judges both regions closed from its role's probes
    for region in lr.names:
        wait_metric(hport, "regionguard_region_state", lambda v: v == 0, region=region, timeout=60,
                    what=f"{region} closed by the health role's probes")
    wait_assigned(admin, "router", "eu")

    # a write applied by the router role
    first = write_event("eu", "users", "upsert", {"id": 1}, {"name": "direct", "version": 1})
    produce_raw(admin.bootstrap, admin.topic("writes", "eu"), [ev_bytes(first)])
    wait_until(lambda: _users(lr, "eu").get(1, {}).get("name") == "direct", timeout=40, what="direct apply")

    # an outage: the health service opens eu, the router holds; back: the replayer role replays
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    wait_metric(hport, "regionguard_region_state", lambda v: v == 2, region="eu", timeout=30, what="eu open")
    held = [write_event("eu", "users", "upsert", {"id": i}, {"name": "held", "version": 2}) for i in (1, 2)]
    produce_raw(admin.bootstrap, admin.topic("writes", "eu"), [ev_bytes(e) for e in held])
    wait_until(lambda: len(read_topic(admin.bootstrap, admin.topic("held", "eu"), idle=0.3)) >= 2,
               what="writes held while eu is open")
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: {r["name"] for r in _users(lr, "eu").values()} == {"held"} and len(_users(lr, "eu")) == 2,
               timeout=60, what="held writes replayed by the replayer role")
    assert read_json(admin.bootstrap, admin.topic("dead-letter"), idle=0.3) == []

    # a read served from home by the reader role, after the write's token (the inbox check)
    async def read():
        async with RegionalReader(parse_config(dict(files["reader"].data)), tier_timeout_s=2.0) as reader:
            return await reader.get("users", {"id": 2}, region="eu", after=WriteToken(held[1]["id"], "eu"))

    res = asyncio.run(read())
    assert (res.tier, res.source, res.row["name"]) == ("home", "eu", "held")
    assert metric_value(hport, "regionguard_probe_failures_total", region="us", kind="error") in (None, 0.0)


def test_a_missing_grant_holds_the_writes_and_counts_against_the_breaker(roles, services):
    """No INSERT on users for the router: not a dead letter per write, but retried and reported until granted."""
    lr, files, names, admin = roles
    lr.execute("eu", f'REVOKE INSERT ON users FROM "{names["router"]}"')
    rport = free_port()
    services("router", files["router"].cli_args("router", "--no-health", "--instance", "r1",
                                                "--metrics-port", str(rport)))
    wait_assigned(admin, "router", "eu")
    evs = [write_event("eu", "users", "upsert", {"id": i}, {"name": "late", "version": 1}) for i in range(5)]
    produce_raw(admin.bootstrap, admin.topic("writes", "eu"), [ev_bytes(e) for e in evs])
    wait_metric(rport, "regionguard_apply_errors_total", lambda v: v >= 2, region="eu",
                kind="insufficient_privilege", timeout=40, what="the missing grant counted, retried")
    obs = wait_until(lambda: [o for o in read_json(admin.bootstrap, admin.topic("observations"), idle=0.3)
                              if o["observer"] == "router:r1" and not o["ok"]], what="a failed passive observation")
    assert {o["kind"] for o in obs} == {"insufficient_privilege"} and obs[0]["region"] == "eu"
    assert lr.count("eu", "users") == 0
    assert read_json(admin.bootstrap, admin.topic("dead-letter"), idle=0.3) == []

    # the operator grants it: the same writes apply, none lost, none dead-lettered
    lr.execute("eu", f'GRANT INSERT ON users TO "{names["router"]}"')
    wait_until(lambda: lr.count("eu", "users") == 5, timeout=40, what="applied once granted")
    assert read_json(admin.bootstrap, admin.topic("dead-letter"), idle=0.3) == []


async def _as(cf: ConfigFile, region: str, sql: str):
    conn = await asyncpg.connect(cf.data["regions"][region]["dsn"], timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()
