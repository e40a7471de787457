"""Fence-and-switch modes, held-write routing and the replay rate limit: pure logic, no I/O."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regionguard.core.models import WriteEvent
from regionguard.replayer.ratelimit import TokenBucket
from regionguard.router.decide import Route, route_held
from regionguard.router.modes import Action, Mode, PartitionModes

NOW = datetime(2026, 11, 26, 12, tzinfo=timezone.utc)


def test_empty_held_partition_starts_direct_and_nonempty_starts_held():
    m = PartitionModes()
    m.assigned([0, 1])
    m.looked_up(0, 0)
    m.looked_up(1, 17)
    assert m.mode(0) is Mode.direct and m.mode(1) is Mode.held


def test_unknown_backlog_needs_a_fence_before_direct():
    m = PartitionModes()
    m.assigned([0])
    m.looked_up(0, 5)
    acts = m.region_changed(closed=True)
    assert (Action.pause, 0) in acts and (Action.fence, 0) in acts
    assert m.replayer_progress(0, 10**9) == []  # no fence offset yet: never switch blind
    m.held_confirmed(0, 42)
    assert m.replayer_progress(0, 42) == []      # committed 42 means record 42 not yet applied
    assert m.replayer_progress(0, 43) == [(Action.resume, 0)]
    assert m.mode(0) is Mode.direct


def test_outage_while_draining_goes_back_to_held():
    m = PartitionModes()
    m.assigned([0])
    m.looked_up(0, 0)
    m.region_changed(closed=False)
    assert m.mode(0) is Mode.held
    m.held_confirmed(0, 7)
    assert m.region_changed(closed=True) == [(Action.pause, 0)]
    assert m.region_changed(closed=False) == [(Action.resume, 0)]
    assert m.mode(0) is Mode.held


def test_illegal_transition_is_a_bug():
    m = PartitionModes()
    m.assigned([0])
    with pytest.raises(RuntimeError):
        m._set(0, Mode.draining)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.tuples(st.just("region"), st.booleans()),
    st.tuples(st.just("divert"), st.integers(0, 3)),
    st.tuples(st.just("replay"), st.integers(0, 60)),
), max_size=40))
def test_never_direct_while_a_diverted_record_is_unreplayed(steps):
    """Safety property: a partition is direct only if everything it diverted was replayed."""
    m = PartitionModes()
    m.assigned([0])
    m.looked_up(0, 0)
    closed, next_off, committed, diverted = True, 0, 0, []
    for kind, arg in steps:
        if kind == "region":
            closed = arg
            for act, _ in m.region_changed(closed):
                if act is Action.fence:
                    m.held_confirmed(0, next_off)
                    diverted.append(next_off)
                    next_off += 1
        elif kind == "divert":
            if not closed or m.mode(0) is not Mode.direct:
                for _ in range(arg):
                    m.divert(0)
                    m.held_confirmed(0, next_off)
                    diverted.append(next_off)
                    next_off += 1
        else:
            committed = min(next_off, max(committed, arg))
            m.replayer_progress(0, committed)
        if m.mode(0) is Mode.direct:
            assert closed
            assert all(o < committed for o in diverted)


def _w(**kw) -> WriteEvent:
    base = dict(id=uuid.uuid4(), region="eu", table="t", op="upsert", key={"id": 1}, data={"x": 1})
    base.update(kw)
    return WriteEvent(**base)


def test_route_held_policies():
    up = lambda r: r == "us"  # noqa: E731 - only us is closed
    assert route_held(_w(), now=NOW, is_closed=up) == (Route.hold, None)
    assert route_held(_w(policy="shed"), now=NOW, is_closed=up) == (Route.shed, None)
    assert route_held(_w(policy="failover", fallback_regions=["ap", "us"]), now=NOW, is_closed=up) == (Route.failover, "us")
    assert route_held(_w(policy="failover", fallback_regions=["ap"]), now=NOW, is_closed=up) == (Route.hold, None)
    assert route_held(_w(expires_at=NOW - timedelta(seconds=1)), now=NOW, is_closed=up) == (Route.expired, None)
    assert route_held(_w(expires_at=NOW + timedelta(seconds=1)), now=NOW, is_closed=up) == (Route.hold, None)


def test_token_bucket_paces_without_sleeping():
    t = [0.0]
    b = TokenBucket(1000, burst=100, clock=lambda: t[0])
    assert b.delay_for(100) == 0.0
    assert b.delay_for(500) == pytest.approx(0.5)
    t[0] += 0.5
    assert b.delay_for(0) == 0.0
    assert TokenBucket(0, burst=1, clock=lambda: 0.0).delay_for(10**6) == 0.0  # 0 = unlimited


def test_a_failed_fence_is_tried_again_not_left_paused():
    m = PartitionModes()
    m.assigned([0, 1])
    m.looked_up(0, 5)
    m.looked_up(1, 0)
    assert (Action.fence, 0) in m.region_changed(closed=True)
    # the fence produce failed: nothing confirmed, so the partition must be fenced again
    assert m.unfenced() == [(Action.fence, 0)]
    assert m.region_changed(closed=True) == []  # a region change alone would never fence it again
    m.held_confirmed(0, 9)
    assert m.unfenced() == []
    assert m.replayer_progress(0, 10) == [(Action.resume, 0)]


async def test_a_slow_fence_produce_does_not_block_the_event_loop():
    """Issue 12: the fence's wait for Kafka runs off the loop, so other regions' lanes keep going."""
    import asyncio
    import time
    from types import SimpleNamespace

    from regionguard.router.switch import Switch

    class SlowBroker:  # answers the produce after 0.6 s, like a broker under a slow fsync
        def __init__(self) -> None:
            self.pending: list = []

        def produce(self, topic, key=None, value=None, on_delivery=None, partition=None, headers=None):
            self.pending.append((on_delivery, SimpleNamespace(topic=lambda: topic, partition=lambda: partition,
                                                              offset=lambda: 41)))

        def flush(self, timeout=None):
            time.sleep(0.6)
            for cb, msg in self.pending:
                cb(None, msg)
            self.pending.clear()
            return 0

    modes = PartitionModes()
    modes.assigned([3])
    modes.looked_up(3, 7)
    switch = SimpleNamespace(topic="w", held_topic="h", region="eu", instance="r1", producer=SlowBroker(),
                             consumer=SimpleNamespace(pause=lambda tps: None, resume=lambda tps: None),
                             paused=set(), modes=modes, lane_tag=lambda: "")
    gaps: list[float] = []

    async def ticker(stop: asyncio.Event) -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    stop = asyncio.Event()
    tick = asyncio.create_task(ticker(stop))
    t0 = time.monotonic()
    await Switch.perform(switch, modes.region_changed(closed=True))  # type: ignore[arg-type]
    took = time.monotonic() - t0
    stop.set()
    await tick
    assert took >= 0.6 and modes.parts[3].last_held == 41
    assert max(gaps) < 0.3, f"the loop stalled {max(gaps):.2f} s while the fence waited for Kafka"


def test_only_fences_between_the_replayers_commit_and_ours_switch_direct_without_the_replayer():
    """A restarted router fences a held partition whose backlog was replayed long ago: the fences of
    earlier restarts are all that lies past the replayer's commit, so it must not wait for the replayer."""
    m = PartitionModes()
    m.assigned([0])
    m.looked_up(0, 40)
    m.region_changed(closed=True)
    m.held_confirmed(0, 42)  # our fence; 40 and 41 are fences of earlier restarts
    assert m.replayer_progress(0, 40) == []
    assert m.unreplayed(0, 40) == (40, 42)
    assert m.only_fences_left(0, 40, 42) == [(Action.resume, 0)]
    assert m.mode(0) is Mode.direct
    assert m.unreplayed(0, 40) is None  # direct now: nothing to read


