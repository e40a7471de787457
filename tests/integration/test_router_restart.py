"""A router restarted after an outage resumes its regions within seconds, with or without a replayer.

Issue 12's stall: once a region had held and replayed writes, every restart of
its router fenced each held partition and then waited for the replayer to
commit past the fence -- a record that needs no replay. With the replayer
stopped the region never resumed; with it running, the wait was the replayer's
next poll. Each restart adds a fence, so the test restarts several times. The
chaos suite runs the same loop dozens of times (``tests/chaos/test_restart_loop.py``).
"""

from __future__ import annotations

import pytest

from tests.integration.helpers import wait_assigned, wait_until
from tests.integration.restarts import RestartLoop

RESUME_BOUND_S = 20.0  # generous for a loaded 2-core CI machine; typical is 1-5 s (printed)
SETTLE_S = 5.0  # a rebalance's switch back to direct takes 0.05-0.3 s (router logs)


# not in the tansu smoke set: its restart loop (tests/chaos/test_restart_loop.py) restarts after
# outages with the replayer running and stopped there
@pytest.mark.parametrize("replayer_stays", [False, True], ids=["replayer-stopped", "replayer-running"])
def test_restarts_after_a_replayed_outage_resume_within_seconds(regions, rg_config, services, replayer_stays):
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=3)
    loop = RestartLoop(lr, cfg, services, regions=["eu", "us"], home="eu")
    loop.write_everywhere()
    wait_until(loop.all_applied, timeout=60, what="first writes applied directly")
    loop.outage()
    if not replayer_stays:
        loop.stop_replayer()
    for _ in range(3):
        loop.restart(bound_s=RESUME_BOUND_S)
    print(f"\ntime to resume ({'with' if replayer_stays else 'without'} a replayer): {loop.summary()}")
    assert max(t for _, t in loop.times) <= RESUME_BOUND_S, loop.times
    # nothing was held after the outage: the restarts went straight to direct. Read once the router's lanes
    # are all in the group: writes may apply before its second lane joins, and in the rebalance that
    # follows each new owner checks its held partition first, counted as held for about 0.1 s (a CI run
    # read 2 then); a partition still held SETTLE_S later is held for real
    wait_assigned(cfg, "router", "eu", timeout=30)
    wait_until(lambda: loop.held_partitions() == 0, timeout=SETTLE_S, what="every partition of eu direct")
    loop.check_none_lost()
