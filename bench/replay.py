"""Replay drain rate against the database's own baselines, measured in the same run, alternated.

Each round measures, each in a fresh database and over the same rows (users
0..n-1, one upsert each, UUIDv7 write ids):

- ``replay``: region ``eu`` turns open (the bench publishes the
  ``rg.region-state`` record the health leader would) and PostgreSQL refuses
  the region's database (``ALLOW_CONNECTIONS false``, sessions terminated), so
  it is really gone; a real router holds N writes in ``rg.held.eu``; then the
  region heals and turns closed, and we time from the ``closed`` record until
  every partition is back in direct mode (router metric
  ``regionguard_held_partitions`` = 0), the issue's definition (how fast health
  notices a heal is ``bench/detection.py``'s). ``replay_batches`` is the drain
  alone, from the inbox's ``applied_at`` (first to last replay batch start);
- the baselines of ``bench/apply_baselines.py`` in the replayer's batches
  (``replay.batch_size`` with ``max_rate: 0``) and on as many connections as it
  has lanes (``replay.lanes``): ``raw``, ``raw_lanes``, ``copy_upsert``,
  ``copy_inbox``.

The order alternates: odd rounds run the replay first, even rounds last (the
baselines reversed too), so a drift of the machine's load does not favour one
side. After every measurement the database is counted (``applied_counts``):
n rows, each at its last value, n write ids in the inbox, and for the replay
the replayer's own ``replay_finished`` counts summing to n applied. A
measurement that fails the count is reported as failed, never as a rate.

The outage is made in PostgreSQL, not with the test suite's TCP fault proxy:
that proxy is Python relaying every byte (measured: it cuts raw asyncpg
throughput by ~45%), which would be a benchmark of the proxy.

Appends a CSV row a round to ``bench/results/replay.csv``; ``bench/report.py``
makes the docs' table of it. Target: replay/raw >= 0.8 (median).

    python bench/replay.py --n 100000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from apply_baselines import BASELINES, UNCLAIMED, applied_counts, run_baseline, shortfall  # noqa: E402
from router_apply import ADMIN_DSN, append_csv, commit, drop_db, exit_on_sigterm, fresh_db, produce  # noqa: E402

from regionguard.core.config import ReplayConfig, parse_config  # noqa: E402
from regionguard.core.kafka import ensure_topics, make_producer, router_group  # noqa: E402
from regionguard.core.models import RegionState, State  # noqa: E402
from regionguard_testkit.embedded import Broker, ServiceProcess, free_port  # noqa: E402
from tests.integration.helpers import group_members, read_json  # noqa: E402

MEASURES = ("replay", *BASELINES)


def scrape(port: int, name: str) -> float | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    total, seen = 0.0, False
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait(pred, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise TimeoutError(what)


def set_state(cfg, producer, state: State, seq: int) -> None:
    """What the health leader publishes when a breaker changes state."""
    rec = RegionState(region="eu", state=state, since=datetime.datetime.now(datetime.timezone.utc), seq=seq,
                      reason="bench", observer="bench")
    producer.produce(cfg.topic("region-state"), key=b"eu", value=rec.model_dump_json().encode())
    producer.flush(10)


async def allow_connections(name: str, allow: bool) -> None:
    """A real outage of one database: new sessions refused, live ones terminated."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
        if not allow:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await admin.close()


async def batch_span(dsn: str) -> float:
    """Seconds from the first to the last replay batch's start (the inbox's ``applied_at``)."""
    conn = await asyncpg.connect(dsn)
    try:
        return float(await conn.fetchval(
            "SELECT extract(epoch FROM max(applied_at) - min(applied_at)) FROM regionguard_applied "
            "WHERE source <> 'prefill'"))
    finally:
        await conn.close()


