"""One replayer publishes a held write's dead letter once, however late its offset commit is.

The replayer commits a batch's offsets in a thread and goes on. A reset of its
reader while that commit was still in flight (the resume that follows a
partition assignment, a breaker that flickers, a commit the broker refused)
sought back to the broker's older commit: the batch was read again, its writes
were skipped by the inbox, but its dead letters were published a second time.
CI caught it once in ~1,100 tests (two `expired` dead letters for one write,
tests/integration/test_headers_follow.py). The test kit's ``slow_commits``
seam holds each replayer commit back for seconds, so the window is open every
time. Real router, replayer, Apache Kafka and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from regionguard.core.kafka import replayer_group
from tests.integration.helpers import (
    committed, ev_bytes, produce_raw, read_topic, wait_assigned, wait_until, write_event,
)

COMMIT_DELAY_S = 8  # each replayer commit reaches the broker this late: room to start a second replayer


def test_a_held_writes_dead_letter_is_published_once_while_its_commit_is_late(regions, rg_config, services):
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=1)
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")

    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    soon = (datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat()
    events = [write_event("eu", "users", "upsert", {"id": 1}, {"name": "kept", "version": 1}),
              write_event("eu", "users", "upsert", {"id": 2}, {"name": "late", "version": 1}, expires_at=soon),
              write_event("eu", "users", "upsert", {"id": 3}, {"name": "gone", "version": 1}, expires_at=soon)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in events])
    held = wait_until(lambda: (lambda r: r if len(r) >= 3 else None)(
        [m for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5) if m.value()]),
        what="the held copies")
    end = max(m.offset() for m in held) + 1
    wait_until(lambda: datetime.now(timezone.utc) > datetime.fromisoformat(soon), what="the expiry", timeout=10)

    lr.proxy("eu").set_mode("pass")
    slow = ["--replay-commit-delay", str(COMMIT_DELAY_S)]
    services("replayer", [*slow, *cfg.cli_args("replayer", "--no-health")],
             module="regionguard_testkit.embedded.slow_commits")
    wait_until(lambda: lr.count("eu", "users") == 1, timeout=40, what="the held write replayed")
    wait_until(lambda: len(_expired(cfg)) >= 2, what="the two expired dead letters")
    group = replayer_group(cfg.load(), "eu")
    topic = cfg.topic("held", "eu")
    assert committed(cfg.bootstrap, group, topic, 1)[0] < end, "the commit was not late: the test proves nothing"

    # while that commit is in flight, a second replayer joins: the partition changes hands
    services("replayer", [*slow, *cfg.cli_args("replayer", "--no-health")],
             module="regionguard_testkit.embedded.slow_commits")
    wait_assigned(cfg, "replayer", "eu", processes=2, timeout=60)

    # a last held write: once it is committed, whatever was read again before it has been handled
    last = write_event("eu", "users", "upsert", {"id": 4}, {"name": "last", "version": 1})
    produce_raw(cfg.bootstrap, topic, [ev_bytes(last)])
    wait_until(lambda: committed(cfg.bootstrap, group, topic, 1)[0] >= end + 1, timeout=60,
               what="the replayers' commit past the last held write")
    assert lr.count("eu", "users") == 2

    expired = _expired(cfg)
    assert sorted(d["write_id"] for d in expired) == sorted(e["id"] for e in events[1:]), \
        [(d["write_id"], d["offset"]) for d in expired]


def _expired(cfg) -> list[dict]:
    dls = [json.loads(m.value()) for m in read_topic(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)]
    return [d for d in dls if d["reason"] == "expired"]


def test_a_reader_reset_while_a_batch_is_handled_publishes_its_dead_letters_once(regions, rg_config, services):
    """The reset lands after the batch's dead letters are delivered and before its commit (the test
    kit's ``reset_mid_batch`` seam; seen once in CI at a replayer's start). The batch was handled for
    good: it must be settled and committed, not read again and dead-lettered a second time."""
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=1)
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    soon = (datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat()
    events = [write_event("eu", "users", "upsert", {"id": 1}, {"name": "kept", "version": 1}),
              write_event("eu", "users", "upsert", {"id": 2}, {"name": "late", "version": 1}, expires_at=soon)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in events])
    held = wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(
        [m for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5) if m.value()]),
        what="the held copies")
    end = max(m.offset() for m in held) + 1
    wait_until(lambda: datetime.now(timezone.utc) > datetime.fromisoformat(soon), what="the expiry", timeout=10)

    # every lane in its group before the region is reachable: a lane joining while the first one handles
    # the batch would move the partition (a handover, the next test's subject), not only reset the reader
    services("replayer", cfg.cli_args("replayer", "--no-health"), module="regionguard_testkit.embedded.reset_mid_batch")
    wait_assigned(cfg, "replayer", "eu", timeout=60)
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: lr.count("eu", "users") == 1, timeout=40, what="the held write replayed")
    group, topic = replayer_group(cfg.load(), "eu"), cfg.topic("held", "eu")
    wait_until(lambda: committed(cfg.bootstrap, group, topic, 1)[0] >= end, timeout=40,
               what="the replayer's commit past the held copies")
    # a last held write: once it is committed, whatever was read again before it has been handled
    last = write_event("eu", "users", "upsert", {"id": 4}, {"name": "last", "version": 1})
    produce_raw(cfg.bootstrap, topic, [ev_bytes(last)])
    wait_until(lambda: committed(cfg.bootstrap, group, topic, 1)[0] >= end + 1, timeout=40,
               what="the replayer's commit past the last held write")
    assert [d["write_id"] for d in _expired(cfg)] == [events[1]["id"]]


@pytest.mark.parametrize("when", ["delivered", "before"])
def test_a_handover_between_lanes_after_a_batchs_dead_letters_publishes_them_once(regions, rg_config, services,
                                                                                 tmp_path, when):
    """A rebalance lands after a batch's dead letters are delivered and before its commit (the test kit's
    ``handover_mid_batch`` seam: the lane leaves its group and the partition moves to the process's other
    lane; seen once under load when a second lane joined at start-up). The revoked lane hands the batch's
    position over synchronously: the new owner must not read it again and dead-letter it a second time.
    ``before``: the rebalance lands after the batch's writes are applied and before its dead letters are
    produced; the new owner reads the batch again and dead-letters it, so the revoked lane must not."""
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=1)
    assert cfg.load().replay.lanes >= 2, "the partition needs another lane to move to"
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    soon = (datetime.now(timezone.utc) + timedelta(seconds=2)).isoformat()
    events = [write_event("eu", "users", "upsert", {"id": 1}, {"name": "kept", "version": 1}),
              write_event("eu", "users", "upsert", {"id": 2}, {"name": "late", "version": 1}, expires_at=soon)]
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(e) for e in events])
    held = wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(
        [m for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5) if m.value()]),
        what="the held copies")
    end = max(m.offset() for m in held) + 1
    wait_until(lambda: datetime.now(timezone.utc) > datetime.fromisoformat(soon), what="the expiry", timeout=10)

    lr.proxy("eu").set_mode("pass")
    fired = tmp_path / "handover-fired"
    seam = ["--fired", str(fired), *(["--before"] if when == "before" else [])]
    services("replayer", [*seam, *cfg.cli_args("replayer", "--no-health")],
             module="regionguard_testkit.embedded.handover_mid_batch")
    wait_until(lambda: fired.exists(), timeout=60, what="the lane's handover after the dead letters")
    group, topic = replayer_group(cfg.load(), "eu"), cfg.topic("held", "eu")
    # a last held write: once it is committed, whatever was read again before it has been handled
    last = write_event("eu", "users", "upsert", {"id": 4}, {"name": "last", "version": 1})
    produce_raw(cfg.bootstrap, topic, [ev_bytes(last)])
    wait_until(lambda: committed(cfg.bootstrap, group, topic, 1)[0] >= end + 1, timeout=60,
               what="the replayer's commit past the last held write")
    assert lr.count("eu", "users") == 2
    assert [d["write_id"] for d in _expired(cfg)] == [events[1]["id"]]
