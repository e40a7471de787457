"""Network partitions between three regions on one machine (issue 26, item 3).

Real processes, real nftables, real cgroups: one agent subprocess per region, started in its
region's cgroup and, like the region's services, listening and connecting on 127.0.0.1 (so
only the cgroup tells the regions apart), plus, for r2, a listener run by the test process
itself on r2's loopback address, which only that address identifies (like the database fault
proxies).
Agents take commands over pipes, so a cut never cuts the test off from them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from regionguard_testkit.embedded.partition import (
    Partition,
    PartitionError,
    RegionCgroups,
    _delete_table,
    cgroup2_root,
    sweep_stale,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="partitions need root (nftables and cgroups); CI runs as root")

AGENT = Path(__file__).with_name("partition_agent.py")
ADDRS = {"r0": "127.0.1.1", "r1": "127.0.1.2", "r2": "127.0.1.3"}


def poll(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


WAIT_THEN_EXEC = "import os, sys; sys.stdin.readline(); os.execv(sys.argv[1], sys.argv[1:])"


class Agent:
    """partition_agent.py in ``region``'s cgroup."""

    def __init__(self, cgroups: RegionCgroups, region: str, *, placed: bool = False) -> None:
        # on 127.0.0.1 like the region's services: only its cgroup says which region it is
        self.region, self.host = region, "127.0.0.1"
        argv = [sys.executable, str(AGENT), self.host]
        if placed:  # started outside, moved in by pid before it opens a socket (it waits for a line)
            argv = [sys.executable, "-c", WAIT_THEN_EXEC, *argv]
        else:
            argv = cgroups.argv_in(region, argv)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if placed:
            cgroups.place(self.proc.pid, region)
            self.proc.stdin.write("go\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        self.port = json.loads(self._line())["port"]

    def _line(self) -> str:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert line, f"agent {self.region} exited ({self.proc.poll()})"
        return line

    def ask(self, **cmd: object) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self._line())

    def reaches(self, peer: Agent | Listener) -> bool:
        return bool(self.ask(op="connect", host=peer.host, port=peer.port)["ok"])

    def received(self) -> list[str]:
        return self.ask(op="received")["received"]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            pipe.close()  # type: ignore[union-attr]


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


class Listener:
    """An echo server in the test process (no region cgroup), bound to a region's address."""

    def __init__(self, host: str) -> None:
        socketserver.ThreadingTCPServer.daemon_threads = True
        self.server = socketserver.ThreadingTCPServer((host, 0), _Echo)
        self.host, self.port = host, self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bed() -> Iterator[tuple[Partition, dict[str, Agent], Listener]]:
    with RegionCgroups(ADDRS) as cgroups, Partition(cgroups, ADDRS) as part:
        agents: dict[str, Agent] = {}
        listener = Listener(ADDRS["r2"])
        try:
            for region in ADDRS:
                agents[region] = Agent(cgroups, region)
            yield part, agents, listener
        finally:
            for agent in agents.values():
                agent.stop()
            listener.stop()


def reachability(agents: dict[str, Agent], listener: Listener) -> dict[tuple[str, str], bool]:
    pairs = {(a, b): agents[a].reaches(agents[b]) for a in agents for b in agents if a != b}
    pairs.update({(a, "r2-listener"): agents[a].reaches(listener) for a in agents})
    return pairs


def test_a_cut_isolates_a_region_both_ways_and_heal_restores_it(bed) -> None:
    part, agents, listener = bed
    r0, r1, r2 = agents["r0"], agents["r1"], agents["r2"]
    assert all(reachability(agents, listener).values())
    assert r0.ask(op="open", name="live", host=r1.host, port=r1.port)["ok"]
    assert r0.ask(op="echo", name="live", payload="before")["ok"]

    part.cut("r0", ["r1", "r2"])
    after = reachability(agents, listener)
    cut_off = {k for k in after if "r0" in k}
    assert {k for k, ok in after.items() if not ok} == cut_off, after
    assert not r0.ask(op="echo", name="live", payload="during")["ok"]  # a live connection stalls

    part.heal()
    assert all(reachability(agents, listener).values())
    # the stalled bytes are retransmitted: the live connection resumes, nothing was reset
    assert poll(lambda: r0.ask(op="echo", name="live", payload="")["ok"])
    assert r0.ask(op="echo", name="live", payload="after")["ok"]
    assert r2.reaches(listener)


