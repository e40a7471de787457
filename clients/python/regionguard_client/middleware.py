"""``RegionGuardMiddleware``: the drop-in ASGI integration for Starlette and FastAPI.

Pure ASGI (``__init__(app, **options)`` + ``async __call__(scope, receive,
send)``); WebSocket scopes pass through untouched, the ``lifespan`` scope is
passed through too while the middleware watches it to start its views
(waiting up to ``ready_timeout_s`` for them) and to close them at shutdown::

    app = FastAPI()
    app.add_middleware(
        RegionGuardMiddleware,
        config="regionguard.yaml",                        # or a Config; default $REGIONGUARD_CONFIG
        features={"/eu/recommendations": "recommendations"},  # path prefix -> feature (optional)
    )

    @app.get("/{region}/recommendations")
    @requires_feature("recommendations")                  # or declare it on the route
    async def recs(request: Request, region: str):
        rg = request.state.regionguard                    # a RegionContext
        res = await request.state.reader.get("users", {"id": 1})
        ...

For every HTTP request it:

1. works out the region: ``region_resolver(scope)`` if given, else the route's
   path parameter ``region_param`` (matched against the app's routes, inside mounts too), else the
   ``region_header`` header, else ``default_region``. A request with no region
   passes through untouched; an unknown region gets 400 (JSON);
2. attaches to ``scope["state"]`` (``request.state``): ``regionguard`` (a
   :class:`RegionContext`), ``region``, ``region_state`` (RegionState or None),
   ``features`` (the FeatureFlags view) and ``reader`` (a
   :class:`~regionguard_client.reader.BoundReader` for the region);
3. answers 503 with ``Retry-After`` and a JSON body when the route needs a
   feature that is disabled for the region (``features`` prefixes, or the
   :func:`requires_feature` decorator on the endpoint);
4. adds ``X-Region-Served`` (whose data answered: the request's region, or the
   fallback region a read was served from), ``X-Degraded`` (``true`` when the
   region is not closed, the views are stale, a feature is off for it, or a
   read came from anything but the home database), ``X-Degraded-Reason`` when
   degraded, and ``X-Served-Tier`` when the handler read through the reader;
5. read-your-writes: a request carrying a write's token in ``after_header``
   (``X-RegionGuard-After: <token>``, see :mod:`regionguard_client.consistency`)
   gets a reader whose reads serve only from a tier showing that write (waiting
   up to the reader's ``after_wait_s``, shared by all the request's reads), and
   ``X-Consistency: read-your-writes``, or ``stale`` when the deadline passed
   first; reads without a token give ``eventual``. Nobody signs a token, so the
   wait is bounded per client too (:mod:`regionguard_client.waitbudget`: a client
   whose tokens keep not showing gets one look and no wait). A malformed token,
   or one naming an unknown region, is ignored (the request reads ``eventual``)
   and counted in :attr:`RegionGuardMiddleware.ignored_tokens` by reason.

Feature checks follow :meth:`FeatureFlagsView.is_enabled`: the feature
manager's records while it is live, else the same rules evaluated locally
from region states.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any

from .core.config import Config, load_config
from .core.models import RegionState
from .core.supervise import swallowed
from .consistency import BadToken, WriteToken
from .waitbudget import WaitBudget
from .reader import BoundReader, RegionalReader
from .views import FeatureFlagsView, RegionStates

log = logging.getLogger("regionguard.client.middleware")  # its name before the move (loggers stay in the regionguard tree)

__all__ = ["RegionGuardMiddleware", "RegionContext", "requires_feature", "FEATURES_ATTR"]

FEATURES_ATTR = "__regionguard_features__"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def requires_feature(*features: str):
    """Mark an endpoint as needing ``features``; the middleware answers 503 while one is off.

    Put it *under* the route decorator (so the route registers the marked function)::

        @app.get("/{region}/recommendations")
        @requires_feature("recommendations")
        async def recommendations(region: str): ...
    """
    if not features:
        raise ValueError("requires_feature needs at least one feature name")

    def mark(fn):
        setattr(fn, FEATURES_ATTR, tuple(getattr(fn, FEATURES_ATTR, ())) + tuple(features))
        return fn

    return mark


@dataclass
class RegionContext:
    """What the middleware knows about a request's region; ``request.state.regionguard``."""

    region: str
    state: RegionState | None
    stale: bool
    states: RegionStates
    flags: FeatureFlagsView
    reader: BoundReader | None
    disabled: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)

    @property
    def state_name(self) -> str:
        return "unknown" if self.state is None else self.state.state.value

    def is_enabled(self, feature: str) -> bool:
        return self.flags.is_enabled(feature, self.region)

    @property
    def served_region(self) -> str:
        if self.reader is not None and self.reader.results:
            return self.reader.results[-1].served_region
        return self.region

    @property
    def served_tier(self) -> str | None:
        if self.reader is not None and self.reader.results:
            return self.reader.results[-1].tier
        return None

    def degraded_reasons(self) -> list[str]:
        out: list[str] = []
        if self.state is not None and self.state_name != "closed":
            out.append(f"region {self.region} {self.state_name}")
        if self.stale:
            out.append("region states stale")
        if self.disabled:
            out.append("features off: " + ",".join(sorted(self.disabled)))
        if self.reader is not None:
            for r in self.reader.results:
                if r.degraded:
                    note = f"read from {r.tier} {r.source}"
                    if note not in out:
                        out.append(note)
        out.extend(self.notes)
        return out

    @property
    def degraded(self) -> bool:
        return bool(self.degraded_reasons())


