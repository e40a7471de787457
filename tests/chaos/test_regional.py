"""The regional run's short version, in the normal test command (``make chaos-regional`` runs the long one).

Three regions on their own loopback addresses, each with a Kafka node, a database behind a fault
proxy, its router, replayer and health observer and a producer writing for every region's users;
under that load, a full regional event of r0 (its broker node, services and producer SIGKILLed, its
database blackholed, all back 12 s later: past the brokers' fencing and the routers' session) and then
a network partition of r1 (nftables, both ways, 10 s); ``make chaos-regional`` runs the long events.
The checker must find nothing lost, nothing applied twice, every row at its last write, no consent
row outside r0 (residency), and each region must converge after it returns. Latency goals are
reported, not asserted: timings on this shared 2-core machine are noise.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.chaos.regional import RegionalRun, default_events

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(900)]


def test_full_regional_event_and_partition_lose_nothing_and_converge(pg_available, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("the partition needs root and nftables (scripts/setup.sh --test-tools installs nftables)")
    run = RegionalRun(tmp_path / "regional", default_events(12.0, 10.0, ("full", "partition")), rate=80.0,
                      warmup_s=5.0, settle_s=2.0)
    report = run.run()
    print(report.text())
    assert [(e.kind, e.region) for e in report.events] == [("full", "r0"), ("partition", "r1")]
    assert report.quiesce.ok, report.quiesce.detail
    res = report.check
    assert res.acknowledged > 1000, res.report()
    assert (res.lost, res.duplicates, res.stale_rows, res.missing_rows, res.extra_rows) == (0, 0, 0, 0, 0), res.report()
    assert res.unexplained_dead_letters == 0 and res.unknown_applied == 0 and res.misrouted == 0, res.report()
    assert res.residency == 0, res.report()
    assert (res.partial_groups, res.split_groups) == (0, 0), res.report()
    for e in report.events:
        assert e.converge is not None and e.converge.ok, (e.kind, e.region, e.converge)
        assert all(e.survivors.get(r) for r in ("r0", "r1", "r2") if r != e.region), e.row()  # survivors wrote
    assert report.line().startswith("REGIONAL events=2 lost=0 duplicates=0 stale=0 ")
