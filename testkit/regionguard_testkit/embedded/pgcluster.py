"""A region backed by its own throw-away PostgreSQL cluster.

Databases on the shared local server cannot be crashed one at a time; a
private cluster can: :meth:`PgCluster.crash` is ``pg_ctl stop -m immediate``
(no shutdown checkpoint, crash recovery on the next start), which is what a
regional outage looks like to regionguard. Durability is traded for speed
(``fsync=off``), so only a *process* crash is simulated, not power loss.
``synchronous_commit`` stays on: a commit returns only after its WAL reached
the kernel, so every acknowledged commit survives :meth:`PgCluster.crash`
(regionguard commits Kafka offsets right after the DB commit; with it off,
the last few hundred ms of commits vanished in a crash).

We usually run as root, and PostgreSQL refuses to; the server binaries then
run as the ``postgres`` OS user via ``runuser``.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from .net import free_port

__all__ = ["PgCluster", "PgClusterError", "pg_bindir"]

_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sock}'
fsync = off
synchronous_commit = on
full_page_writes = off
shared_buffers = 16MB
max_connections = 100
max_wal_size = 256MB
logging_collector = off
log_min_messages = warning
"""


class PgClusterError(RuntimeError):
    """initdb or pg_ctl failed; the message includes their output and the log tail."""


def pg_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<ver>/bin`` (or ``$PG_BINDIR``)."""
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name.split(".")[0]))
    if not dirs:
        found = shutil.which("pg_ctl")
        if found:
            return Path(found).parent
        raise PgClusterError("no PostgreSQL server binaries (looked in /usr/lib/postgresql/*/bin and PATH)")
    return Path(dirs[-1])


class PgCluster:
    """A private PostgreSQL cluster on a free loopback port, trust auth, user ``postgres``."""

    def __init__(self, name: str = "pg", *, port: int | None = None, base_dir: str | os.PathLike[str] | None = None,
                 os_user: str = "postgres") -> None:
        self.name = name
        self.port = port or free_port()
        self._fixed_port = port is not None
        self._own_dir = base_dir is None
        self.base = Path(base_dir) if base_dir else Path(tempfile.mkdtemp(prefix=f"rg-pg-{name}-"))
        self.data_dir = self.base / "data"
        self.sock_dir = self.base / "sock"
        self.log_path = self.base / "postgres.log"
        self.bindir = pg_bindir()
        self._as_user = os_user if os.geteuid() == 0 else None
        self._initialized = (self.data_dir / "PG_VERSION").exists()
        atexit.register(self._atexit)

    def _atexit(self) -> None:
        try:
            self.destroy()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_user:
            cmd = ["runuser", "-u", self._as_user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise PgClusterError(f"{' '.join(argv[:2])} failed (rc={proc.returncode}):\n{proc.stdout}{proc.stderr}"
                                 f"\n--- log tail ---\n{self.log_tail()}")
        return proc

    def init(self) -> PgCluster:
        """``initdb`` once; later calls are no-ops."""
        if self._initialized:
            return self
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            pw = pwd.getpwnam(self._as_user)
            for p in (self.base, self.sock_dir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--no-instructions", timeout=120)
        with open(self.data_dir / "postgresql.conf", "a") as f:
            f.write(_CONF.format(port=self.port, sock=self.sock_dir))
        self._initialized = True
        return self

    def start(self, timeout: float = 60.0) -> PgCluster:
        """Start (after initdb if needed) and wait until it accepts connections."""
        self.init()
        if self.is_running():
            return self
        for attempt in range(3):
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t",
                          str(int(timeout)), "start", timeout=timeout + 10)
                return self
            except PgClusterError as exc:
                if self._fixed_port or attempt == 2 or "already in use" not in str(exc):
                    raise
                self.port = free_port()  # lost the race for the port: later settings win
                with open(self.data_dir / "postgresql.conf", "a") as f:
                    f.write(f"port = {self.port}\n")
        return self

    def crash(self) -> None:
        """Kill the server the hard way (``-m immediate``): in-flight work is lost, recovery on restart."""
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-w", "stop", "-m", "immediate")

    def stop(self) -> None:
        """Clean shutdown (``-m fast``: disconnects clients, checkpoints)."""
        if self.is_running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "stop", "-m", "fast", timeout=70)

    def restart(self) -> PgCluster:
        self.stop()
        return self.start()

    def is_running(self) -> bool:
        if not self._initialized:
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def destroy(self) -> None:
        """Stop immediately and remove the cluster directory (if this object created it)."""
        try:
            self.crash()
        finally:
            if self._own_dir:
                shutil.rmtree(self.base, ignore_errors=True)
            self._initialized = (self.data_dir / "PG_VERSION").exists()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.destroy()

    def __repr__(self) -> str:
        return f"<PgCluster {self.name} 127.0.0.1:{self.port} {self.base}>"