class RegionGuardMiddleware:
    def __init__(
        self,
        app,
        *,
        config: Config | str | None = None,
        states: RegionStates | None = None,
        flags: FeatureFlagsView | None = None,
        reader: RegionalReader | None = None,
        reader_options: Mapping[str, Any] | None = None,
        region_header: str = "x-region",
        after_header: str = "x-regionguard-after",
        region_param: str = "region",
        region_resolver: Callable[[Scope], str | None] | None = None,
        default_region: str | None = None,
        features: Mapping[str, str | Iterable[str]] | None = None,
        retry_after_s: float | None = None,
        ready_timeout_s: float = 5.0,
        router: Any = None,
        client_key: Callable[[Scope], str | None] | None = None,
    ) -> None:
        self.app = app
        if isinstance(config, Config):
            self.cfg = config
        elif states is not None:
            self.cfg = states.cfg
        else:
            self.cfg = load_config(config)
        self._own_views = states is None and flags is None
        self.states = states or (flags.states if flags is not None and flags.states is not None else None) \
            or RegionStates(self.cfg)
        self.flags = flags or FeatureFlagsView(self.cfg, states=self.states)
        self._reader = reader
        self._own_reader = reader is None
        self._reader_options = dict(reader_options or {})
        self.region_header = region_header.lower().encode("latin-1")
        self.after_header = after_header.lower().encode("latin-1")
        self.region_param = region_param
        self.region_resolver = region_resolver
        self.default_region = default_region
        self.prefix_features: list[tuple[str, tuple[str, ...]]] = sorted(
            ((p, (f,) if isinstance(f, str) else tuple(f)) for p, f in (features or {}).items()),
            key=lambda pf: -len(pf[0]),
        )
        for _p, fs in self.prefix_features:
            for f in fs:
                if f not in self.cfg.features:
                    log.warning("middleware: feature %r is not in the config's features: it is never turned off", f)
        self.retry_after_s = retry_after_s
        self.ready_timeout_s = ready_timeout_s
        self._router = router
        self._router_searched = router is not None
        self._started = False
        # who a request comes from, for the read-your-writes wait budget (default: the peer's address)
        self.client_key = client_key or (lambda scope: (scope.get("client") or ("?",))[0])
        self.wait_budget: WaitBudget | None = None  # made with the reader (its after_wait_s)
        #: tokens ignored, by reason (``malformed``, ``unknown_region``): never an error for the request
        self.ignored_tokens: Counter[str] = Counter()

    # -- lifecycle --------------------------------------------------------------------
    def _start_views(self) -> None:
        if not self._started:
            self._started = True
            if self._own_views:
                self.states.start()
                self.flags.start()

    async def _wait_ready(self) -> None:
        if self._own_views and self.ready_timeout_s > 0:
            await asyncio.to_thread(self.states.wait_ready, self.ready_timeout_s)
            await asyncio.to_thread(self.flags.wait_ready, self.ready_timeout_s)

    async def aclose(self) -> None:
        if self._own_reader and self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.close()
        if self._own_views and self._started:
            self.flags.stop()
            self.states.stop()
            self._started = False

    def reader(self) -> RegionalReader:
        if self._reader is None:
            self._reader = RegionalReader(self.cfg, states=self.states, **self._reader_options)
        return self._reader

    # -- ASGI -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if kind != "http":
            await self.app(scope, receive, send)
            return
        self._start_views()

        match = self._match(scope)
        region = self._region(scope, match)
        if region is None:
            await self.app(scope, receive, send)
            return
        if region not in self.cfg.regions:
            await _json(send, 400, {"error": "unknown_region", "region": region,
                                    "regions": sorted(self.cfg.regions)})
            return

        after = self._after(scope)
        client, allowed = "", 0.0
        if after is not None:
            client = str(self.client_key(scope) or "?")
            allowed = self._budget().allowance(client, after.id)
        state = self.states.state(region)
        ctx = RegionContext(
            region=region,
            state=state,
            stale=self.states.is_stale(),
            states=self.states,
            flags=self.flags,
            reader=self.reader().for_region(region, after, wait_s=allowed),
            disabled=self.flags.disabled(region),
        )
        st = scope.setdefault("state", {})
        st.update(regionguard=ctx, region=region, region_state=state, features=self.flags, reader=ctx.reader)

        needed = self._needed_features(scope, match)
        off = [f for f in needed if not self.flags.is_enabled(f, region)]
        if off:
            await self._unavailable(send, ctx, off)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(_region_headers(ctx))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            seen = ctx.reader.consistency if ctx.reader is not None else None
            if after is not None and seen in ("read_your_writes", "stale"):
                self._budget().settle(client, after.id, visible=seen == "read_your_writes", allowed_s=allowed)

    def _budget(self) -> WaitBudget:
        if self.wait_budget is None:
            self.wait_budget = WaitBudget(self.reader().after_wait_s)
        return self.wait_budget

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch_receive() -> dict[str, Any]:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self._start_views()
                await self._wait_ready()
            elif msg["type"] == "lifespan.shutdown":
                await self.aclose()
            return msg

        await self.app(scope, watch_receive, send)

    def _after(self, scope: Scope) -> WriteToken | None:
        """The request's read-your-writes token (``after_header``), if it carries a valid one."""
        for k, v in scope.get("headers", []):
            if k == self.after_header and v.strip():
                try:
                    return WriteToken.parse(v.decode("latin-1"), self.cfg)
                except BadToken as exc:  # the read goes on without it: eventual, as if none came
                    self.ignored_tokens[exc.reason] += 1
                    log.debug("middleware: ignoring a %s read-your-writes token", exc.reason)
                    return None
        return None

    # -- region and features ----------------------------------------------------------
    def _region(self, scope: Scope, match: tuple[Any, dict[str, Any]]) -> str | None:
        if self.region_resolver is not None:
            r = self.region_resolver(scope)
            if r:
                return r
        if self.region_param:
            r = match[1].get(self.region_param)
            if r:
                return str(r)
        for k, v in scope.get("headers", []):
            if k == self.region_header and v:
                return v.decode("latin-1").strip()
        return self.default_region

    def _find_router(self):
        obj, seen = self.app, 0
        while obj is not None and seen < 32:
            routes = getattr(obj, "routes", None)
            if isinstance(routes, list):
                return obj
            obj = getattr(obj, "app", None) or getattr(obj, "router", None)
            seen += 1
        return None

    def _match(self, scope: Scope) -> tuple[Any, dict[str, Any]]:
        """The route the app will pick for ``scope`` (first full match) and its path params."""
        if not self._router_searched:
            self._router = self._find_router()
            self._router_searched = True
        found: tuple[Any, dict[str, Any]] = (None, {})
        if self._router is not None:
            try:
                from starlette.routing import Match
            except ImportError:  # pragma: no cover - starlette is in the app extra
                Match = None  # noqa: N806
            if Match is not None:
                found = _match_routes(self._router.routes, scope, Match.FULL)
        return found

    def _needed_features(self, scope: Scope, match: tuple[Any, dict[str, Any]]) -> list[str]:
        out: list[str] = []
        path = scope.get("path", "")
        for prefix, fs in self.prefix_features:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                out.extend(fs)
                break
        endpoint = getattr(match[0], "endpoint", None)
        out.extend(getattr(endpoint, FEATURES_ATTR, ()))
        return list(dict.fromkeys(out))

    def _retry_after(self, ctx: RegionContext) -> int:
        if self.retry_after_s is not None:
            return max(1, math.ceil(self.retry_after_s))
        if ctx.stale:
            return max(1, math.ceil(self.cfg.health.stale_after_s))
        st = ctx.state
        if st is not None and st.state.value == "open":
            since = st.since if st.since.tzinfo else st.since.replace(tzinfo=timezone.utc)
            left = since.timestamp() + self.cfg.breaker.open_wait_s - time.time()
            if left > 0:
                return max(1, math.ceil(left))
        return max(1, math.ceil(self.cfg.breaker.open_wait_s))

    async def _unavailable(self, send: Send, ctx: RegionContext, off: list[str]) -> None:
        retry = self._retry_after(ctx)
        status = self.flags.status(off[0], ctx.region)
        body = {
            "error": "feature_disabled",
            "feature": off[0],
            "features": off,
            "region": ctx.region,
            "region_state": ctx.state_name,
            "stale": ctx.stale,
            "reason": status.reason,
            "retry_after_s": retry,
        }
        await _json(send, 503, body, [(b"retry-after", str(retry).encode()), *_region_headers(ctx)])


