"""What the lanes of one region share: one region-level story, however many lanes (pure, no I/O).

The producer below only records what would be published: these are unit tests
of the bookkeeping in router/region.py and replayer/region.py; the lanes
themselves run against the real broker and PostgreSQL in every integration test
(``router.lanes`` and ``replay.lanes`` default to 2).
"""

from __future__ import annotations

import json

from regionguard.core import metrics as m
from regionguard.core.config import parse_config
from regionguard.core.db import ApplyResult
from regionguard.replayer.region import RegionReplay
from regionguard.router.region import RegionShare

CFG = parse_config({"kafka": {"bootstrap": "127.0.0.1:1"}, "regions": {"eu": {"dsn": "postgresql://u@h/db"}},
                    "tables": {"users": {"key": ["id"]}}, "metrics": {"enabled": False}})


class Recorder:
    """Stands in for a confluent_kafka Producer: keeps (topic, value) of every produce."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def produce(self, topic, key=None, value=None, **_kw) -> None:
        self.sent.append((topic, json.loads(value)))

    def poll(self, _timeout=0) -> int:
        return 0

    def kinds(self) -> list[str]:
        return [v["kind"] for t, v in self.sent if t == CFG.topic("failover-events")]


def held_gauge() -> float:
    return m.HELD_PARTITIONS.labels("eu")._value.get()


def test_hold_events_are_per_region_not_per_lane():
    rec = Recorder()
    share = RegionShare(CFG, "eu", db=None, producer=rec, view_closed=lambda r: True, instance="r1")
    share.report(0, held=6, direct=0)
    share.report(1, held=6, direct=0)
    assert rec.kinds() == ["hold_started"] and held_gauge() == 12
    share.report(0, held=0, direct=6)      # one lane back in direct mode: the region is still holding
    assert rec.kinds() == ["hold_started"] and held_gauge() == 6
    share.report(1, held=0, direct=6)
    assert rec.kinds() == ["hold_started", "direct_resumed"] and held_gauge() == 0
    share.report(0, held=0, direct=6)      # nothing new: no repeated event
    assert rec.kinds() == ["hold_started", "direct_resumed"]


def test_one_observer_per_process_whatever_the_lanes():
    from regionguard.core.errors import RegionUnavailable

    rec = Recorder()
    share = RegionShare(CFG, "eu", db=None, producer=rec, view_closed=lambda r: True, instance="r1")
    share.mark_down(RegionUnavailable("eu", "refused"))
    obs = [v for t, v in rec.sent if t == CFG.topic("observations")]
    assert [o["observer"] for o in obs] == ["router:r1"] and obs[0]["ok"] is False
    assert share.is_closed("eu") is False  # every lane of the region holds now
    assert share.is_closed("us") is True   # other regions follow the health view


def test_replay_session_finishes_once_with_the_sum_of_its_lanes():
    rec = Recorder()
    shared = RegionReplay(CFG, "eu", producer=rec, view_closed=lambda r: True, instance="p1")
    shared.lane_active(0)
    shared.lane_active(1)
    shared.lane_batch(ApplyResult(applied=700, duplicates=2, stale=1), dead=3, expired=1)
    shared.lane_batch(ApplyResult(applied=300), dead=0, expired=0)
    shared.lane_idle(0)
    assert "replay_finished" not in rec.kinds()  # lane 1 is still draining
    shared.lane_idle(1)
    kinds = rec.kinds()
    assert kinds.count("replay_started") == 1 and kinds.count("replay_finished") == 1
    fin = [v for t, v in rec.sent if v.get("kind") == "replay_finished"][0]["detail"]
    assert (fin["applied"], fin["duplicates"], fin["stale"], fin["dead_lettered"], fin["expired"]) == (1000, 2, 1, 3, 1)


def test_a_drain_probe_in_flight_is_cancelled_before_the_pools_close():
    """The router closes its pools after its lanes; a ping still waiting on a black hole must not outlive them."""
    import asyncio

    class Blackhole:
        pinging = False

        async def ping(self) -> None:
            self.pinging = True
            await asyncio.Event().wait()  # never answers

    async def scenario() -> asyncio.Task:
        db = Blackhole()
        share = RegionShare(CFG, "eu", db=db, producer=Recorder(), view_closed=lambda r: True, instance="r1")
        share.probe_while_draining()
        await asyncio.sleep(0)  # let the probe start (no time passes: one turn of the loop)
        assert db.pinging
        probe = share._drain_probe
        await share.aclose()
        return probe

    probe = asyncio.run(scenario())
    assert probe.cancelled()
