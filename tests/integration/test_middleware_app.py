"""The example FastAPI app under uvicorn (a real server process), driven over real HTTP
while a region's database is blackholed through the harness FaultProxy and its
RegionState goes open -> half_open -> closed on the real broker."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from regionguard_testkit.testing import StatePublisher
from tests.harness import ServiceProcess, free_port, wait_port

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]
FEATURES = {
    "recommendations": {"off_when": ["open", "half_open", "stale"]},
    "checkout": {"critical": True},
}


def start_shop(cf, tmp_path, **env) -> tuple[ServiceProcess, str]:
    port = free_port()
    svc = ServiceProcess(
        "shop",
        ["--app-dir", str(REPO / "examples"), "shop:app", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "info", "--no-access-log"],
        env={"REGIONGUARD_CONFIG": str(cf.path), **env},
        log_dir=tmp_path,
        module="uvicorn",
    )
    assert wait_port("127.0.0.1", port, timeout=30), svc.log_tail()
    return svc, f"http://127.0.0.1:{port}"


def wait_for(client, method, url, pred, timeout=5.0, **kw):
    deadline = time.monotonic() + timeout
    while True:
        r = client.request(method, url, **kw)
        if pred(r) or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def test_example_app_degrades_and_recovers_over_http(regions, rg_config, tmp_path):
    lr = regions(("eu", "us", "ap"))
    for r in lr.names:
        lr.execute(r, "INSERT INTO users (id, name, email, version) VALUES (1, $1, NULL, 1), (2, 'Grace', NULL, 1)",
                   f"Ada ({r} copy)")
    cf = rg_config(lr, overrides={"features": FEATURES, "breaker": {"open_wait_s": 3},
                                  "health": {"heartbeat_s": 0.2, "stale_after_s": 2.0}})
    cfg = cf.load()
    pub = StatePublisher(cfg, heartbeat_s=0.2).start()
    svc, base = start_shop(cf, tmp_path)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            # -- healthy ------------------------------------------------------------
            r = http.get("/eu/users/1")
            assert r.status_code == 200, (r.text, svc.log_tail())
            assert r.json()["user"]["name"] == "Ada (eu copy)" and r.json()["tier"] == "home"
            assert r.headers["x-region-served"] == "eu" and r.headers["x-degraded"] == "false"
            assert r.headers["x-served-tier"] == "home"
            r = http.get("/eu/recommendations")
            assert r.status_code == 200 and r.headers["x-degraded"] == "false"
            assert http.get("/healthz").headers.get("x-degraded") is None  # no region: untouched
            r = http.get("/mars/users/1")
            assert r.status_code == 400 and r.json()["error"] == "unknown_region"

            # -- eu's database blackholed, health says open ---------------------------
            lr.proxy("eu").set_mode("blackhole")
            pub.set("eu", "open", reason="3 consecutive probe timeouts")
            t0 = time.monotonic()
            r = wait_for(http, "GET", "/eu/recommendations", lambda r: r.status_code == 503)
            switch_s = time.monotonic() - t0
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["error"] == "feature_disabled" and body["feature"] == "recommendations"
            assert body["region"] == "eu" and body["region_state"] == "open"
            assert 1 <= int(r.headers["retry-after"]) <= 3 and body["retry_after_s"] == int(r.headers["retry-after"])
            assert r.headers["x-degraded"] == "true" and r.headers["content-type"] == "application/json"

            t0 = time.monotonic()
            r = http.get("/eu/users/1")
            read_s = time.monotonic() - t0
            assert r.status_code == 200, r.text
            assert r.json()["user"]["name"] == "Ada (us copy)" and r.json()["tier"] == "fallback"
            assert r.json()["attempts"] == ["home:eu=breaker_open", "fallback:us=ok"]
            assert r.headers["x-region-served"] == "us" and r.headers["x-degraded"] == "true"
            assert "region eu open" in r.headers["x-degraded-reason"]
            assert "read from fallback us" in r.headers["x-degraded-reason"]
            assert read_s < 0.5, read_s  # the open breaker skips eu: no timeout paid

            r = http.post("/eu/orders", json={"id": 7, "user_id": 1, "amount": 9.5})
            assert r.status_code == 202, r.text  # checkout is critical: never turned off
            assert r.json()["note"] == "held in Kafka, applied when eu is back"
            write_id = r.json()["write_id"]

            r = http.get("/us/recommendations")  # other regions unaffected
            assert r.status_code == 200 and r.headers["x-degraded"] == "false"

            # -- half_open: reads try eu again (still blackholed -> timeout -> fallback)
            pub.set("eu", "half_open")
            r = wait_for(http, "GET", "/eu/status", lambda r: r.json()["state"] == "half_open")
            assert r.json()["disabled"] == ["recommendations"]
            time.sleep(1.0)  # let the reader's own cooldown (from an earlier timeout, if any) pass
            t0 = time.monotonic()
            r = http.get("/eu/users/2")
            assert r.status_code == 200 and r.headers["x-region-served"] == "us"
            assert r.json()["attempts"] == ["home:eu=timeout", "fallback:us=ok"]
            assert 0.4 < time.monotonic() - t0 < 2.0  # paid the 0.5 s tier timeout once

            # -- recovered ---------------------------------------------------------------
            lr.proxy("eu").set_mode("pass")
            pub.set("eu", "closed", reason="3 successful trial calls")
            time.sleep(1.0)  # the reader's own cooldown after the half_open timeout
            r = wait_for(http, "GET", "/eu/recommendations", lambda r: r.status_code == 200)
            assert r.status_code == 200 and r.headers["x-degraded"] == "false", r.headers
            r = http.get("/eu/users/1")
            assert r.json()["tier"] == "home" and r.headers["x-region-served"] == "eu"
            assert r.headers["x-degraded"] == "false"

            # -- the health service goes quiet: "stale" turns recommendations off everywhere
            pub.pause_heartbeats()
            r = wait_for(http, "GET", "/us/recommendations", lambda r: r.status_code == 503, timeout=6)
            assert r.status_code == 503 and r.json()["stale"] is True
            assert r.headers["retry-after"] == "2"
            pub.resume_heartbeats()
            r = wait_for(http, "GET", "/us/recommendations", lambda r: r.status_code == 200, timeout=5)
            assert r.status_code == 200
            print(f"503 within {switch_s:.3f}s of the open state; fallback read {read_s * 1000:.0f} ms")

        # the accepted order is really in Kafka, for the router to apply or hold
        c = Consumer(cfg.kafka_client_conf(**{"group.id": "t-shop", "enable.auto.commit": False}))
        try:
            c.assign([TopicPartition(cfg.topic("writes", "eu"), p, OFFSET_BEGINNING)
                      for p in range(cfg.kafka.partitions)])
            found = None
            deadline = time.monotonic() + 10
            while found is None and time.monotonic() < deadline:
                m = c.poll(0.2)
                if m is not None and not m.error() and json.loads(m.value())["id"] == write_id:
                    found = json.loads(m.value())
            assert found is not None and found["table"] == "orders" and found["key"] == {"id": 7}
        finally:
            c.close()
    finally:
        code = svc.terminate(timeout=10)
        pub.stop()
    # uvicorn re-raises SIGTERM after its graceful shutdown (exit -15); the lifespan shutdown ran
    assert code in (0, -15), svc.log_tail()
    assert "Application shutdown complete" in svc.log_text(), svc.log_tail()
    assert "Traceback" not in svc.log_text(), svc.log_tail()
