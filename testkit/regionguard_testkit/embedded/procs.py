"""Run regionguard services as real OS processes, so tests can SIGKILL them.

Crash-safety claims ("a crash of any service loses nothing") are only
testable against a real process: :class:`ServiceProcess` starts
``python -m regionguard.cli <argv>`` in its own process group with output in
a log file, and offers the kill/terminate/wait-for-log operations chaos tests
need. :meth:`ServiceProcess.restart` starts a new incarnation appending to the
same log; log waits look only at the current incarnation by default.
"""

from __future__ import annotations

import atexit
import codecs
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["ServiceProcess", "ServiceError", "pid_alive"]


class ServiceError(RuntimeError):
    """The service exited or did not log the expected line in time (message has the log tail)."""


class ServiceProcess:
    """``[sys.executable, "-m", module, *argv]`` as a subprocess; started on construction.

    ``module`` defaults to ``regionguard.cli``, so only the installed package is
    needed (no repository checkout). ``cwd`` defaults to the caller's working
    directory; ``env`` is added to the caller's environment.
    """

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None, *,
                 log_dir: str | os.PathLike[str] | None = None, cwd: str | os.PathLike[str] | None = None,
                 start: bool = True, module: str = "regionguard.cli") -> None:
        self.name = name
        self.argv = [sys.executable, "-m", module, *argv]
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        log_dir = Path(log_dir) if log_dir else Path(tempfile.gettempdir()) / "regionguard-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        self.log_path = log_dir / f"{safe}-{os.getpid()}-{id(self):x}.log"
        self.cwd = str(cwd) if cwd else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._offset = 0  # log offset where the current incarnation starts
        self.starts = 0
        atexit.register(self._atexit)
        if start:
            self.start()

    def start(self) -> ServiceProcess:
        """Start a new incarnation (no-op if one is alive)."""
        if self.alive:
            return self
        with open(self.log_path, "ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} start #{self.starts + 1}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._offset = log.tell()
            self._proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=self.env, cwd=self.cwd, start_new_session=True)
        self.starts += 1
        return self

    def _atexit(self) -> None:
        if self.alive:
            self._signal_group(signal.SIGKILL)

    def restart(self, timeout: float = 10.0) -> ServiceProcess:
        self.terminate(timeout)
        return self.start()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, sig)  # its own session: pgid == pid, children included
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> int | None:
        """SIGKILL the process group (a crash); returns the exit code."""
        if self._proc is None:
            return None
        self._signal_group(signal.SIGKILL)
        return self._proc.wait(10)

    def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                return self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return self.kill()
        self._signal_group(signal.SIGKILL)  # reap leftover children of a dead leader
        return self._proc.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit on its own."""
        if self._proc is None:
            raise ServiceError(f"{self.name} was never started")
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ServiceError(f"{self.name} still running after {timeout}s\n{self.log_tail()}") from None

    def log_text(self, *, current: bool = False) -> str:
        """The whole log, or only the current incarnation's part."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._offset if current else 0)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 30.0, *,
                     current: bool = True) -> re.Match[str]:
        """Poll the log until ``pattern`` (``re.search``) matches; fail fast if the process exits."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        text = ""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with open(self.log_path, "rb") as f:
            f.seek(self._offset if current else 0)
            while True:
                exited = not self.alive
                text += decoder.decode(f.read())
                m = rx.search(text)
                if m:
                    return m
                if exited:
                    raise ServiceError(f"{self.name} exited (rc={self.returncode}) before logging "
                                       f"{rx.pattern!r}:\n{self.log_tail()}")
                if time.monotonic() >= deadline:
                    raise ServiceError(f"{self.name}: no {rx.pattern!r} in log after {timeout}s:\n{self.log_tail()}")
                time.sleep(0.05)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.terminate()

    def __repr__(self) -> str:
        state = "alive" if self.alive else f"rc={self.returncode}"
        return f"<ServiceProcess {self.name} pid={self.pid} {state}>"


def pid_alive(pid: int) -> bool:
    """True while a process with ``pid`` exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