def test_a_scan_older_than_the_last_held_record_proves_nothing():
    m = PartitionModes()
    m.assigned([0])
    m.looked_up(0, 5)
    m.region_changed(closed=True)
    m.held_confirmed(0, 7)
    rng = m.unreplayed(0, None)
    assert rng == (0, 7)  # the replayer never committed: from the start
    m.held_confirmed(0, 9)  # e.g. a fence again after a failed produce
    assert m.only_fences_left(0, *rng) == []
    assert m.mode(0) is Mode.draining


async def test_a_failed_held_lookup_is_retried_not_taken_for_held(monkeypatch) -> None:
    """Issue 26: a new partition whose held-topic lookup fails (the held partition's leader cut off by a
    network partition, or not yet in the client's metadata) stays paused and is looked up again after a
    metadata refresh; it used to be taken for held, and every later write of the healthy region went
    through the held topic and the replayer until the heal. After LOOKUP_GIVE_UP_S it is taken for held
    after all: never paused for good."""
    from regionguard.router import switch as switch_mod

    monkeypatch.setattr(switch_mod, "LOOKUP_RETRY_S", 0.0, raising=False)
    sw, modes, consumer = _switch_with_held_lookups(["fail", (0, 0)])
    await sw._look_up(modes.pending_lookup())
    assert modes.mode(2) is Mode.new and consumer.resumed == []   # not decided, still paused
    assert consumer.refreshed == ["rg.held.eu"]                    # the next lookup asks the current leader
    await sw.step()
    assert modes.mode(2) is Mode.direct and consumer.resumed == [2]

    monkeypatch.setattr(switch_mod, "LOOKUP_GIVE_UP_S", 0.0, raising=False)
    sw, modes, consumer = _switch_with_held_lookups(["fail"])
    await sw._look_up(modes.pending_lookup())
    assert modes.mode(2) is Mode.held and consumer.resumed == [2]


def _switch_with_held_lookups(answers: list):
    """A router lane's Switch for region eu owning p2 whose held-topic lookups answer ``answers`` in turn."""
    from types import SimpleNamespace

    from confluent_kafka import KafkaError, KafkaException

    from regionguard.core.config import parse_config
    from regionguard.router.switch import Switch
    from regionguard.router.uncertain import Uncertain

    class Consumer:
        def __init__(self) -> None:
            self.resumed: list[int] = []
            self.refreshed: list[str] = []

        def get_watermark_offsets(self, tp, timeout=5.0, cached=False):
            if tp.topic != "rg.held.eu":
                return (0, 12)
            a = answers.pop(0)
            if a == "fail":
                raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
            return a

        def list_topics(self, topic=None, timeout=5.0):
            if topic == "rg.held.eu":
                self.refreshed.append(topic)
            return SimpleNamespace(cluster_id="abc")

        def resume(self, tps):
            self.resumed.extend(tp.partition for tp in tps)

        def pause(self, tps):
            pass

    cfg = parse_config({"regions": {"eu": {"dsn": "postgresql://u@h/db"}}, "tables": {"users": {"key": ["id"]}}})
    modes = PartitionModes()
    modes.assigned([2])

    async def probe() -> None:
        return None

    share = SimpleNamespace(probe_if_due=probe, is_closed=lambda r: True, report=lambda *a: None)  # region healthy
    consumer = Consumer()
    sw = Switch(cfg, "eu", consumer=consumer, offsets_reader=None, producer=None,  # type: ignore[arg-type]
                modes=modes, uncertain=Uncertain(), paused=set(), share=share,  # type: ignore[arg-type]
                reader=None, instance="router-eu")  # type: ignore[arg-type]
    return sw, modes, consumer
