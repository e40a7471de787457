"""Small networking and asyncio helpers shared by the harness modules.

Kept separate so the broker, proxy, cluster and service helpers agree on how a
free port is picked and how a coroutine is run from sync code (tests, the
``regionguard demo`` command), even when the caller already runs an event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["free_port", "port_open", "wait_port", "run_sync"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (the kernel picked it).

    There is an unavoidable race between closing the probe socket and the real
    user binding it; callers that start servers retry on bind failure.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connect to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """Poll until ``host:port`` accepts connections; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port, timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run ``coro`` to completion from sync code and return its result.

    ``asyncio.run`` refuses to run inside a running loop (e.g. a sync helper
    called from an async pytest test), so in that case the coroutine runs on a
    fresh loop in a worker thread. The calling loop is blocked meanwhile, which
    is acceptable for test set-up and checking code.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout)
