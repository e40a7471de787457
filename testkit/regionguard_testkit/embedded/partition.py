"""Network partitions between regions that all live on one machine (nftables + cgroup v2).

A region's processes are told apart by cgroup (:mod:`.region_cgroups` says why not by
address). :class:`Partition` owns one nftables table per run, ``inet rg_part_<pid>``:

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

Hand-written because no library does this: it is a few nft rules. nft is driven through its
command line (Debian package ``nftables``) because its Python binding is not on PyPI. Cleanup
is the point ("remove every rule you add, also when a test fails"): :class:`Partition` is a
context manager and registers an atexit hook; :func:`sweep_stale` (also run on every start)
removes the tables and cgroups of runs whose process is dead (SIGKILLed: no atexit ran).
By hand: ``nft delete table inet rg_part_<pid>``; docs/partitions.md has the rest.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Literal

from .region_cgroups import PartitionError, RegionCgroups, cgroup2_root, pid_alive, sweep_stale_cgroups

__all__ = ["RegionCgroups", "Partition", "PartitionError", "sweep_stale", "cgroup2_root", "TABLE_PREFIX"]

TABLE_PREFIX = "rg_part_"
_STALE_TABLE = re.compile(rf"^{TABLE_PREFIX}(\d+)$")
Direction = Literal["both", "out", "in"]


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


def _delete_table(name: str) -> bool:
    """Delete ``inet <name>``; False when it is gone already (a concurrent sweep was first)."""
    try:
        _nft(f"delete table inet {name}\n")
    except PartitionError:
        if ("inet", name) in _tables():
            raise
        return False
    return True


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

    _open_tables: set[str] = set()  # of this process: a second start would replace the first's table

    def start(self) -> Partition:
        """Create the table (healed), after removing what killed runs left behind."""
        if self.table in Partition._open_tables:
            raise PartitionError(f"table inet {self.table} is in use: one Partition per process at a time")
        sweep_stale()
        body = "\n".join(f'    oif "lo" socket cgroupv2 level 1 "{self.cgroups.name(r)}" meta mark set {m:#x}'
                         for r, m in self.marks.items())
        # add+delete first: a leftover table of this pid (an earlier, crashed run) is replaced
        _nft(f"add table inet {self.table}\ndelete table inet {self.table}\n"
             f"table inet {self.table} {{\n"
             f"  chain by_sender {{\n    type filter hook output priority mangle; policy accept;\n{body}\n  }}\n"
             f"  chain cuts {{\n    type filter hook input priority mangle; policy accept;\n  }}\n}}\n")
        self._open = True
        Partition._open_tables.add(self.table)
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
        Partition._open_tables.discard(self.table)
        atexit.unregister(self.close)
        _delete_table(self.table)

    def __enter__(self) -> Partition:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def sweep_stale() -> list[str]:
    """Remove the ``rg_part_<pid>`` tables and ``rg-<pid>-*`` cgroups whose pid is dead.

    A run killed with SIGKILL ran no cleanup; its rules and groups stay behind. Returns what
    was removed (``table inet rg_part_1234``, ``cgroup rg-1234-r0``).
    """
    removed: list[str] = []
    for family, name in _tables():
        m = _STALE_TABLE.match(name)
        if family == "inet" and m and not pid_alive(int(m.group(1))) and _delete_table(name):
            removed.append(f"table inet {name}")
    return removed + sweep_stale_cgroups()