def test_a_one_way_cut_drops_only_one_direction(bed) -> None:
    part, agents, listener = bed
    r0, r1 = agents["r0"], agents["r1"]
    marker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the test's own: never cut

    def exchange(tag: str, expect: tuple[bool, bool]) -> tuple[bool, bool]:
        """Datagrams r0->r1 and r1->r0, then a marker from the test to each receiver: once the
        receiver has the later marker (and, if expected, the datagram), look whether the
        datagram arrived. Returns (r0->r1 arrived, r1->r0 arrived)."""
        r0.ask(op="udp", host=r1.host, port=r1.port, payload=f"{tag}:r0")
        r1.ask(op="udp", host=r0.host, port=r0.port, payload=f"{tag}:r1")
        seen = []
        for (sender, receiver), expected in zip(((r0, r1), (r1, r0)), expect):
            marker.sendto(f"{tag}:marker".encode(), (receiver.host, receiver.port))
            datagram = f"{tag}:{sender.region}"
            poll(lambda: {f"{tag}:marker", *([datagram] if expected else [])} <= set(receiver.received()))
            seen.append(datagram in receiver.received())
        return seen[0], seen[1]

    try:
        assert exchange("healed", (True, True)) == (True, True)
        part.cut("r0", direction="out")
        assert exchange("out", (False, True)) == (False, True)
        assert not r0.reaches(listener)  # r0's SYN to r2's address is dropped
        # r0's SYN-ACK is lost, so r1's connect fails (its SYN reached r0)
        assert not r1.ask(op="open", name="out", host=r0.host, port=r0.port)["ok"]
        part.heal()
        part.cut("r0", direction="in")
        assert exchange("in", (True, False)) == (True, False)
        assert not r0.reaches(listener)  # the SYN-ACK from r2's address is dropped
        assert not r0.ask(op="open", name="in", host=r1.host, port=r1.port)["ok"]  # r1's SYN-ACK is lost
        assert r1.reaches(listener)
        part.heal()
        assert exchange("healed-again", (True, True)) == (True, True)
        assert r0.reaches(listener)
    finally:
        marker.close()


def test_a_process_placed_by_pid_belongs_to_its_region(bed) -> None:
    part, agents, _ = bed
    placed = Agent(part.cgroups, "r0", placed=True)
    try:
        assert placed.proc.pid in part.cgroups.pids("r0")
        assert placed.reaches(agents["r1"]) and agents["r1"].reaches(placed)
        part.cut("r0")
        assert not placed.reaches(agents["r1"]) and not agents["r1"].reaches(placed)
        assert agents["r1"].reaches(agents["r2"])
    finally:
        placed.stop()


def test_everything_is_removed_when_the_test_fails(tmp_path: Path) -> None:
    root = cgroup2_root()
    with pytest.raises(RuntimeError, match="a failing test"):
        with RegionCgroups(ADDRS) as cgroups, Partition(cgroups, ADDRS) as part:
            agent = Agent(cgroups, "r0")  # still running in its cgroup at the failure
            part.cut("r0")
            assert f"table inet {part.table}" in nft_tables()
            dirs = [cgroups.path(r) for r in ADDRS]
            assert all(d.is_dir() for d in dirs)
            raise RuntimeError("a failing test")
    try:
        assert f"table inet {part.table}" not in nft_tables()
        assert not any(d.exists() for d in dirs)
        assert not any((Path("/sys/fs/cgroup") / d.name).is_symlink() for d in dirs)
        assert agent.proc.poll() is None  # moved out (to our own cgroup), not killed
        assert str(agent.proc.pid) not in " ".join(p.read_text() for p in root.glob("rg-*/cgroup.procs"))
    finally:
        agent.stop()