def _region_headers(ctx: RegionContext) -> list[tuple[bytes, bytes]]:
    reasons = ctx.degraded_reasons()
    headers = [
        (b"x-region-served", ctx.served_region.encode("latin-1")),
        (b"x-degraded", b"true" if reasons else b"false"),
    ]
    if ctx.served_tier is not None:
        headers.append((b"x-served-tier", ctx.served_tier.encode("latin-1")))
    if reasons:
        headers.append((b"x-degraded-reason", "; ".join(reasons).encode("latin-1", "replace")))
    consistency = ctx.reader.consistency if ctx.reader is not None else None
    if consistency is not None:
        headers.append((b"x-consistency", consistency.replace("_", "-").encode("latin-1")))
    return headers


async def _json(send: Send, status: int, body: dict[str, Any],
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    raw = json.dumps(body, separators=(",", ":"), default=str).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
                    *(headers or [])],
    })
    await send({"type": "http.response.body", "body": raw})


def _match_routes(routes: list, scope: Scope, full: Any, depth: int = 0) -> tuple[Any, dict[str, Any]]:
    """First route that fully matches, looking inside ``Mount``/``Host`` (they have ``routes``) for the endpoint.

    Path params accumulate the way Starlette builds the child scope, so
    ``Mount("/r/{region}", routes=[...])`` yields ``region`` for the route inside.
    """
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception as exc:  # noqa: BLE001 - an odd route must not break requests (counted, DEBUG line)
            swallowed("middleware", exc, what="matching a route", logger=log, level=logging.DEBUG)
            continue
        if match != full:
            continue
        params = dict(child.get("path_params", {}))
        inner = getattr(route, "routes", None)
        if inner and depth < 8:
            found, inner_params = _match_routes(inner, {**scope, **child}, full, depth + 1)
            if found is not None:
                return found, {**params, **inner_params}
        return route, params
    return None, {}
