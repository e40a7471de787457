"""Drill control: how ``regionguard drill`` reaches the fault proxies of a running local setup.

Whoever runs a local setup (``regionguard demo``, a test, ``examples``) owns
the :class:`~regionguard_testkit.embedded.proxy.FaultProxy` objects, in its own
process. To let another process switch them, it starts a
:class:`ControlServer` next to them::

    ctl = ControlServer({r: regions.proxy(r) for r in regions.names}, cfg=cfg).start()
    ...
    ctl.stop()

Protocol (HTTP/1.1, JSON bodies, bound to 127.0.0.1 only; every request
carries the header ``X-Regionguard-Token`` with the token from the state file):

``GET /v1/proxies``
    ``{"proxies": {region: info}}``
``POST /v1/proxies/<region>`` with ``{"mode": "pass|blackhole|refuse|latency", "delay_s": 0.5, "heal_after_s": 60}``
    switches the region's proxy and answers with its ``info``. ``refuse``
    also resets every live connection (a host that is gone, not a listener
    that is merely closed); ``latency`` delays every server-to-client chunk by
    ``delay_s``; ``pass`` heals. ``heal_after_s`` is a dead man's switch: the
    server heals the proxy by itself after that long, so a drill that is
    killed never leaves a region broken. Any later POST replaces it.

``info`` is ``{"region", "mode", "listen": "host:port", "target": "host:port",
"delay_s", "heal_at" (Unix time or null), "stats": {accepted, active, ...}}``.

Discovery: :meth:`ControlServer.start` writes a state file (mode 0600)
``{"url", "token", "pid", "regions", "bootstrap", "topic_prefix", "started_at"}``
at :func:`state_file_path` of the config: ``$REGIONGUARD_DRILL_FILE`` if set,
else ``<tmpdir>/regionguard-drill/<hash of bootstrap and topic prefix>.json``.
A drill given the same config finds it without flags; ``--control`` names a
state file or a URL explicitly. The file is removed on :meth:`ControlServer.stop`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from .procs import pid_alive

__all__ = ["ControlServer", "DrillClient", "DrillControlError", "state_file_path", "FAULTS"]

FAULTS = ("pass", "blackhole", "refuse", "latency")
TOKEN_HEADER = "X-Regionguard-Token"


class DrillControlError(Exception):
    """No control endpoint, or it refused the request (one-line message)."""


def state_file_path(cfg: Any = None, *, bootstrap: str | None = None, topic_prefix: str | None = None) -> Path:
    """Where the control server of a setup with this config announces itself."""
    env = os.environ.get("REGIONGUARD_DRILL_FILE")
    if env:
        return Path(env)
    if cfg is not None:
        bootstrap, topic_prefix = cfg.kafka.bootstrap, cfg.kafka.topic_prefix
    key = f"{bootstrap}|{topic_prefix}".encode()
    return Path(tempfile.gettempdir()) / "regionguard-drill" / f"{hashlib.sha1(key).hexdigest()[:16]}.json"


class ControlServer:
    """Serves the drill control protocol for ``proxies`` ({region: FaultProxy}) in a daemon thread."""

    def __init__(self, proxies: Mapping[str, Any], *, cfg: Any = None, state_file: str | os.PathLike | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.proxies = dict(proxies)
        self.cfg = cfg
        self.state_file = Path(state_file) if state_file else (state_file_path(cfg) if cfg is not None else None)
        self.host, self.port = host, port
        self.token = secrets.token_hex(16)
        self._timers: dict[str, threading.Timer] = {}
        self._heal_at: dict[str, float] = {}
        self._delay: dict[str, float] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.log: list[tuple[float, str, str]] = []  # (unix time, region, mode): what drills did

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> "ControlServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a: Any) -> None:  # keep the owner's output clean
                pass

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if secrets.compare_digest(self.headers.get(TOKEN_HEADER, ""), server.token):
                    return True
                self._reply(403, {"error": "bad or missing token"})
                return False

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if not self._authorized():
                    return
                if self.path.rstrip("/") == "/v1/proxies":
                    self._reply(200, {"proxies": {r: server.info(r) for r in server.proxies}})
                else:
                    self._reply(404, {"error": f"no such resource {self.path}"})

            def do_POST(self) -> None:  # noqa: N802
                if not self._authorized():
                    return
                prefix = "/v1/proxies/"
                if not self.path.startswith(prefix):
                    self._reply(404, {"error": f"no such resource {self.path}"})
                    return
                region = self.path[len(prefix):].strip("/")
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                    info = server.apply(region, str(body.get("mode", "")), delay_s=body.get("delay_s"),
                                        heal_after_s=body.get("heal_after_s"))
                except KeyError:
                    self._reply(404, {"error": f"no proxy for region {region!r}"})
                except (ValueError, TypeError) as exc:
                    self._reply(400, {"error": str(exc)})
                else:
                    self._reply(200, info)

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="drill-control", daemon=True)
        self._thread.start()
        if self.state_file is not None:
            self._write_state()
        return self

    def _write_state(self) -> None:
        assert self.state_file is not None
        doc = {"url": self.url, "token": self.token, "pid": os.getpid(), "regions": sorted(self.proxies),
               "started_at": time.time()}
        if self.cfg is not None:
            doc.update(bootstrap=self.cfg.kafka.bootstrap, topic_prefix=self.cfg.kafka.topic_prefix)
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        os.replace(tmp, self.state_file)

    def stop(self) -> None:
        """Stop serving and remove the state file; the proxies are left as they are (the owner stops them)."""
        with self._lock:
            for t in self._timers.values():
                t.cancel()
            self._timers.clear()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self.state_file is not None:
            try:
                doc = json.loads(self.state_file.read_text())
                if doc.get("token") == self.token:  # never remove another setup's file
                    self.state_file.unlink()
            except (OSError, ValueError):
                pass

    def __enter__(self) -> "ControlServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- the operations ------------------------------------------------------------------
    def info(self, region: str) -> dict[str, Any]:
        p = self.proxies[region]
        stats = p.stats
        return {
            "region": region,
            "mode": p.mode,
            "listen": f"{p.host}:{p.port}",
            "target": f"{p.target_host}:{p.target_port}",
            "delay_s": self._delay.get(region, 0.0) if p.mode == "latency" else 0.0,
            "heal_at": self._heal_at.get(region),
            "stats": asdict(stats) if hasattr(stats, "__dataclass_fields__") else dict(stats),
        }

    def apply(self, region: str, mode: str, *, delay_s: float | None = None,
              heal_after_s: float | None = None) -> dict[str, Any]:
        """Switch ``region``'s proxy (KeyError: unknown region, ValueError: bad arguments)."""
        proxy = self.proxies[region]
        if mode not in FAULTS:
            raise ValueError(f"mode must be one of {', '.join(FAULTS)}, not {mode!r}")
        if delay_s is not None and not (isinstance(delay_s, (int, float)) and 0 < delay_s <= 60):
            raise ValueError("delay_s must be a number in (0, 60]")
        if heal_after_s is not None and not (isinstance(heal_after_s, (int, float)) and heal_after_s > 0):
            raise ValueError("heal_after_s must be a positive number")
        with self._lock:
            old = self._timers.pop(region, None)
            if old is not None:
                old.cancel()
            self._heal_at.pop(region, None)
            if mode == "latency":
                delay = float(delay_s or 0.5)
                self._delay[region] = delay
                proxy.set_mode("latency", delay_s=delay)
            else:
                proxy.set_mode(mode)
                if mode == "refuse":
                    proxy.reset_all()
            if mode != "pass" and heal_after_s:
                t = threading.Timer(float(heal_after_s), self._auto_heal, args=(region,))
                t.daemon = True
                self._timers[region] = t
                self._heal_at[region] = time.time() + float(heal_after_s)
                t.start()
            self.log.append((time.time(), region, mode))
        return self.info(region)

    def _auto_heal(self, region: str) -> None:
        with self._lock:
            self._timers.pop(region, None)
            self._heal_at.pop(region, None)
            try:
                self.proxies[region].set_mode("pass")
            except Exception:  # noqa: BLE001 - a stopped proxy: nothing to heal
                return
            self.log.append((time.time(), region, "pass (auto-heal)"))


