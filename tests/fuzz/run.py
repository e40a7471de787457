"""The fuzz run: a seeded stream of good and bad records through a real router and replayer.

One region (``eu``) behind a fault proxy, a router and a replayer as real processes, real Apache
Kafka and PostgreSQL. The stream goes in three parts: with the region healthy; during an outage
(the proxy refuses, so the router holds); after it heals (the replayer drains the held topic, the
router switches back). Then, once the router's committed offsets reach the end of the writes topic
and the replayer's the end of the held topic, :func:`tests.fuzz.verdict.judge` holds every record
to what it had to be.

``python -m tests.fuzz.run --records 100000`` (``make fuzz``) prints the one-line summary;
``--exclude deep_nesting,oversized`` leaves strategies out by name (``--list`` names them);
``--seed S --show I`` prints record ``I`` of seed ``S`` and exits. ``tests/fuzz/test_fuzz.py`` runs
a short profile in ``make test``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from regionguard.core.kafka import replayer_group, router_group
from tests.harness import Broker, LocalRegions, ServiceProcess, free_port, make_config
from tests.integration.helpers import metric_value, wait_assigned

from . import observe
from .schema import FUZZ_SCHEMA, FUZZ_TABLES
from .stream import FuzzRecord, pick, stream
from .strategies import KNOWN_BUGS, STRATEGIES
from .verdict import Verdict, judge

REGION = "eu"
#: the share of the stream produced before the outage, and during it
HEALTHY, DURING = 0.4, 0.3


def _names(text: str | None) -> list[str]:
    return [s for s in (text or "").replace(" ", "").split(",") if s]


def default_exclude() -> str:
    """``$RG_FUZZ_EXCLUDE`` when set (even empty: run everything), else the known bugs."""
    env = os.environ.get("RG_FUZZ_EXCLUDE")
    return ",".join(KNOWN_BUGS) if env is None else env


def env_names() -> list[str]:
    """Strategies from ``$RG_FUZZ_INCLUDE`` / ``$RG_FUZZ_EXCLUDE`` (comma-separated names)."""
    return pick(_names(os.environ.get("RG_FUZZ_INCLUDE")) or None, _names(default_exclude()))


#: the seed under ``$CI``: like the property tests there (tests/conftest.py), a landing is not failed by a
#: new random stream; local runs explore a new one each time
CI_SEED = 1


def env_seed() -> int:
    if os.environ.get("RG_FUZZ_SEED"):
        return int(os.environ["RG_FUZZ_SEED"])
    return CI_SEED if os.environ.get("CI") else random.SystemRandom().randrange(2 ** 32)


def run_fuzz(lr: Any, cfg: Any, start: Callable[..., ServiceProcess], *, seed: int, n: int, names: list[str],
             keys: int = 40, rare_weight: int = 4, settle_s: float = 120.0,
             log: Callable[[str], None] = print) -> Verdict:
    """The whole run against regions ``lr`` and config ``cfg`` (a ConfigFile); ``start(name, argv)`` starts a service."""
    conf = cfg.load()
    writes, held, parts = cfg.topic("writes", REGION), cfg.topic("held", REGION), conf.kafka.partitions
    rport, pport = free_port(), free_port()
    router = start("router", cfg.cli_args("router", "--no-health", "--metrics-port", str(rport)))
    replayer = start("replayer", cfg.cli_args("replayer", "--no-health", "--metrics-port", str(pport)))
    wait_assigned(cfg, "router", REGION, timeout=60)
    watch = observe.PauseWatch(cfg.bootstrap, router_group(conf, REGION), writes).start()
    log(f"fuzz: seed {seed}, {n} records, strategies {','.join(names)}")
    records = stream(seed, n, names, region=REGION, keys=keys, rare_weight=rare_weight)
    kept: list[FuzzRecord] = []
    where: dict[int, tuple[int, int]] = {}

    def send(count: int) -> None:
        # drawn whole before any is produced: drawing takes a core (~1,400 records/s), and drawn while the
        # router worked it starved the router and PostgreSQL on a 2-core machine; careful batches took
        # 0.3-0.9 s instead of 20-90 ms, and the pauses measured were the generator's. Apps draw elsewhere.
        t0 = time.monotonic()
        part = list(itertools.islice(records, count))
        t1 = time.monotonic()
        for s in range(0, len(part), 2000):
            chunk = part[s:s + 2000]
            where.update(observe.produce(cfg.bootstrap, writes, chunk))
            kept.extend(r.light() for r in chunk)
        log(f"fuzz: {len(kept)} records produced ({t1 - t0:.1f} s to draw, {time.monotonic() - t1:.1f} s to produce)")

    try:
        send(int(n * HEALTHY))
        # the healthy part applied (or dead-lettered) by the router itself before the outage starts
        _soft_wait(lambda: not router.alive or not _behind(cfg, conf, writes, parts), settle_s,
                   "the router at the end of the healthy part", log)
        watch.arm(False)  # taking the region down: the router waits on PostgreSQL before it holds
        lr.proxy(REGION).set_mode("refuse")
        lr.proxy(REGION).reset_all()
        send(int(n * DURING))
        _soft_wait(lambda: not router.alive or metric_value(rport, "regionguard_held_partitions", region=REGION) == parts,
                   60, f"every partition of {REGION} held", log)
        lr.proxy(REGION).set_mode("pass")
        _soft_wait(lambda: not router.alive or metric_value(rport, "regionguard_held_partitions", region=REGION) == 0,
                   settle_s, f"every partition of {REGION} direct again after the replay", log)
        watch.arm(True)
        send(n - len(kept))
        _settle(cfg, conf, writes, held, parts, [router, replayer], settle_s, log)
    finally:
        watch.stop()
    crashes = [f"{p.name}: exited {p.returncode}" for p in (router, replayer) if not p.alive]
    crashes += [f"{p.name}: started {p.starts} times" for p in (router, replayer) if p.starts != 1]
    for p, port in ((router, rport), (replayer, pport)):
        restarts = metric_value(port, "regionguard_background_restarts_total") if p.alive else None
        if restarts:
            crashes.append(f"{p.name}: {restarts:.0f} background task restart(s) (/metrics)")
    v = judge(seed, kept, where, writes, observe.dead_letters(cfg.bootstrap, cfg.topic("dead-letter")),
              observe.held_sources(cfg.bootstrap, held), observe.tables(lr, REGION),
              crashes=crashes, max_pause_s=watch.max_pause_s)
    v.replay = (f"python -m tests.fuzz.run --seed {seed} --records {n} --keys {keys} --rare-weight {rare_weight} "
                f"--include {','.join(names)} --exclude ''")
    if watch.worst:
        v.examples["pause"].append(f"longest: {watch.max_pause_s:.1f} s, {watch.worst}")
    return v


def _soft_wait(pred: Callable[[], bool], timeout: float, what: str, log: Callable[[str], None]) -> None:
    """Wait for ``pred``; on timeout say so and go on: the verdict then names what is missing."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            log(f"fuzz: gave up after {timeout:.0f} s waiting for {what}")
            return
        time.sleep(0.2)


