"""A region's database fault proxy as a process of its own (:class:`RegionProxy` starts and drives it).

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
import time
from pathlib import Path

from ..embedded.procs import ServiceProcess
from ..embedded.proxy import FaultProxy

__all__ = ["RegionProxy", "main"]


class RegionProxy:
    """The proxy process of one region, listening on ``host:port`` in front of ``target``."""

    def __init__(self, region: str, host: str, port: int, target: tuple[str, int], workdir: Path,
                 logdir: Path) -> None:
        self.region = region
        self.state = workdir / f"proxy-{region}.mode"
        self.state.unlink(missing_ok=True)
        argv = ["--listen", f"{host}:{port}", "--target", f"{target[0]}:{target[1]}", "--state", str(self.state)]
        self.proc = ServiceProcess(f"dbproxy-{region}", argv, log_dir=logdir, cwd=workdir,
                                   module="regionguard_testkit.regional.dbproxy")
        self.wait("pass")

    def wait(self, mode: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.state.read_text() == mode:
                    return
            except OSError:
                pass
            if not self.proc.alive or time.monotonic() > deadline:
                raise RuntimeError(f"database proxy of {self.region} not in mode {mode}:\n{self.proc.log_tail()}")
            time.sleep(0.02)

    def set_mode(self, mode: str) -> None:
        """``blackhole`` or ``pass``; returns once the proxy process says the mode is in effect."""
        self.state.unlink(missing_ok=True)
        os.kill(self.proc.pid, signal.SIGUSR1 if mode == "blackhole" else signal.SIGUSR2)  # type: ignore[arg-type]
        self.wait(mode)


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
