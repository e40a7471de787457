"""A region's database fault proxy as a process of its own.

``python -m regionguard_testkit.regional.dbproxy --listen 127.0.1.1:PORT --target 127.0.0.1:5432 --state FILE``
runs one :class:`~regionguard_testkit.embedded.proxy.FaultProxy`. SIGUSR1 blackholes it, SIGUSR2
lets traffic pass again; each change, once in effect, is written to ``--state`` (the bed polls it).

Why a process: in the run's own process the proxies shared the interpreter with the checker's
polling (whole inboxes of tens of thousands of rows); on a loaded 2-core machine they were starved,
every health probe through them timed out, and every region opened. A process per region is also
closer to what it stands for: a region's network path, apart from the test's bookkeeping.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from ..embedded.proxy import FaultProxy

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m regionguard_testkit.regional.dbproxy")
    p.add_argument("--listen", required=True, help="host:port to listen on")
    p.add_argument("--target", required=True, help="host:port of the PostgreSQL server")
    p.add_argument("--state", required=True, type=Path, help="file the current mode is written to")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    thost, _, tport = args.target.rpartition(":")
    proxy = FaultProxy(thost, int(tport), host=host, port=int(port), name=f"pg-{host}")
    done = threading.Event()
    changes: list[str] = []
    wake = threading.Event()

    def publish(mode: str) -> None:
        tmp = args.state.with_suffix(".tmp")
        tmp.write_text(mode)
        os.replace(tmp, args.state)   # the bed never reads half a word

    # the handlers only queue the change: set_mode blocks on the proxy's loop, not in a signal handler
    def on_signal(mode: str):
        def handler(_sig: int, _frame: object) -> None:
            changes.append(mode)
            wake.set()
        return handler

    signal.signal(signal.SIGUSR1, on_signal("blackhole"))
    signal.signal(signal.SIGUSR2, on_signal("pass"))
    signal.signal(signal.SIGTERM, lambda *_: (done.set(), wake.set()))
    publish("pass")
    while not done.is_set():
        wake.wait()
        wake.clear()
        while changes:
            mode = changes.pop(0)
            proxy.set_mode(mode)
            publish(mode)
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