def _behind(cfg: Any, conf: Any, topic: str, parts: int, group: str | None = None) -> dict[str, int]:
    """Records of each partition of ``topic`` past the committed offset of ``group`` (the router's by default)."""
    end = observe.ends(cfg.bootstrap, topic)
    done = observe.committed(cfg.bootstrap, group or router_group(conf, REGION), topic, range(parts))
    return {f"{topic}[{p}]": end[p] - done[p] for p in range(parts) if done[p] < end[p]}


def _settle(cfg: Any, conf: Any, writes: str, held: str, parts: int, procs: list[ServiceProcess], timeout: float,
            log: Callable[[str], None]) -> None:
    """Until the router has committed the end of every writes partition and the replayer of every held one;
    gives up at ``timeout`` (or when a service died) and lets the verdict say what is missing."""
    deadline, behind = time.monotonic() + timeout, {}
    while time.monotonic() < deadline and all(p.alive for p in procs):
        behind = _behind(cfg, conf, writes, parts) | _behind(cfg, conf, held, parts, replayer_group(conf, REGION))
        if not behind:
            return
        time.sleep(0.5)
    log(f"fuzz: not settled: behind {behind}, alive {[p.alive for p in procs]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=None, help="default: $RG_FUZZ_SEED, else random (printed)")
    ap.add_argument("--include", default=os.environ.get("RG_FUZZ_INCLUDE", ""), help="strategy names, comma-separated")
    ap.add_argument("--exclude", default=default_exclude(),
                    help="strategy names, comma-separated (default: $RG_FUZZ_EXCLUDE, else the known bugs)")
    ap.add_argument("--keys", type=int, default=2000, help="entities the keyed records share")
    ap.add_argument("--rare-weight", type=int, default=1, help="weight of the big strategies against 20")
    ap.add_argument("--list", action="store_true", help="name the strategies and exit")
    ap.add_argument("--show", type=int, default=None, help="print record SHOW of the seed and exit")
    args = ap.parse_args(argv)
    names = pick(_names(args.include) or None, _names(args.exclude))
    seed = args.seed if args.seed is not None else env_seed()
    if args.list:
        for k, v in STRATEGIES.items():
            doc = (v.__doc__ or "").strip().splitlines()
            print(f"{k}: {doc[0] if doc else ''}" + (f"  [known bug, left out by default: {KNOWN_BUGS[k]}]"
                                                    if k in KNOWN_BUGS else ""))
        return 0
    if args.show is not None:
        rec = next(itertools.islice(stream(seed, args.show + 1, names, region=REGION, keys=args.keys,
                                           rare_weight=args.rare_weight), args.show, None))
        print(rec.strategy, rec.made)
        return 0
    work = Path(tempfile.mkdtemp(prefix="rg-fuzz-"))
    broker = Broker.from_env(default="apache", log_path=work / "broker.log")
    broker.start()
    lr = LocalRegions([REGION], prefix=f"fuzz_{uuid.uuid4().hex[:6]}")
    procs: list[ServiceProcess] = []
    try:
        lr.create()
        lr.setup_schema(FUZZ_SCHEMA)
        cfg = make_config(lr, broker.bootstrap, work / "regionguard.yaml", partitions=3, tables=FUZZ_TABLES)

        def start(name: str, argv: list[str]) -> ServiceProcess:
            procs.append(ServiceProcess(name, argv, log_dir=work / "logs"))
            return procs[-1]

        t0 = time.monotonic()
        v = run_fuzz(lr, cfg, start, seed=seed, n=args.records, names=names, keys=args.keys,
                     rare_weight=args.rare_weight, settle_s=max(120.0, args.records / 200))
        print(v.report(), file=sys.stderr)
        print(f"fuzz: {time.monotonic() - t0:.0f} s; logs in {work / 'logs'}", file=sys.stderr)
        print(v.line())
        return 0 if v.ok else 1
    finally:
        for p in reversed(procs):
            p.terminate(timeout=10)
        lr.drop()
        broker.close()
        shutil.rmtree(work / "kafka", ignore_errors=True)  # the broker's data (100,000 records: 300 MB); logs stay


if __name__ == "__main__":
    sys.exit(main())
