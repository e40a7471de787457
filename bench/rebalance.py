"""How long a region's partitions stop being consumed when a router joins or leaves its group.

Issue 11, item 5g: compare the eager assignor (``range``, what the router
uses), ``cooperative-sticky`` and Kafka 4's consumer group protocol
(KIP-848, ``group.protocol=consumer``) on the same broker in the same run.

Per protocol: a topic of 12 partitions gets a steady stream (each partition
every ~10 ms). Member A consumes alone; member B joins; after a while B leaves
cleanly (close: LeaveGroup); then B joins again and is SIGKILL-like lost (its
consumer is abandoned without close, so the group waits for the session
timeout). For every partition we record the gaps between consecutive records
consumed by anyone; the figure is the longest gap around each event, i.e. how
long some partition paused. Baseline: the longest gap of the same stream while
nothing happens, measured in the same run.

    RG_BROKER=apache .venv/bin/python bench/rebalance.py

Prints a table and one line per protocol:
``REBALANCE protocol=<p> join_s=<x> leave_s=<x> crash_s=<x> idle_s=<x>``.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from confluent_kafka import Consumer, Producer  # noqa: E402

from regionguard_testkit.embedded import Broker, create_topics  # noqa: E402

PARTITIONS = 12
SESSION_MS = 6000

PROTOCOLS = {
    "eager (range)": {"partition.assignment.strategy": "range"},
    "cooperative-sticky": {"partition.assignment.strategy": "cooperative-sticky"},
    "consumer (KIP-848)": {"group.protocol": "consumer"},
}


class Stream(threading.Thread):
    """Produces one record per partition every ``interval`` seconds until stopped."""

    def __init__(self, bootstrap: str, topic: str, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all",
                           "enable.idempotence": True, "partitioner": "murmur2_random"})
        self.topic, self.interval = topic, interval
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for part in range(PARTITIONS):
                self.p.produce(self.topic, value=str(time.time()).encode(), partition=part)
            self.p.poll(0)
            time.sleep(self.interval)
        self.p.flush(10)


class Member:
    """One group member in its own process (``--member``), so a crash is a real SIGKILL.

    The process prints ``<partition> <unix time>`` per consumed record; a thread here collects them.
    """

    def __init__(self, bootstrap: str, group: str, topic: str, protocol: str, seen: list,
                 lock: threading.Lock) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--member", bootstrap, group, topic, protocol],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, args=(seen, lock), daemon=True)
        self.reader.start()

    def _read(self, seen: list, lock: threading.Lock) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            part, _, t = line.partition(" ")
            with lock:
                seen.append((int(part), float(t)))

    def leave(self) -> None:
        """SIGTERM: the member closes its consumer (LeaveGroup)."""
        self.proc.terminate()
        self.proc.wait(20)

    def crash(self) -> None:
        self.proc.kill()
        self.proc.wait(20)


def member_main(bootstrap: str, group: str, topic: str, protocol: str) -> None:
    conf = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": True,
            "auto.offset.reset": "latest", "fetch.wait.max.ms": 10, **PROTOCOLS[protocol]}
    if conf.get("group.protocol") != "consumer":  # the new protocol takes these from the broker
        conf.update({"session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 1000})
    c = Consumer(conf)
    c.subscribe([topic])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        out = [f"{m.partition()} {time.time()}" for m in c.consume(500, 0.05) if m.error() is None]
        if out:
            print("\n".join(out), flush=True)
    c.close()


def longest_gap(seen: list, start: float, end: float) -> float:
    """The longest time any partition went without a consumed record within [start, end]."""
    worst = 0.0
    for part in range(PARTITIONS):
        times = sorted(t for p, t in seen if p == part)
        before = [t for t in times if t < start]
        inside = [t for t in times if start <= t <= end]
        prev = before[-1] if before else start
        for t in inside:
            worst = max(worst, t - prev)
            prev = t
        worst = max(worst, end - prev)
    return worst


def one(bootstrap: str, name: str, settle: float) -> dict[str, float]:
    topic = f"rebal-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: PARTITIONS})
    group = f"g-{uuid.uuid4().hex[:8]}"
    seen: list = []
    lock = threading.Lock()
    stream = Stream(bootstrap, topic)
    stream.start()
    a = Member(bootstrap, group, topic, name, seen, lock)
    deadline = time.time() + 30
    while time.time() < deadline and len({p for p, _ in seen}) < PARTITIONS:
        time.sleep(0.05)
    t_idle = time.time()
    time.sleep(settle)
    t_join = time.time()
    b = Member(bootstrap, group, topic, name, seen, lock)
    time.sleep(settle)
    t_leave = time.time()
    b.leave()
    time.sleep(settle)
    c = Member(bootstrap, group, topic, name, seen, lock)
    time.sleep(settle)
    t_crash = time.time()
    c.crash()
    time.sleep(SESSION_MS / 1000 + settle)
    t_end = time.time()
    a.leave()
    stream.stop.set()
    stream.join(15)
    with lock:
        data = list(seen)
    return {
        "idle": longest_gap(data, t_idle, t_join),
        "join": longest_gap(data, t_join, t_leave),
        "leave": longest_gap(data, t_leave, t_leave + settle),
        "crash": longest_gap(data, t_crash, t_end),  # includes waiting out the session timeout
    }


def main() -> int:
    if len(sys.argv) == 6 and sys.argv[1] == "--member":
        member_main(*sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settle", type=float, default=8.0, help="seconds between membership changes")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    broker = Broker.from_env(default="apache")
    broker.start()
    try:
        print(f"broker: {broker.kind} {broker.bootstrap}; {PARTITIONS} partitions, session {SESSION_MS} ms")
        print("| protocol | idle (baseline) | B joins | B leaves (LeaveGroup) | B lost (no leave) |")
        print("|---|---|---|---|---|")
        lines = []
        for _ in range(args.rounds):
            for name in PROTOCOLS:
                try:
                    r = one(broker.bootstrap, name, args.settle)
                except Exception as exc:  # noqa: BLE001 - one protocol failing must not hide the others
                    print(f"| {name} | failed: {type(exc).__name__}: {exc} |")
                    continue
                print(f"| {name} | {r['idle']:.2f} s | {r['join']:.2f} s | {r['leave']:.2f} s | {r['crash']:.2f} s |",
                      flush=True)
                lines.append(f"REBALANCE protocol={name.split()[0]} join_s={r['join']:.2f} "
                             f"leave_s={r['leave']:.2f} crash_s={r['crash']:.2f} idle_s={r['idle']:.2f}")
        print("\n".join(lines))
    finally:
        broker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