def replay_round(broker: Broker, n: int, partitions: int, logs: Path, py_spy: Path | None = None) -> dict:
    """One replay of n held writes; its figures, and ``failed`` if the database count is wrong."""
    tag = uuid.uuid4().hex[:8]
    name = f"rg_bench_replay_{tag}"
    dsn = asyncio.run(fresh_db(name))
    doc = {"kafka": {"bootstrap": broker.bootstrap, "topic_prefix": f"rb{tag}.", "partitions": partitions},
           "regions": {"eu": {"dsn": dsn}},
           "tables": {"users": {"key": ["id"], "version": "version"}},
           "replay": {"max_rate": 0}}
    cfg = parse_config(doc)
    ensure_topics(cfg)
    cfg_path = logs / f"replay-{tag}.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    env = {**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap}
    rport, pport = free_port(), free_port()
    states = make_producer(cfg)
    set_state(cfg, states, State.closed, 1)
    router = ServiceProcess("router", ["router", "--config", str(cfg_path), "--metrics-port", str(rport)],
                            env=env, log_dir=logs)
    replayer = ServiceProcess("replayer", ["replayer", "--config", str(cfg_path),
                                           "--metrics-port", str(pport)], env=env, log_dir=logs)
    writes = cfg.topic("writes", "eu")

    def router_assigned() -> bool:  # every writes partition owned by a router lane
        members = group_members(broker.bootstrap, router_group(cfg, "eu"), writes)
        return bool(members) and sum(len(ps) for ps in members.values()) == partitions

    try:
        wait(router_assigned, 60, "router group assigned", every=0.2)
        set_state(cfg, states, State.open, 2)
        asyncio.run(allow_connections(name, False))
        t0 = time.perf_counter()
        produce(broker.bootstrap, writes, n)
        wait(lambda: (scrape(rport, "regionguard_writes_held_total") or 0) >= n, 600, "held backlog")
        hold_rate = n / (time.perf_counter() - t0)
        spy = None if py_spy is None else subprocess.Popen(  # samples the replayer until the drain ends
            [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(replayer.pid), "--rate", "200",
             "--nonblocking", "--idle", "--threads", "--format", "raw", "--output", str(py_spy)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0 = {p: cpu_s(p) for p in (router.pid, replayer.pid)}
        asyncio.run(allow_connections(name, True))
        set_state(cfg, states, State.closed, 3)
        healed = time.perf_counter()
        wait(lambda: scrape(rport, "regionguard_held_partitions") == 0
             and (scrape(pport, "regionguard_writes_replayed_total") or 0) >= n, 900, "direct mode again")
        switch_s = time.perf_counter() - healed
        busy = {p: (cpu_s(p) - c) / switch_s for p, c in cpu0.items()}  # share of one core over the switch
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
            spy.wait(60)
        fin = [e["detail"] for e in read_json(broker.bootstrap, cfg.topic("failover-events"), idle=1.0)
               if e["kind"] == "replay_finished"]
        counts = {**asyncio.run(applied_counts(dsn, n)), "replayed": sum(d["applied"] for d in fin)}
        return {"replay": n / switch_s, "replay_batches": n / max(asyncio.run(batch_span(dsn)), 1e-3),
                "switch_s": switch_s, "hold_rate": hold_rate, "router_cpu": busy[router.pid],
                "replayer_cpu": busy[replayer.pid], "router_rss_mb": peak_rss_mb(router.pid),
                "replayer_rss_mb": peak_rss_mb(replayer.pid), "failed": shortfall(counts, n)}
    finally:
        replayer.terminate()
        router.terminate()
        asyncio.run(allow_connections(name, True))
        asyncio.run(drop_db(name))


def baseline_round(name: str, n: int, batch: int, lanes: int) -> dict:
    db = f"rg_bench_{name}_{uuid.uuid4().hex[:8]}"
    try:
        dsn = asyncio.run(fresh_db(db))
        rate = asyncio.run(run_baseline(name, dsn, n, batch, lanes))
        return {name: rate, "failed": shortfall(asyncio.run(applied_counts(dsn, n)), n, name not in UNCLAIMED)}
    finally:
        asyncio.run(drop_db(db))


def one_round(broker: Broker, n: int, partitions: int, logs: Path, first: bool,
              py_spy: Path | None = None) -> dict:
    """Every measurement once, replay first (``first``) or last; a failed one has no rate."""
    replay_cfg = ReplayConfig(max_rate=0)  # what replay_round's replayer runs with
    order = list(MEASURES) if first else list(reversed(MEASURES))
    row: dict = {}
    failed = []
    for name in order:
        try:
            r = (replay_round(broker, n, partitions, logs, py_spy) if name == "replay"
                 else baseline_round(name, n, replay_cfg.batch_size, replay_cfg.lanes))
        except TimeoutError as e:  # a drain that never finished is a failed round, not a slow one
            r = {name: 0.0, "failed": f"timed out: {e}"}
        reason = r.pop("failed")
        if reason:
            failed.append(name)
            print(f"  {name:<12} FAILED: {reason}", flush=True)
            r.pop(name, None)
            r.pop("replay_batches", None)
        else:
            print(f"  {name:<12} {r[name]:>9,.0f} writes/s", flush=True)
        row.update(r)
    if "switch_s" in row:
        print(f"  replay: closed -> all direct {row['switch_s']:.2f} s; batches alone {row.get('replay_batches', 0):,.0f}"
              f" writes/s; hold {row['hold_rate']:,.0f} writes/s; peak RSS router {row['router_rss_mb']:.0f} MB, "
              f"replayer {row['replayer_rss_mb']:.0f} MB; CPU over the switch: replayer {row['replayer_cpu']:.0%}, "
              f"router {row['router_cpu']:.0%} of a core", flush=True)
    row["failed"] = " ".join(failed)
    return row


def spread(xs: list[float], fmt: str) -> str:
    return f"median {statistics.median(xs):{fmt}} [{min(xs):{fmt}}-{max(xs):{fmt}}]" if xs else "no complete round"


def main() -> int:
    exit_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="held writes")
    ap.add_argument("--rounds", type=int, default=5, help="alternated rounds; the machine's load varies")
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--target", type=float, default=0.8, help="replay/raw, median")
    ap.add_argument("--py-spy", type=Path, default=None,
                    help="record the replayer with py-spy during each drain (collapsed stacks; .r<round>.txt)")
    ap.add_argument("--csv", type=Path, default=ROOT / "bench" / "results" / "replay.csv")
    args = ap.parse_args()
    if args.n < 1 or args.rounds < 1:
        ap.error("--n and --rounds must be at least 1")
    if args.py_spy and not (Path(sys.executable).parent / "py-spy").exists():
        ap.error("--py-spy needs py-spy in this environment: .venv/bin/pip install py-spy")
    broker = Broker.from_env()
    if not broker.is_running():
        broker.start()
    logs = Path(tempfile.gettempdir()) / "regionguard-bench"
    logs.mkdir(exist_ok=True)
    try:
        rounds = []
        for r in range(args.rounds):
            print(f"round {r + 1} ({'replay first' if r % 2 == 0 else 'replay last'}):", flush=True)
            spy = args.py_spy.with_suffix(f".r{r + 1}.txt") if args.py_spy else None
            row = one_round(broker, args.n, args.partitions, logs, first=r % 2 == 0, py_spy=spy)
            rounds.append(row)
            append_csv(args.csv, {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "commit": commit(), "broker": os.environ.get("RG_BROKER", "apache"), "n": args.n, "round": r + 1,
                **{k: round(row[k]) if k in row else "" for k in (*MEASURES, "replay_batches")},
                **{k: round(row[k], 2) if k in row else "" for k in ("switch_s", "replayer_cpu", "router_cpu",
                                                                     "router_rss_mb", "replayer_rss_mb")},
                "failed": row["failed"]})
        print(f"\nn={args.n} rounds={args.rounds} (shared 2-core machine: compare same-run ratios only)")
        fields = {"n": str(args.n)}
        for m in (*MEASURES, "replay_batches"):
            xs = [x[m] for x in rounds if m in x]
            print(f"{m:<14} writes/s {spread(xs, ',.0f')} ({len(xs)}/{len(rounds)} complete)")
            fields[f"{m}_wps"] = f"{statistics.median(xs):.0f}" if xs else "failed"
        for b in BASELINES:
            ratios = [x["replay"] / x[b] for x in rounds if "replay" in x and b in x]
            print(f"replay/{b:<12} {spread(ratios, '.2f')}")
            fields[f"replay/{b}"] = f"{statistics.median(ratios):.2f}" if ratios else "failed"
        complete = sum(1 for x in rounds if not x["failed"])
        ratios = [x["replay"] / x["raw"] for x in rounds if "replay" in x and "raw" in x]
        met = bool(ratios) and statistics.median(ratios) >= args.target
        print(f"replay/raw target {args.target}: {'meets' if met else 'MISSES'}")
        print("REPLAY " + " ".join(f"{k}={v}" for k, v in fields.items()) + f" rounds={len(rounds)} complete={complete}",
              flush=True)
        return 0 if complete == len(rounds) else 1
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
