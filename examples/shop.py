"""A FastAPI shop that keeps working, reduced and on purpose, while its region's database is down.

Run it against any regionguard config (the regions need the ``users`` table;
see ``docs/degradation.md`` for a drill)::

    REGIONGUARD_CONFIG=regionguard.yaml uvicorn --app-dir examples shop:app --port 8000

    curl -i localhost:8000/eu/users/1          # read with fallback tiers
    curl -i localhost:8000/eu/recommendations  # 503 + Retry-After while eu's features are off
    curl -i -X POST localhost:8000/eu/orders -H 'content-type: application/json' \\
         -d '{"id": 7, "user_id": 1, "amount": 9.5}'   # checkout: critical, always accepted

Config needed beyond regions and tables::

    features:
      recommendations: {off_when: [open, half_open, stale]}
      checkout: {critical: true}

Everything regionguard-specific is the middleware line, the decorator and
``request.state``: the region comes from the ``{region}`` path parameter.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from decimal import Decimal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from regionguard.client import ReadUnavailable, RegionGuardMiddleware, requires_feature
from regionguard.core.config import load_config
from regionguard.core.kafka import Confirmer, make_producer
from regionguard.core.models import Op, Policy, WriteEvent

cfg = load_config(os.environ.get("REGIONGUARD_CONFIG"))

app = FastAPI(title="regionguard example shop")
app.add_middleware(
    RegionGuardMiddleware,
    config=cfg,
    reader_options={"tier_timeout_s": float(os.environ.get("SHOP_TIER_TIMEOUT_S", "0.5"))},
)

_producer = None
_producer_lock = threading.Lock()


def _publish(ev: WriteEvent) -> None:
    """Publish a write and wait for Kafka's ack (then regionguard guarantees it)."""
    global _producer
    with _producer_lock:
        if _producer is None:
            _producer = make_producer(cfg)
        c = Confirmer()
        c.produce(_producer, cfg.topic("writes", ev.region), ev.model_dump_json().encode(), key=ev.kafka_key())
        c.wait(_producer, timeout=10)


def _plain(row: dict) -> dict:
    return {k: (float(v) if isinstance(v, Decimal) else v) for k, v in row.items()}


@app.exception_handler(ReadUnavailable)
async def read_unavailable(request: Request, exc: ReadUnavailable):
    return JSONResponse(
        {"error": "read_unavailable", "region": exc.region,
         "attempts": [f"{a.tier}:{a.source}={a.outcome}" for a in exc.attempts]},
        status_code=503, headers={"Retry-After": "2"},
    )


@app.get("/healthz")
async def healthz():
    return {"ok": True}


@app.get("/{region}/status")
async def status(request: Request, region: str):
    rg = request.state.regionguard
    return {"region": region, "state": rg.state_name, "stale": rg.stale, "disabled": sorted(rg.disabled)}


@app.get("/{region}/users/{user_id}")
async def get_user(request: Request, region: str, user_id: int):
    res = await request.state.reader.get("users", {"id": user_id}, columns=["id", "name", "version"])
    if res.row is None:
        raise HTTPException(404, "no such user")
    return {"user": _plain(res.row), "served_by": res.source, "tier": res.tier, "stale_by_s": res.stale_by_s,
            "attempts": [f"{a.tier}:{a.source}={a.outcome}" for a in res.attempts]}


@app.get("/{region}/recommendations")
@requires_feature("recommendations")
async def recommendations(request: Request, region: str):
    res = await request.state.reader.select("users", columns=["id", "name"], limit=3)
    return {"recommended": [_plain(r) for r in res.rows], "served_by": res.source}


class OrderIn(BaseModel):
    id: int
    user_id: int
    amount: float


@app.post("/{region}/orders", status_code=202)
@requires_feature("checkout")
async def place_order(request: Request, region: str, order: OrderIn):
    ev = WriteEvent(id=uuid.uuid4(), region=region, table="orders", op=Op.upsert, key={"id": order.id},
                    data={"user_id": order.user_id, "amount": order.amount, "status": "placed"},
                    policy=Policy.hold)
    await asyncio.to_thread(_publish, ev)
    rg = request.state.regionguard
    note = ("applied now" if rg.state_name in ("closed", "unknown")
            else f"held in Kafka, applied when {region} is back")
    return {"status": "accepted", "write_id": str(ev.id), "note": note}
