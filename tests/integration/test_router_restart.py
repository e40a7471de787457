"""A router restarted after an outage resumes its region within seconds, with or without a replayer.

Issue 12's stall: once a region had held and replayed writes, every restart of
its router fenced each held partition and then waited for the replayer to
commit past the fence -- a record that needs no replay. With the replayer
stopped the region never resumed; with it running, the wait was the replayer's
next poll. Each restart adds a fence, so the test restarts several times.

Time to resume = from starting the new router to the last of a fresh batch of
writes applied (rows in PostgreSQL), so it includes the process start and the
consumer group join on the broker under test.
"""

from __future__ import annotations

import time
import urllib.request

import pytest

from tests.harness import free_port
from tests.integration.helpers import ev_bytes, produce_raw, read_topic, wait_until, write_event

RESUME_BOUND_S = 20.0  # generous for a loaded 2-core CI machine; typical is 3-6 s (printed)


def _gauge(port: int, name: str, region: str) -> float | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith(f'{name}{{region="{region}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return None


def _applied(lr, region: str) -> int:
    try:
        return lr.count(region, "regionguard_applied")
    except Exception:  # noqa: BLE001 - the router creates the inbox when it starts
        return 0


def _writes(first_id: int, n: int, version: int) -> list[dict]:
    return [write_event("eu", "users", "upsert", {"id": i}, {"name": f"v{version}", "version": version})
            for i in range(first_id, first_id + n)]


def outage_then_replay(lr, cfg, services, router_port: int) -> None:
    """Hold writes during an outage, heal, and wait until the replayer applied them and every
    partition is direct again (the router's held-partitions gauge at 0)."""
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    held = _writes(0, 30, 2)
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in held])
    wait_until(lambda: len(read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.3)) >= 30,
               timeout=40, what="writes diverted to the held topic")
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: lr.fetch("eu", "SELECT count(*) AS n FROM users WHERE version = 2") == [{"n": 30}],
               timeout=60, what="held writes replayed")
    wait_until(lambda: _gauge(router_port, "regionguard_held_partitions", "eu") == 0, timeout=60,
               what="every partition direct again")


@pytest.mark.smoke
@pytest.mark.parametrize("replayer_stays", [False, True], ids=["replayer-stopped", "replayer-running"])
def test_restarts_after_a_replayed_outage_resume_within_seconds(regions, rg_config, services, replayer_stays):
    lr = regions(["eu"])
    cfg = rg_config(lr, partitions=3)
    port = free_port()
    router_args = cfg.cli_args("router", "--no-health", "--metrics-port", str(port))
    router = services("router", router_args)
    replayer = services("replayer", cfg.cli_args("replayer", "--no-health"))
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in _writes(0, 30, 1)])
    wait_until(lambda: lr.count("eu", "users") == 30, timeout=60, what="first writes applied directly")
    outage_then_replay(lr, cfg, services, port)
    if not replayer_stays:
        replayer.terminate()

    times = []
    next_id = 1000
    for i in range(3):
        router.terminate()
        assert router.returncode == 0, router.log_tail()
        target = _applied(lr, "eu") + 40
        batch = _writes(next_id, 40, 3)
        next_id += 40
        t0 = time.monotonic()
        router = services("router", router_args)
        produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in batch])
        wait_until(lambda: _applied(lr, "eu") >= target, timeout=RESUME_BOUND_S + 40,
                   what=f"restart {i + 1}: the fresh writes applied")
        times.append(time.monotonic() - t0)
    print(f"\ntime to resume after each restart ({'with' if replayer_stays else 'without'} a replayer): "
          + ", ".join(f"{t:.1f} s" for t in times))
    assert max(times) <= RESUME_BOUND_S, times
    assert lr.count("eu", "users") == 30 + 120
    # nothing was held after the outage: the restarts went straight to direct
    assert _gauge(port, "regionguard_held_partitions", "eu") == 0
    assert lr.fetch("eu", "SELECT count(*) AS n FROM regionguard_applied") == [{"n": 60 + 120}]
