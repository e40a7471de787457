"""One cgroup v2 group per region, so the kernel can tell a region's processes apart.

On one machine every region's clients connect from 127.0.0.1 (librdkafka, the Java broker and
asyncpg cannot bind a source address), but every socket remembers the cgroup of the process
that created it, and nftables can match that (:mod:`.partition`). :class:`RegionCgroups` makes
``rg-<pid>-<region>`` under the cgroup2 mount for a run; a process started in it
(:meth:`~RegionCgroups.argv_in`) or moved into it (:meth:`~RegionCgroups.place`, before it opens
sockets) is that region's, and so are its children.

Hand-written because no library does this: it is a few file writes under the cgroup2 mount.
Where that mount is not /sys/fs/cgroup (here: /sys/fs/cgroup/unified), a symlink
/sys/fs/cgroup/<group> lets nft find the group, as nft resolves names relative to
/sys/fs/cgroup. Closing (also at exit) moves leftover processes back to the caller's own
cgroup and removes the groups; :func:`sweep_stale_cgroups` removes those of dead runs.
"""

from __future__ import annotations

import atexit
import os
import re
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from .procs import pid_alive

__all__ = ["RegionCgroups", "PartitionError", "cgroup2_root", "pid_alive", "sweep_stale_cgroups", "CGROUP_PREFIX"]

CGROUP_PREFIX = "rg-"
# nft resolves `socket cgroupv2 level 1 "<name>"` relative to this directory, whatever the mount
_NFT_CGROUP_BASE = Path("/sys/fs/cgroup")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_STALE_CGROUP = re.compile(rf"^{CGROUP_PREFIX}(\d+)-")


class PartitionError(RuntimeError):
    """nft refused a rule, or a cgroup could not be made, joined or removed (message says which)."""


def cgroup2_root() -> Path:
    """Where the cgroup v2 hierarchy is mounted (from /proc/mounts: not always /sys/fs/cgroup)."""
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    raise PartitionError("no cgroup2 file system is mounted (partitions need cgroup v2)")


def _own_cgroup(root: Path) -> Path:
    """The cgroup v2 directory of this process: leftovers go back where we came from."""
    for line in Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines():
        if line.startswith("0::"):
            own = root / line[3:].lstrip("/")
            if (own / "cgroup.procs").exists():
                return own
    return root


def _remove_cgroup(path: Path, home: Path, timeout: float = 5.0) -> None:
    """Move what is left in ``path`` to ``home``, then rmdir it (retrying: a process that just
    exited keeps the group busy for a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            for pid in (path / "cgroup.procs").read_text(encoding="utf-8").split():
                try:
                    (home / "cgroup.procs").write_text(pid, encoding="utf-8")
                except (ProcessLookupError, FileNotFoundError):
                    pass  # exited meanwhile
            path.rmdir()
            break
        except FileNotFoundError:
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise PartitionError(f"cannot remove cgroup {path}: {exc}") from exc
            time.sleep(0.05)
    link = _NFT_CGROUP_BASE / path.name
    if link.is_symlink():
        link.unlink(missing_ok=True)  # a concurrent sweep may have been first


def _valid(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise PartitionError(f"bad {kind} name {name!r}: letters, digits, '_', '.', '-' only")
    return name


class RegionCgroups:
    """One cgroup v2 group per region for this run; processes started in it are the region's."""

    def __init__(self, regions: Iterable[str], *, owner: int | None = None) -> None:
        self.owner = owner if owner is not None else os.getpid()
        self.regions = [_valid("region", r) for r in regions]
        self.root = cgroup2_root()
        self._home = _own_cgroup(self.root)
        self._closed = False
        made: list[Path] = []
        try:
            for region in self.regions:
                path = self.path(region)
                # never adopt an existing group: closing would empty another open RegionCgroups' group
                path.mkdir()
                made.append(path)
                if self.root != _NFT_CGROUP_BASE:  # let nft find it under /sys/fs/cgroup too
                    link = _NFT_CGROUP_BASE / self.name(region)
                    if not link.is_symlink():
                        link.symlink_to(path)
        except OSError as exc:
            for path in made:
                _remove_cgroup(path, self._home)
            hint = " (another RegionCgroups of this process is open)" if isinstance(exc, FileExistsError) else ""
            raise PartitionError(f"cannot create the region cgroups under {self.root}: {exc}{hint}") from exc
        atexit.register(self.close)

    def name(self, region: str) -> str:
        """The cgroup's name, as nft rules spell it (level 1 below the cgroup2 root)."""
        if region not in self.regions:
            raise PartitionError(f"unknown region {region!r} (have {self.regions})")
        return f"{CGROUP_PREFIX}{self.owner}-{region}"

    def path(self, region: str) -> Path:
        return self.root / self.name(region)

    def argv_in(self, region: str, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped so the process joins ``region``'s cgroup before it execs (its children
        inherit it): a ``subprocess.Popen`` of the result needs no ``preexec_fn``."""
        procs = str(self.path(region) / "cgroup.procs")
        return ["/bin/sh", "-c", 'echo $$ > "$0" || exit 125; exec "$@"', procs, *argv]

    def place(self, pid: int, region: str) -> None:
        """Move ``pid`` (and its threads) into ``region``'s cgroup. Sockets it already has keep
        their old cgroup: place a process before it connects or listens."""
        try:
            (self.path(region) / "cgroup.procs").write_text(str(pid), encoding="utf-8")
        except OSError as exc:
            raise PartitionError(f"cannot place pid {pid} in region {region}: {exc}") from exc

    def pids(self, region: str) -> list[int]:
        return [int(p) for p in (self.path(region) / "cgroup.procs").read_text(encoding="utf-8").split()]

    def close(self) -> None:
        """Remove the groups; processes still in them move to this process's own cgroup."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        errors = []
        for region in self.regions:  # all of them, even when one fails
            try:
                _remove_cgroup(self.path(region), self._home)
            except PartitionError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> RegionCgroups:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def sweep_stale_cgroups() -> list[str]:
    """Remove the ``rg-<pid>-*`` groups (and symlinks) whose pid is dead; returns what went."""
    removed: list[str] = []
    root = cgroup2_root()
    home = _own_cgroup(root)
    for path in sorted(root.glob(f"{CGROUP_PREFIX}*")):
        m = _STALE_CGROUP.match(path.name)
        if path.is_dir() and m and not pid_alive(int(m.group(1))):
            _remove_cgroup(path, home)
            removed.append(f"cgroup {path.name}")
    if root != _NFT_CGROUP_BASE:  # symlinks whose cgroup is gone
        for link in _NFT_CGROUP_BASE.glob(f"{CGROUP_PREFIX}*"):
            if link.is_symlink() and _STALE_CGROUP.match(link.name) and not link.exists():
                link.unlink(missing_ok=True)  # a concurrent sweep may have been first
    return removed
