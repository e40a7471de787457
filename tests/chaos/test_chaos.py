"""The short chaos schedule, in the normal test command (``make chaos`` runs the long one).

Every fault kind once -- blackhole, refuse, connection-reset storm, a real
PostgreSQL crash, SIGKILL of router, replayer and health leader, a router
rebalance -- against real processes under continuous load; then the checker
must find nothing lost, nothing applied twice, every row at its highest
version, every dead letter explained and every atomic write group applied
whole (one transaction) or not at all.
"""

from __future__ import annotations

import pytest

from tests.chaos.run import ALL_KINDS, ChaosRun

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(600)]


def test_short_chaos_schedule_loses_nothing_and_applies_nothing_twice(broker, pg_available, tmp_path) -> None:
    run = ChaosRun(writes=8000, faults=len(ALL_KINDS), rate=250, seed=11, workdir=tmp_path / "chaos", broker=broker)
    report = run.run()
    report.print_rich()
    assert {f.kind for f in report.faults} == set(ALL_KINDS)
    assert report.quiesce.ok, report.quiesce.detail
    res = report.check
    assert res.acknowledged >= 8000
    assert (res.lost, res.duplicates, res.stale_rows, res.missing_rows, res.extra_rows) == (0, 0, 0, 0, 0), res.report()
    assert res.unexplained_dead_letters == 0 and res.unknown_applied == 0 and res.misrouted == 0, res.report()
    assert res.dead_after_apply == 0, res.report()  # a dead letter never names an applied write
    assert res.replayed > 0 and res.failover_applied > 0 and res.dead_lettered > 0
    # atomic write groups (orders with items): each applied whole in one transaction or not at all, the bad
    # ones dead-lettered whole with nothing left, some held through an outage and replayed whole
    assert (res.partial_groups, res.split_groups) == (0, 0), res.report()
    assert res.groups > 0 and res.groups_applied > 0 and res.groups_dead_lettered > 0, res.report()
    assert res.groups_replayed > 0, res.report()
