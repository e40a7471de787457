"""What the router and the replayer share around their workers.

Signal handling, ``--regions``, and the region-state view they both wait to
read to its end before acting. It lives in ``core`` so the replayer need not
import the router.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from .config import Config, UsageError
from .stateview import RegionStateView

log = logging.getLogger(__name__)

__all__ = ["install_signal_handlers", "parse_regions", "state_view", "view_ready"]


def state_view(cfg: Config, enabled: bool):
    """Follow rg.region-state (started, not yet read to its end: see :func:`view_ready`).

    With no health service (``--no-health``) every region counts as closed.
    """
    if not enabled:
        return None
    view = RegionStateView(cfg)
    view.start()
    return view


async def view_ready(view, stop: asyncio.Event, service: str, *, log_every_s: float = 10.0) -> bool:
    """Wait until ``view`` has read rg.region-state to its end; False if ``stop`` came first.

    A partial view could call an open region closed (its newest record not read
    yet), so nothing is routed or replayed before; there is no time limit, and
    a line is logged every ``log_every_s`` while it lasts.
    """
    if view is None:
        return not stop.is_set()
    started = time.monotonic()
    next_log = started + log_every_s
    while not stop.is_set():
        if await asyncio.to_thread(view.wait_ready, 0.5):
            return True
        if time.monotonic() >= next_log:
            next_log += log_every_s
            log.warning("%s waits: %s not read to its end yet (%d records in %.0fs)", service, view.topic,
                        view.records, time.monotonic() - started)
    return False


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def parse_regions(cfg: Config, arg: str | None, repeated: list[str] | None = None) -> list[str]:
    """The regions a service serves: ``--regions a,b`` and/or repeated ``--region R``; default all."""
    if not arg and not repeated:
        return list(cfg.regions)
    regions = [r.strip() for r in ",".join([*(repeated or []), *([arg] if arg else [])]).split(",") if r.strip()]
    unknown = [r for r in regions if r not in cfg.regions]
    if unknown or not regions:
        raise UsageError(f"--regions: unknown region {unknown[0] if unknown else arg!r}")
    return regions


