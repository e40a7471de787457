"""A real PgBouncer in transaction pooling mode in front of the test PostgreSQL (docs/poolers.md).

Started as a subprocess on a free 127.0.0.1 port with its own ini and userlist in a test's
tmp_path; the ``pgbouncer`` fixture (tests/conftest.py) stops it, also when the test fails.
PgBouncer is Debian's package (``scripts/setup.sh --test-tools`` installs it). Written here, not
taken from a library: starting one binary with an ini file is all there is to it.

``default_pool_size = 1``: every client of a database shares one server session, so what one
client leaves in that session (a prepared statement) is what the next client meets. That is what
transaction pooling does to a busy pool by chance; with one session it happens every time.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from tests.harness import free_port, wait_port

#: the first version that can keep prepared statements across transaction pooling
PREPARED_STATEMENTS_SINCE = (1, 21)


class PgBouncerError(RuntimeError):
    pass


def binary() -> str | None:
    """The pgbouncer executable (Debian puts it in /usr/sbin, not on every user's PATH)."""
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)


def version(exe: str) -> tuple[int, ...]:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
    found = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out)
    if not found:
        raise PgBouncerError(f"cannot tell pgbouncer's version from {out.splitlines()[:1]}")
    return tuple(int(g) for g in found.groups() if g is not None)


class PgBouncer:
    """One pgbouncer process: ``dsn(database)`` reaches that database of ``upstream`` through it."""

    def __init__(self, workdir: Path, *, upstream: tuple[str, int] = ("127.0.0.1", 5432), user: str = "postgres",
                 pool_mode: str = "transaction", pool_size: int = 1) -> None:
        exe = binary()
        if exe is None:
            raise PgBouncerError("pgbouncer is not installed (scripts/setup.sh --test-tools installs it)")
        self.exe, self.version = exe, version(exe)
        self.workdir, self.upstream, self.user = workdir, upstream, user
        self.pool_mode, self.pool_size = pool_mode, pool_size
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.started_in = 0.0  # seconds from spawn to accepting connections

    @property
    def keeps_prepared_statements(self) -> bool:
        return self.version >= PREPARED_STATEMENTS_SINCE

    def ini(self) -> str:
        host, port = self.upstream
        lines = [
            "[databases]",
            f"* = host={host} port={port}",  # any database name, passed through
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",  # the test PostgreSQL trusts 127.0.0.1; the user must be in the userlist
            f"auth_file = {self.workdir / 'userlist.txt'}",
            f"pool_mode = {self.pool_mode}",
            f"default_pool_size = {self.pool_size}",
            "max_client_conn = 200",
        ]
        if self.keeps_prepared_statements:
            lines.append("max_prepared_statements = 0")  # the case under test: the pooler keeps none
        if os.geteuid() == 0:
            lines.append(f"user = {self.user}")  # pgbouncer refuses to run as root
        return "\n".join(lines) + "\n"

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 20.0) -> PgBouncer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)  # readable by the user pgbouncer switches to
        (self.workdir / "userlist.txt").write_text(f'"{self.user}" ""\n')
        for _attempt in range(3):  # a free port may be taken before pgbouncer binds it
            self.port = free_port()
            ini = self.workdir / "pgbouncer.ini"
            ini.write_text(self.ini())
            log = open(self.workdir / "pgbouncer.log", "ab")  # noqa: SIM115 - the child keeps it
            t0 = time.monotonic()
            self.proc = subprocess.Popen([self.exe, str(ini)], stdout=log, stderr=subprocess.STDOUT)
            log.close()
            deadline = t0 + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                if wait_port("127.0.0.1", self.port, timeout=0.2):
                    self.started_in = time.monotonic() - t0
                    return self
            self.stop()
        raise PgBouncerError(f"pgbouncer did not start; see {self.workdir / 'pgbouncer.log'}:\n"
                             + (self.workdir / "pgbouncer.log").read_text()[-2000:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