class DrillClient:
    """Talks to a :class:`ControlServer` (see the module docstring for the protocol)."""

    def __init__(self, url: str, token: str, *, source: str = "") -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.source = source or url

    @classmethod
    def discover(cls, cfg: Any = None, control: str | None = None) -> "DrillClient":
        """From ``control`` (a state file path or ``http://...#token``), ``$REGIONGUARD_DRILL_CONTROL``,
        or the state file of ``cfg``."""
        control = control or os.environ.get("REGIONGUARD_DRILL_CONTROL")
        if control and control.startswith(("http://", "https://")):
            url, _, token = control.partition("#")
            return cls(url, token, source=url)
        path = Path(control) if control else state_file_path(cfg)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise DrillControlError(
                f"no running local setup found (no control file {path}); start one with fault proxies "
                f"and a drill control server (see docs/drill.md), or pass --control") from None
        except (OSError, ValueError) as exc:
            raise DrillControlError(f"cannot read control file {path}: {exc}") from None
        pid = doc.get("pid")
        if isinstance(pid, int) and not pid_alive(pid):
            raise DrillControlError(f"the local setup that wrote {path} (pid {pid}) is not running any more")
        return cls(str(doc["url"]), str(doc.get("token", "")), source=str(path))

    def _request(self, method: str, path: str, body: Any = None, timeout: float = 15.0) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={TOKEN_HEADER: self.token, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                msg = json.loads(exc.read()).get("error", exc.reason)
            except Exception:  # noqa: BLE001 - test kit: a body that is not our JSON; the HTTP reason is the message
                msg = exc.reason
            raise DrillControlError(f"drill control at {self.url}: {msg}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DrillControlError(f"drill control at {self.url} does not answer ({reason})") from None

    def proxies(self) -> dict[str, dict[str, Any]]:
        return dict(self._request("GET", "/v1/proxies")["proxies"])

    def set(self, region: str, mode: str, *, delay_s: float | None = None,
            heal_after_s: float | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"mode": mode}
        if delay_s is not None:
            body["delay_s"] = delay_s
        if heal_after_s is not None:
            body["heal_after_s"] = heal_after_s
        return dict(self._request("POST", f"/v1/proxies/{region}", body))


