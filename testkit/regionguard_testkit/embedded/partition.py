"""Network partitions between regions that all live on one machine (nftables + cgroup v2).

A region's processes cannot be told apart by address: librdkafka, the Java broker and asyncpg
cannot bind a source address, so every connection leaves from 127.0.0.1 whatever region it
belongs to. They are told apart by cgroup instead. :class:`RegionCgroups` makes one cgroup v2
group per region for the run (``rg-<pid>-<region>``); a process started in it (:meth:`argv_in`)
or moved into it (:meth:`place`, before it opens sockets: a socket keeps the cgroup it was
created in) is that region's. :class:`Partition` owns one nftables table per run,
``inet rg_part_<pid>``:

* its output chain marks every loopback packet a region's process sends (found by the sending
  socket's cgroup) with a mark unique to the run and region; skb marks survive loopback;
* its input chain, empty while healed, gets the drops of :meth:`Partition.cut`: a packet from
  region A (by mark, or by source address) to region B (by the receiving socket's cgroup, or by
  destination address) is dropped. Addresses identify the listeners the test process runs
  itself (the database fault proxies, bound to a region's own loopback address, in no
  region's cgroup). Live connections stall too (nothing is reset).

Marks are per run and addresses are matched in the input chain only, so another live run's
table (or a killed run's, until swept) never changes or drops this run's packets, unless both
runs have listeners on the same region addresses and those listeners talk to each other.

Hand-written because no library does this: it is a few nft rules plus cgroup bookkeeping. nft
is driven through its command line (Debian package ``nftables``) because its Python binding
is not on PyPI. Cleanup is the point ("remove every rule you add, also when a test fails"):
both objects are context managers and register an atexit hook; :func:`sweep_stale` removes the
tables and cgroups of runs whose process is dead (SIGKILLed, so no atexit ran).

By hand: ``nft delete table inet rg_part_<pid>``; for each ``/sys/fs/cgroup/unified/rg-<pid>-*``
move the pids in its ``cgroup.procs`` to the root ``cgroup.procs``, ``rmdir`` it and remove the
symlink ``/sys/fs/cgroup/rg-<pid>-*``. docs/partitions.md has the story.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

__all__ = ["RegionCgroups", "Partition", "PartitionError", "sweep_stale", "cgroup2_root", "TABLE_PREFIX"]

TABLE_PREFIX = "rg_part_"
CGROUP_PREFIX = "rg-"
# nft resolves `socket cgroupv2 level 1 "<name>"` relative to this directory, whatever the mount
_NFT_CGROUP_BASE = Path("/sys/fs/cgroup")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_STALE_TABLE = re.compile(rf"^{TABLE_PREFIX}(\d+)$")
_STALE_CGROUP = re.compile(rf"^{CGROUP_PREFIX}(\d+)-")
Direction = Literal["both", "out", "in"]


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


def _nft_exe() -> str:
    exe = shutil.which("nft") or ("/usr/sbin/nft" if os.path.exists("/usr/sbin/nft") else None)
    if exe is None:
        raise PartitionError("nft is not installed (Debian package nftables: scripts/setup.sh --test-tools)")
    return exe


def _nft(script: str) -> None:
    proc = subprocess.run([_nft_exe(), "-f", "-"], input=script, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PartitionError(f"nft failed ({proc.returncode}): {proc.stderr.strip()}\n--- script:\n{script}")


def _tables() -> list[tuple[str, str]]:
    """(family, name) of every nftables table."""
    out = subprocess.run([_nft_exe(), "-j", "list", "tables"], capture_output=True, text=True, check=True).stdout
    return [(t["table"]["family"], t["table"]["name"]) for t in json.loads(out)["nftables"] if "table" in t]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        link.unlink()


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
                path.mkdir(exist_ok=True)
                made.append(path)
                if self.root != _NFT_CGROUP_BASE:  # let nft find it under /sys/fs/cgroup too
                    link = _NFT_CGROUP_BASE / self.name(region)
                    if not link.is_symlink():
                        link.symlink_to(path)
        except OSError as exc:
            for path in made:
                _remove_cgroup(path, self._home)
            raise PartitionError(f"cannot create the region cgroups under {self.root}: {exc}") from exc
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


def _addr_match(side: Literal["saddr", "daddr"], address: str) -> str:
    ip = ipaddress.ip_address(address)  # ValueError on a bad address: it never reaches nft
    return f"{'ip' if ip.version == 4 else 'ip6'} {side} {ip}"


class Partition:
    """The nftables table ``inet rg_part_<pid>`` that cuts regions off from each other.

    ``addresses`` maps a region to the loopback address(es) its address-identified listeners
    (those the test process runs, outside any cgroup) are bound to. Healed on start.
    """

    def __init__(self, cgroups: RegionCgroups, addresses: Mapping[str, str | Sequence[str]] | None = None) -> None:
        self.cgroups = cgroups
        self.table = f"{TABLE_PREFIX}{cgroups.owner}"
        self.addresses: dict[str, list[str]] = {r: [] for r in cgroups.regions}
        for region, addrs in (addresses or {}).items():
            cgroups.name(region)  # an unknown region fails here
            self.addresses[region] = [str(ipaddress.ip_address(a)) for a in ([addrs] if isinstance(addrs, str) else addrs)]
        if len(cgroups.regions) > 255:
            raise PartitionError("at most 255 regions")
        # marks unique to the run (owner pid, region index): the drops of another live run, or of
        # a killed one not swept yet, never match this run's packets (pid_max <= 2**22: fits 32 bits)
        self.marks = {r: (cgroups.owner << 8) | (i + 1) for i, r in enumerate(cgroups.regions)}
        self.cuts: list[tuple[str, tuple[str, ...], Direction]] = []
        self._open = False

    def start(self) -> Partition:
        """Create the table (healed), after removing what killed runs left behind."""
        sweep_stale()
        body = "\n".join(f'    oif "lo" socket cgroupv2 level 1 "{self.cgroups.name(r)}" meta mark set {m:#x}'
                         for r, m in self.marks.items())
        # add+delete first: a leftover table of this pid (an earlier, crashed run) is replaced
        _nft(f"add table inet {self.table}\ndelete table inet {self.table}\n"
             f"table inet {self.table} {{\n"
             f"  chain by_sender {{\n    type filter hook output priority mangle; policy accept;\n{body}\n  }}\n"
             f"  chain cuts {{\n    type filter hook input priority mangle; policy accept;\n  }}\n}}\n")
        self._open = True
        atexit.register(self.close)
        return self

    def _drops(self, sender: str, receiver: str) -> list[str]:
        """Rules dropping what ``sender`` sends to ``receiver``: each by cgroup or by address."""
        senders = [f"meta mark {self.marks[sender]:#x}"] + [_addr_match("saddr", a) for a in self.addresses[sender]]
        receivers = [f'socket cgroupv2 level 1 "{self.cgroups.name(receiver)}"']
        receivers += [_addr_match("daddr", a) for a in self.addresses[receiver]]
        rules = [f"{s} {r} drop" for s in senders for r in receivers]
        # a listener's SYN-ACK leaves from a request socket, which nft cannot tie to a cgroup (it
        # matches full sockets only), so it would pass and the connect succeed: drop the
        # receiver's SYNs to the sender's listeners instead, the connect fails as with a lost SYN-ACK
        syn = "tcp flags & (syn | ack) == syn"
        rules.append(f'meta mark {self.marks[receiver]:#x} socket cgroupv2 level 1 "{self.cgroups.name(sender)}" {syn} drop')
        return rules

    def cut(self, region: str, others: Iterable[str] | None = None, *, direction: Direction = "both") -> None:
        """Drop traffic between ``region`` and ``others`` (default: every other region).

        ``out``: what ``region`` sends to them is dropped; ``in``: what they send to it;
        ``both``: all of it. Cuts add up until :meth:`heal`.
        """
        if not self._open:
            raise PartitionError("the partition is not started (use it as a context manager)")
        self.cgroups.name(region)
        peers = tuple(o for o in (others if others is not None else self.cgroups.regions) if o != region)
        for other in peers:
            self.cgroups.name(other)
        if direction not in ("both", "out", "in"):
            raise PartitionError(f"bad direction {direction!r}: both, out or in")
        rules: list[str] = []
        for other in peers:
            if direction in ("both", "out"):
                rules += self._drops(region, other)
            if direction in ("both", "in"):
                rules += self._drops(other, region)
        _nft("".join(f"add rule inet {self.table} cuts {rule}\n" for rule in rules))
        self.cuts.append((region, peers, direction))

    def heal(self) -> None:
        """Remove every cut: traffic flows again (stalled live connections resume)."""
        if self._open:
            _nft(f"flush chain inet {self.table} cuts\n")
        self.cuts.clear()

    def close(self) -> None:
        """Delete the table (idempotent; also run at exit)."""
        if not self._open:
            return
        self._open = False
        atexit.unregister(self.close)
        if ("inet", self.table) in _tables():
            _nft(f"delete table inet {self.table}\n")

    def __enter__(self) -> Partition:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def sweep_stale() -> list[str]:
    """Remove the ``rg_part_<pid>`` tables and ``rg-<pid>-*`` cgroups whose pid is dead.

    A run killed with SIGKILL ran no cleanup; its rules would keep dropping packets. Returns
    what was removed (``table inet rg_part_1234``, ``cgroup rg-1234-r0``).
    """
    removed: list[str] = []
    for family, name in _tables():
        m = _STALE_TABLE.match(name)
        if family == "inet" and m and not _pid_alive(int(m.group(1))):
            _nft(f"delete table inet {name}\n")
            removed.append(f"table inet {name}")
    root = cgroup2_root()
    home = _own_cgroup(root)
    for path in sorted(root.glob(f"{CGROUP_PREFIX}*")):
        m = _STALE_CGROUP.match(path.name)
        if path.is_dir() and m and not _pid_alive(int(m.group(1))):
            _remove_cgroup(path, home)
            removed.append(f"cgroup {path.name}")
    if root != _NFT_CGROUP_BASE:  # symlinks whose cgroup is gone
        for link in _NFT_CGROUP_BASE.glob(f"{CGROUP_PREFIX}*"):
            if link.is_symlink() and _STALE_CGROUP.match(link.name) and not link.exists():
                link.unlink()
    return removed
