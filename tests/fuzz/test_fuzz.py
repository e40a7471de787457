"""The fuzzer's short profile in ``make test``: 1,000 seeded records through a real router and replayer.

Good and bad records interleaved on the same keys, a region outage in the middle (held, then
replayed), on Apache Kafka and PostgreSQL. Every good write applied exactly once and in its key's
order, every bad record dead-lettered once with a documented reason, both services alive and
never restarted, no partition's committed offset stuck behind its end for more than 2 s while the
region is healthy. The seed is printed on failure (``RG_FUZZ_SEED`` replays it);
``RG_FUZZ_EXCLUDE`` / ``RG_FUZZ_INCLUDE`` choose the strategies by name (tests/fuzz/strategies.py).
"""

from __future__ import annotations

import os

from .run import env_names, env_seed, run_fuzz
from .schema import FUZZ_SCHEMA, FUZZ_TABLES

RECORDS = int(os.environ.get("RG_FUZZ_RECORDS") or 1000)


def test_fuzzed_records_through_router_and_replayer(regions, rg_config, services) -> None:
    seed, names = env_seed(), env_names()
    lr = regions(["eu"], schema=FUZZ_SCHEMA)
    cfg = rg_config(lr, partitions=3, tables=FUZZ_TABLES)
    v = run_fuzz(lr, cfg, services, seed=seed, n=RECORDS, names=names, keys=40, settle_s=90.0)
    print(v.report())
    assert v.ok, f"fuzz seed {seed} (RG_FUZZ_SEED={seed} replays it)\n{v.report()}"
    assert v.applied and v.dead_lettered, v.report()