CHILD = """
import sys
from regionguard_testkit.embedded.partition import Partition, RegionCgroups
ADDRS = %r
part = Partition(RegionCgroups(ADDRS), ADDRS).start()
part.cut("r0")
print(part.table, flush=True)
sys.stdin.readline()  # until the test closes stdin (a normal exit) or kills us
"""


def start_child() -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD % (ADDRS,)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    table = child.stdout.readline().strip()  # type: ignore[union-attr]
    assert table == f"rg_part_{child.pid}", child.poll()
    return child, table


def test_a_run_that_exits_without_closing_removes_its_table_at_exit() -> None:
    child, table = start_child()
    assert f"table inet {table}" in nft_tables()
    child.communicate("")  # EOF on stdin: the child exits normally, atexit runs
    assert child.returncode == 0
    assert f"table inet {table}" not in nft_tables()
    assert not list(cgroup2_root().glob(f"rg-{child.pid}-*"))


def test_sweep_stale_removes_what_a_killed_run_left_and_nothing_live(bed) -> None:
    live, _, _ = bed
    child, table = start_child()
    child.send_signal(signal.SIGKILL)  # no atexit: the table and cgroups stay behind
    child.communicate()
    assert f"table inet {table}" in nft_tables()
    assert len(list(cgroup2_root().glob(f"rg-{child.pid}-*"))) == 3

    removed = sweep_stale()

    assert f"table inet {table}" in removed
    assert {f"cgroup rg-{child.pid}-{r}" for r in ADDRS} <= set(removed)
    assert f"table inet {table}" not in nft_tables()
    assert not list(cgroup2_root().glob(f"rg-{child.pid}-*"))
    assert not list(Path("/sys/fs/cgroup").glob(f"rg-{child.pid}-*"))
    assert f"table inet {live.table}" in nft_tables()  # this run is alive: left alone


def test_starting_a_partition_sweeps_what_killed_runs_left() -> None:
    child, table = start_child()
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert f"table inet {table}" in nft_tables()
    with RegionCgroups(["r0"]) as cgroups, Partition(cgroups):
        assert f"table inet {table}" not in nft_tables()
        assert not list(cgroup2_root().glob(f"rg-{child.pid}-*"))


def test_a_concurrent_run_cutting_the_same_regions_does_not_cut_this_one(bed) -> None:
    _, agents, listener = bed
    child, table = start_child()  # another live run: r0 cut off, same region addresses
    try:
        assert f"table inet {table}" in nft_tables()
        assert all(reachability(agents, listener).values())
    finally:
        child.communicate("")


def test_a_second_partition_in_the_same_process_is_refused_and_the_first_keeps_working(bed) -> None:
    part, agents, listener = bed
    with pytest.raises(PartitionError, match="another RegionCgroups"):
        RegionCgroups(["r0"])  # would have adopted (and on close emptied) the bed's r0 group
    with pytest.raises(PartitionError, match="one Partition per process"):
        Partition(part.cgroups).start()  # would have replaced the bed's table
    part.cut("r0")
    assert not agents["r0"].reaches(agents["r1"])
    part.heal()
    assert all(reachability(agents, listener).values())


def test_deleting_a_table_a_concurrent_sweep_removed_first_is_no_error() -> None:
    assert _delete_table(f"rg_part_{2**30}") is False  # no such table (pids stay below 2**22)


def test_bad_names_are_refused_before_anything_is_made() -> None:
    with pytest.raises(PartitionError, match="bad region name"):
        RegionCgroups(['r0"; flush ruleset; "'])
    with RegionCgroups(["r0"]) as cgroups:
        with pytest.raises(PartitionError, match="unknown region"):
            Partition(cgroups, {"r9": "127.0.1.9"})
        with pytest.raises(ValueError):
            Partition(cgroups, {"r0": "not-an-address"})
