"""RegionGuardMiddleware in-process on a plain Starlette app (real broker for the views):
region resolution (header, path param, callback), prefix and decorator feature rules,
pass-through of non-HTTP scopes, and the lifespan hooks."""

from __future__ import annotations

import time

import warnings

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette 1.x nudges towards httpx2; the httpx client works
    from starlette.testclient import TestClient

from regionguard.client import FeatureFlags, RegionGuardMiddleware, RegionStates, requires_feature
from regionguard_testkit.testing import StatePublisher
from tests.harness import make_config

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")]

DSNS = {"eu": "postgresql://app@127.0.0.1:1/eu", "us": "postgresql://app@127.0.0.1:1/us"}
FEATURES = {"search": {"off_when": ["open"]}, "exports": {"off_when": ["open", "half_open"]},
            "checkout": {"critical": True}}


def until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pred()


async def whoami(request):
    rg = getattr(request.state, "regionguard", None)
    if rg is None:
        return JSONResponse({"region": None})
    return JSONResponse({"region": request.state.region, "state": rg.state_name,
                         "enabled_search": rg.is_enabled("search"), "disabled": sorted(rg.disabled)})


@requires_feature("exports")
async def export(request):
    return PlainTextResponse("csv...")


@requires_feature("checkout")
async def checkout(request):
    return PlainTextResponse("ok")


async def echo_ws(ws):
    await ws.accept()
    await ws.send_text("scope has regionguard: " + str("regionguard" in ws.scope.get("state", {})))
    await ws.close()


def build(cfg, **options):
    app = Starlette(routes=[
        Route("/whoami", whoami),
        Route("/r/{region}/whoami", whoami),
        Route("/r/{region}/export", export),
        Route("/r/{region}/checkout", checkout),
        Route("/search/{q}", whoami),
        WebSocketRoute("/ws", echo_ws),
        # mounted: the region param on the mount, the feature on the endpoint inside
        Mount("/m/{region}", routes=[Route("/export", export), Route("/whoami", whoami)]),
        Mount("/api", app=Starlette(routes=[Route("/r/{region}/export", export)])),
    ])
    app.add_middleware(RegionGuardMiddleware, config=cfg, features={"/search": "search"}, **options)
    return app


@pytest.fixture
def cfg(broker, tmp_path):
    return make_config(DSNS, broker.bootstrap, tmp_path / "rg.yaml",
                       overrides={"features": FEATURES, "breaker": {"open_wait_s": 4}}).load()


def test_region_resolution_features_and_pass_through(cfg):
    with StatePublisher(cfg, heartbeat_s=0.3) as pub:
        app = build(cfg, default_region=None)
        with TestClient(app) as client:  # runs the lifespan: views started and caught up
            r = client.get("/r/us/whoami")
            assert r.json()["region"] == "us" and r.headers["x-region-served"] == "us"
            r = client.get("/whoami", headers={"X-Region": "eu"})
            assert r.json() == {"region": "eu", "state": "closed", "enabled_search": True, "disabled": []}
            r = client.get("/whoami")  # no region at all: untouched
            assert r.json() == {"region": None} and "x-degraded" not in r.headers

            pub.set("eu", "open", reason="drill")
            assert until(lambda: client.get("/whoami", headers={"X-Region": "eu"}).json()["state"] == "open")
            r = client.get("/whoami", headers={"X-Region": "eu"})
            assert r.json()["disabled"] == ["exports", "search"] and r.headers["x-degraded"] == "true"
            assert r.headers["x-degraded-reason"] == "region eu open; features off: exports,search"
            # decorator
            r = client.get("/r/eu/export")
            assert r.status_code == 503 and r.json()["feature"] == "exports"
            assert r.json()["reason"].startswith("region eu open (drill)")
            assert 3 <= int(r.headers["retry-after"]) <= 4  # the rest of open_wait_s
            assert client.get("/r/us/export").status_code == 200
            assert client.get("/r/eu/checkout").status_code == 200  # critical
            # path prefix mapping (region from the header)
            r = client.get("/search/shoes", headers={"X-Region": "eu"})
            assert r.status_code == 503 and r.json()["feature"] == "search"
            assert client.get("/search/shoes", headers={"X-Region": "us"}).status_code == 200

            pub.set("eu", "half_open")
            assert until(lambda: client.get("/search/x", headers={"X-Region": "eu"}).status_code == 200)
            assert client.get("/r/eu/export").status_code == 503

            # websockets pass through untouched
            with client.websocket_connect("/ws", headers={"X-Region": "eu"}) as ws:
                assert ws.receive_text() == "scope has regionguard: False"


def test_routes_inside_mounts(cfg):
    with StatePublisher(cfg, heartbeat_s=0.3) as pub:
        app = build(cfg, default_region=None)
        with TestClient(app) as client:
            assert client.get("/m/us/whoami").json()["region"] == "us"  # param of the mount
            assert client.get("/api/r/us/export").headers["x-region-served"] == "us"  # param inside a sub-app
            pub.set("eu", "open", reason="drill")
            assert until(lambda: client.get("/m/eu/export").status_code == 503)  # decorator inside a mount
            r = client.get("/api/r/eu/export")
            assert r.status_code == 503 and r.json()["feature"] == "exports"
            assert client.get("/m/us/export").status_code == 200


def test_callback_resolver_and_unknown_region(cfg):
    with StatePublisher(cfg, heartbeat_s=0.3):
        app = build(cfg, region_resolver=lambda scope: "us" if scope["path"].endswith("whoami") else None,
                    default_region="eu")
        with TestClient(app) as client:
            assert client.get("/r/eu/whoami").json()["region"] == "us"  # the callback wins
            assert client.get("/r/eu/export").headers["x-region-served"] == "eu"  # path param
            assert client.get("/search/x").headers["x-region-served"] == "eu"  # default
            r = client.get("/r/mars/export")
            assert r.status_code == 400 and r.json()["regions"] == ["eu", "us"]


def test_shared_views_are_not_stopped_by_the_app(cfg):
    with StatePublisher(cfg, heartbeat_s=0.3):
        states = RegionStates(cfg).start()
        flags = FeatureFlags(cfg, states=states).start()
        try:
            app = build(cfg, states=states, flags=flags)
            with TestClient(app) as client:
                assert client.get("/r/eu/whoami").json()["state"] in ("closed", "unknown")
            # after the app's shutdown the caller's views still run
            assert until(lambda: states.state("eu") is not None)
            assert states.wait_ready(1)
        finally:
            flags.stop()
            states.stop()
