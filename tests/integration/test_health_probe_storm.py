"""Probes must not storm a starved or dead database: real PostgreSQL behind the fault proxy, the real
prober and probe loop in-process (the health service around them adds nothing to what is counted here).

The region is healthy first, then its path is blackholed (TCP connects accepted, nothing answered) or
made very slow (every reply 0.5 s late, above the 0.3 s probe deadline: connects reach PostgreSQL and
fork backends that never finish in time). The proxy counts the connections it accepted while the fault
lasted 100 probes. Before the fresh-connection gate nearly every probe opened one (about 95 of 100);
now they are bounded by the gate's cap and backoff, and every probe still reports the failure.
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from regionguard.core.config import HealthConfig
from regionguard.health.freshgate import FRESH_IN_FLIGHT
from regionguard.health.probe import RegionProber, probe_loop

pytestmark = pytest.mark.timeout(120)
FAULT_PROBES = 100


async def poll(pred, timeout: float, what: str, step: float = 0.05):
    """Bounded poll from inside the event loop (the prober runs on it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def our_backends(admin_dsn: str, app: str) -> int:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app)
    finally:
        await conn.close()


@pytest.mark.parametrize("fault", ["blackhole", "slow"])
async def test_a_dead_or_starved_region_gets_a_bounded_number_of_fresh_connections(regions, fault):
    lr = regions(["eu"], schema=None)
    proxy = lr.proxy("eu")
    cfg = HealthConfig()  # the defaults: a probe every 0.05 s, 0.3 s deadline
    observer = f"storm-{fault}"
    app = f"regionguard-health:{observer}"
    prober = RegionProber("eu", lr.dsn("eu"), cfg, observer)
    seen = []
    stop = asyncio.Event()
    loop_task = asyncio.create_task(probe_loop(prober, cfg.interval_s, cfg.timeout_s, seen.append, stop))
    try:
        await poll(lambda: sum(o.ok for o in seen) >= 20, 30, "20 successful probes of the healthy region")
        if fault == "blackhole":
            await asyncio.to_thread(proxy.set_mode, "blackhole")
        else:
            await asyncio.to_thread(proxy.set_mode, "latency", delay_s=0.5)
        before, start = proxy.stats.accepted, len(seen)
        await poll(lambda: len(seen) - start >= FAULT_PROBES, 60, f"{FAULT_PROBES} probes during the fault")
        during = seen[start:]
        accepted = proxy.stats.accepted - before
    finally:
        stop.set()
        await loop_task
    print(f"{fault}: {len(during)} probes, {accepted} connections accepted by the proxy; kinds {sorted({o.kind for o in during})}; "
          f"held back {getattr(prober, 'held', 0)}")
    # every probe past the ones already in flight reports the failure (nothing says "ok" on a dead path)
    assert not any(o.ok for o in during[10:]), [o.kind for o in during]
    assert {o.kind for o in during[10:]} == {"timeout"}, [o.kind for o in during]
    # bounded by the cap and the backoff, not by the probe rate (was about one per probe: 103-105 of
    # 100); the cap's first round, the 8 failures before the backoff, then about one a backoff step
    assert accepted <= 3 * FRESH_IN_FLIGHT + len(during) // 5, (accepted, len(during))
    # torn down means gone: no socket left at the proxy, no backend left at the server
    await asyncio.to_thread(proxy.set_mode, "pass")
    await poll(lambda: proxy.stats.active == 0, 15, "the proxy to hold no connection of the prober")

    async def none_left() -> bool:
        return await our_backends(lr.admin_dsn, app) == 0

    await poll(none_left, 15, "no backend of the prober left in pg_stat_activity")
