"""A producer's headers follow its write (issue 27): on the held copy, on the dead letter, and on
the replayer's dead letter of a held write; regionguard's own headers go beside them, and a
producer cannot forge those. Real router and replayer on Apache Kafka and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from tests.integration.helpers import (
    ev_bytes, produce_raw, read_topic, wait_assigned, wait_until, write_event,
)

TRACE = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
PRODUCER_HEADERS = [("traceparent", TRACE), ("app-tenant", b"acme"), ("rg-applied-in", b"us"),
                    ("rg-verify", b"shed")]


def _headers(msg) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for k, v in msg.headers() or ():
        out.setdefault(k, []).append(v)
    return out


def test_producer_headers_follow_the_write_and_ours_cannot_be_forged(regions, rg_config, services):
    lr = regions(["eu", "us"])
    cfg = rg_config(lr, partitions=1)
    services("router", cfg.cli_args("router", "--no-health"))
    wait_assigned(cfg, "router", "eu")

    # a bad record: its dead letter keeps the producer's headers
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [(b"k", b"{not json")], headers=PRODUCER_HEADERS)
    (dl,) = wait_until(lambda: read_topic(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5) or None,
                       what="the dead letter")
    h = _headers(dl)
    assert h["traceparent"] == [TRACE] and h["app-tenant"] == [b"acme"]
    assert "rg-applied-in" not in h and "rg-verify" not in h

    # eu down: the held copy keeps them, ours beside them, the forged ones gone
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    held_ev = write_event("eu", "users", "upsert", {"id": 1}, {"name": "held", "version": 1})
    expiring = write_event("eu", "users", "upsert", {"id": 2}, {"name": "late", "version": 1},
                           expires_at=(datetime.now(timezone.utc) + timedelta(seconds=3)).isoformat())
    produce_raw(cfg.bootstrap, cfg.topic("writes", "eu"), [ev_bytes(held_ev), ev_bytes(expiring)],
                headers=PRODUCER_HEADERS)
    held = wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(
        [m for m in read_topic(cfg.bootstrap, cfg.topic("held", "eu"), idle=0.5) if m.value()]),
        what="the held copies")
    for m in held:
        h = _headers(m)
        assert h["traceparent"] == [TRACE] and h["app-tenant"] == [b"acme"], h
        assert "rg-hold-reason" in h and h["rg-source-topic"] == [cfg.topic("writes", "eu").encode()]
        assert "rg-applied-in" not in h, "a producer forged where the write was applied"
        assert "rg-verify" not in h, "a producer forged a verify mark"

    # eu back after the expiry: the replayer's expired dead letter keeps the producer's headers too
    wait_until(lambda: datetime.now(timezone.utc) > datetime.fromisoformat(expiring["expires_at"]),
               what="the expiry", timeout=10)
    services("replayer", cfg.cli_args("replayer", "--no-health"))
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: lr.count("eu", "users") == 1, timeout=40, what="the held write replayed")
    dls = wait_until(lambda: (lambda d: d if len(d) >= 2 else None)(
        read_topic(cfg.bootstrap, cfg.topic("dead-letter"), idle=0.5)), what="the expired dead letter")
    expired = [m for m in dls if json.loads(m.value())["reason"] == "expired"]
    assert len(expired) == 1
    h = _headers(expired[0])
    assert h["traceparent"] == [TRACE] and "rg-hold-reason" not in h
