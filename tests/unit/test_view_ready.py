"""Services act only on a region-state view read to its end (core.service.view_ready)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from regionguard.core.service import view_ready


class SlowView:
    """Stands in for RegionStateView: ready after ``after`` seconds (never when None)."""

    topic = "rg.region-state"

    def __init__(self, after: float | None) -> None:
        self.records = 0
        self._ready = threading.Event()
        if after is not None:
            threading.Timer(after, self._ready.set).start()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)


def test_waits_as_long_as_it_takes():
    async def go():
        t0 = time.monotonic()
        assert await view_ready(SlowView(1.2), asyncio.Event(), "router")
        return time.monotonic() - t0

    took = asyncio.run(go())
    assert 1.1 < took < 3.0, took  # no time limit that would let it act on a partial view


def test_stop_ends_the_wait_without_a_view(caplog):
    async def go():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, stop.set)
        return await view_ready(SlowView(None), stop, "router", log_every_s=0.3)

    with caplog.at_level(logging.WARNING):
        assert asyncio.run(go()) is False
    assert any("router waits: rg.region-state not read to its end yet" in r.getMessage() for r in caplog.records)


def test_no_view_no_wait():
    assert asyncio.run(view_ready(None, asyncio.Event(), "router")) is True
