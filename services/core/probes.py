"""``/livez`` and ``/readyz`` beside ``/metrics`` on a service's metrics port.

Kubernetes (the Helm chart) points its probes at these exact paths:

- ``/livez``: 200 while the service's loop turns. The loop beats a
  :class:`Heartbeat`; once it has not beaten for ``metrics.loop_stall_s`` the
  answer is 503, so a wedged process is restarted. Before the first beat the
  process is starting and counts as live (start-up has its own time limit:
  ``kafka.startup_timeout_s``).
- ``/readyz``: 200 only while the service does its job; otherwise 503 with the
  reason (also while the loop is stalled). What "its job" is, per service, is decided by the pure functions
  here (:func:`lanes_reason`, :func:`health_reason`, :func:`view_reason`),
  which the services feed with their state.

Bodies are one line of JSON: ``{"status": "ready"}``,
``{"status": "not_ready", "reason": "..."}``, ``{"status": "live", "loop_age_s": 0.4}``,
``{"status": "stalled", "reason": "..."}``.

Why written here and not a library: the decisions are ours. The HTTP part is
what ``prometheus_client.start_http_server`` does -- its ``make_wsgi_app`` on
its ``ThreadingWSGIServer`` (a thread per request, daemon threads) -- with that
app wrapped (:func:`probe_app`) before the first request can arrive, so
``/metrics`` stays exactly prometheus_client's. A probe only reads a float and
calls a function reading counters and flags the service's threads write, so no
lock is needed beyond what the GIL gives.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = ["Heartbeat", "Probes", "PROBES", "beat_while", "health_reason", "lanes_reason", "liveness",
           "probe_app", "readiness", "serve", "view_reason"]

Answer = tuple[int, dict]
Reason = str | None  # None: ready


class Heartbeat:
    """When the service's loop last turned, by an injected monotonic clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last: float | None = None  # None: the loop has not turned yet (starting)

    def beat(self) -> None:
        self.last = self.clock()

    def age(self) -> float | None:
        return None if self.last is None else max(0.0, self.clock() - self.last)


def liveness(age: float | None, stall_s: float) -> Answer:
    """200 while the loop turned within ``stall_s`` (or has not started yet); 503 otherwise."""
    if age is None:
        return 200, {"status": "live", "loop_age_s": None}
    if age > stall_s:
        return 503, {"status": "stalled", "reason": f"the service loop has not turned for {age:.1f}s "
                                                    f"(metrics.loop_stall_s {stall_s:g})"}
    return 200, {"status": "live", "loop_age_s": round(age, 3)}


def readiness(reason: Reason) -> Answer:
    if reason is None:
        return 200, {"status": "ready"}
    return 503, {"status": "not_ready", "reason": reason}


def view_reason(view_ready: bool | None) -> Reason:
    """The region-state view: None when read to its end or not followed at all (``--no-health``)."""
    if view_ready is False:
        return "the region-state view is not read to its end yet"
    return None


def lanes_reason(view_ready: bool | None, lanes: Iterable[tuple[str, int, int]] | None) -> Reason:
    """Router and replayer: the view is complete and every lane had its assignment.

    ``lanes`` holds ``(region, lane, assignments so far)``; None before the lanes
    exist. A lane assigned no partition (more lanes than partitions) is ready
    once its group settled: that is an assignment too (an empty one).
    """
    why = view_reason(view_ready)
    if why is not None:
        return why
    if lanes is None:
        return "the lanes are not started yet"
    waiting = [f"{region}/{lane}" for region, lane, assignments in lanes if assignments < 1]
    if waiting:
        return f"no partition assignment yet for lane(s) {', '.join(waiting)} (consumer group not settled)"
    return None


def health_reason(joined: bool, leader: bool, view_ready: bool, stale: bool | None) -> Reason:
    """Health: the leader is known -- this instance leads, or a leader's heartbeats are fresh."""
    if not joined:
        return "not in the leader election yet"
    if leader:
        return None
    if not view_ready:
        return "the region-state view is not read to its end yet"
    if stale is not False:
        return "no leader known: no fresh region-state heartbeat" + (" yet" if stale is None else "")
    return None


@dataclass
class Probes:
    """What a process answers on /livez and /readyz (one per process: :data:`PROBES`)."""

    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    stall_s: float = 30.0
    phase: str = "starting"  # the reason while no check is installed
    check: Callable[[], Reason] | None = None

    def not_ready(self, phase: str) -> None:
        """Not ready, for this reason, until :meth:`ready_when` installs a check."""
        self.phase, self.check = phase, None

    def ready_when(self, check: Callable[[], Reason]) -> None:
        self.check = check

    def live(self) -> Answer:
        return liveness(self.heartbeat.age(), self.stall_s)

    def ready(self) -> Answer:
        code, body = self.live()
        if code != 200:  # a wedged loop does no job either
            return readiness(body["reason"])
        if self.check is None:
            return readiness(self.phase)
        try:
            return readiness(self.check())
        except Exception as exc:  # noqa: BLE001 - a check that fails is "not ready", never a 500
            return readiness(f"readiness check failed: {type(exc).__name__}")


PROBES = Probes()


async def beat_while(stop: asyncio.Event, heartbeat: Heartbeat | None = None, every_s: float = 1.0) -> None:
    """Beat from the event loop until ``stop``: it beats only while the loop turns."""
    hb = heartbeat or PROBES.heartbeat
    while not stop.is_set():
        hb.beat()
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except asyncio.TimeoutError:
            pass


def probe_app(metrics_app: Callable, probes: Probes | None = None) -> Callable:
    """A WSGI app: /livez and /readyz ours, every other path prometheus_client's app, untouched."""

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path not in ("/livez", "/readyz"):
            return metrics_app(environ, start_response)
        p = probes or PROBES
        code, body = p.live() if path == "/livez" else p.ready()
        data = (json.dumps(body, separators=(",", ":")) + "\n").encode()
        start_response(f"{code} {'OK' if code == 200 else 'Service Unavailable'}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                        ("Cache-Control", "no-store")])
        return [data] if environ.get("REQUEST_METHOD") != "HEAD" else [b""]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - a probe every few seconds is no log line
        pass


def serve(host: str, port: int):
    """Serve /metrics, /livez and /readyz on ``host:port`` from a daemon thread; the server (``server_address``)."""
    from prometheus_client import make_wsgi_app
    from prometheus_client.exposition import ThreadingWSGIServer

    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    server_class = type("ProbeServer", (ThreadingWSGIServer,), {"address_family": family})  # IPv6 hosts too
    server = make_server(sockaddr[0], port, probe_app(make_wsgi_app()), server_class, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
