"""A fault-injecting TCP proxy, so tests can break a *real* connection path.

Modelled on asyncpg's ``ProxiedClusterTestCase`` fuzzing proxy: an asyncio
proxy running its own loop in a daemon thread, controlled from sync code.
Every :meth:`FaultProxy.set_mode` call blocks until the mode is in effect.

Modes (what a client of ``proxy.host:proxy.port`` sees):

``pass``       forward everything.
``refuse``     the listening socket is closed: new connects fail at once with
               ECONNREFUSED. Live connections are left untouched (combine with
               :meth:`FaultProxy.reset_all` for a hard "host down").
``blackhole``  new connections are accepted but never forwarded or answered;
               live connections stall in both directions. Nothing is closed,
               TCP stays up (the proxy's kernel still ACKs), so only client
               timeouts notice. Leaving blackhole *resumes* the stalled traffic
               (held bytes are forwarded, held connects go upstream). A held
               connect whose client gave up (closed it) meanwhile is dropped,
               never sent upstream: with packets really dropped its handshake
               would never have completed, so nothing reaches the server at the
               heal (forwarding them made PostgreSQL start a backend for every
               abandoned probe connect at once: hundreds after a few seconds,
               a CPU storm that made a healed region time out for seconds).
``latency``    each forwarded chunk in ``direction`` is delayed by ``delay_s``
               (pipelined: throughput is kept). Default direction ``down``
               (server to client), so one request/response gains ``delay_s``.
``flaky``      each server-to-client chunk is, with probability ``p``, delayed
               by ``delay_s`` (seeded RNG: reproducible); simulates probe loss.
``reset``      abort every live connection with RST (SO_LINGER 0), then act as
               ``pass``; :attr:`FaultProxy.mode` reads ``pass`` afterwards.

The port stays the same across modes: a never-listening SO_REUSEPORT socket
reserves it while in ``refuse``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import threading
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal

__all__ = ["FaultProxy", "ProxyStats", "MODES"]

log = logging.getLogger(__name__)
MODES = ("pass", "refuse", "blackhole", "latency", "flaky", "reset")
Direction = Literal["up", "down", "both"]
_CHUNK = 65536


@dataclass
class ProxyStats:
    accepted: int = 0
    active: int = 0
    bytes_up: int = 0  # client -> server, forwarded
    bytes_down: int = 0  # server -> client, forwarded
    resets: int = 0  # connections aborted by reset_all()
    upstream_failures: int = 0  # connects to the target that failed
    abandoned: int = 0  # connects held in blackhole whose client gave up first (never sent upstream)


def _bound_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _abort(writer: asyncio.StreamWriter | None, rst: bool = True) -> None:
    """Close ``writer`` at once; with ``rst`` the peer gets a TCP RST."""
    if writer is None or writer.transport.is_closing() and not rst:
        return
    if rst:
        sock = writer.get_extra_info("socket")
        try:
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


class _Conn:
    def __init__(self, client: asyncio.StreamWriter, task: asyncio.Task[Any] | None) -> None:
        self.client = client
        self.server: asyncio.StreamWriter | None = None
        self.task = task


class FaultProxy:
    """TCP proxy from ``host:port`` (a free loopback port) to ``target_host:target_port``."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1", port: int = 0,
                 seed: int = 0, connect_timeout: float = 5.0, name: str = "proxy") -> None:
        self.target_host, self.target_port = target_host, int(target_port)
        self.host, self.name, self.connect_timeout = host, name, connect_timeout
        self._reserve = _bound_socket(host, port)  # never listens; keeps the port ours
        self.port: int = self._reserve.getsockname()[1]
        self._mode = "pass"
        self._delay_s = 0.0
        self._p = 0.0
        self._direction: Direction = "down"
        self._rng = random.Random(seed)
        self._stats = ProxyStats()
        self._conns: set[_Conn] = set()
        self._server: asyncio.base_events.Server | None = None
        self._stopped = False
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(lambda _l, ctx: log.debug("%s: %s", self.name, ctx.get("message")))
        self._flowing = asyncio.Event()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"FaultProxy-{self.port}", daemon=True)
        self._thread.start()
        try:
            self._call(self._init())
        except BaseException:
            self.stop()
            raise

    # ---- public, thread-safe API -------------------------------------------------

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of the counters."""
        return replace(self._stats, active=len(self._conns))

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def set_mode(self, mode: str, *, delay_s: float | None = None, p: float | None = None,
                 direction: Direction | None = None) -> None:
        """Switch mode; returns once it is in effect. See the module docstring."""
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; expected one of {MODES}")
        if p is not None and not 0.0 <= p <= 1.0:
            raise ValueError("p must be within [0, 1]")
        if direction is not None and direction not in ("up", "down", "both"):
            raise ValueError("direction must be 'up', 'down' or 'both'")
        if mode == "latency":
            delay_s = 0.2 if delay_s is None else delay_s
        elif mode == "flaky":
            delay_s = 2.0 if delay_s is None else delay_s
            p = 0.1 if p is None else p
        self._call(self._set_mode(mode, delay_s or 0.0, p or 0.0, direction or "down"))

    def reset_all(self) -> int:
        """Abort every live connection with RST (mode unchanged); returns how many."""
        return int(self._call(self._reset_all()))

    def stop(self) -> None:
        """Close everything and end the loop thread. Idempotent; never hangs."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._call(self._shutdown(), timeout=5.0, internal=True)
        except Exception:  # noqa: BLE001 - stopping must not raise
            log.debug("%s: shutdown error", self.name, exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()
        self._reserve.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FaultProxy {self.name} {self.host}:{self.port} -> {self.target_host}:{self.target_port} {self._mode}>"

    # ---- loop-thread internals ------------------------------------------------------

    def _call(self, coro: Any, timeout: float = 10.0, *, internal: bool = False) -> Any:
        if self._stopped and not internal:
            coro.close()
            raise RuntimeError(f"{self!r} is stopped")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _init(self) -> None:
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        if self._server is None:
            sock = _bound_socket(self.host, self.port)
            sock.listen(128)
            sock.setblocking(False)
            self._server = await asyncio.start_server(self._handle, sock=sock)

    def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()  # closes the listening socket only; live connections stay
            self._server = None

    async def _set_mode(self, mode: str, delay_s: float, p: float, direction: Direction) -> None:
        self._delay_s, self._p, self._direction = delay_s, p, direction
        if mode == "reset":
            await self._reset_all()
            mode = "pass"
        if mode == "refuse":
            self._unlisten()
        else:
            await self._listen()
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        self._mode = mode
        log.debug("%s: mode %s", self.name, mode)

    async def _reset_all(self) -> int:
        conns = list(self._conns)
        for conn in conns:
            _abort(conn.client)
            _abort(conn.server)
            if conn.task is not None:
                conn.task.cancel()
        self._stats.resets += len(conns)
        await asyncio.gather(*(c.task for c in conns if c.task is not None), return_exceptions=True)
        return len(conns)

    async def _shutdown(self) -> None:
        self._unlisten()
        self._flowing.set()
        await self._reset_all()

    def _due(self, direction: str) -> float:
        now = self._loop.time()
        if self._mode == "latency" and self._direction in (direction, "both"):
            return now + self._delay_s
        if self._mode == "flaky" and direction == "down" and self._rng.random() < self._p:
            return now + self._delay_s
        return now

    async def _handle(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        conn = _Conn(cwriter, asyncio.current_task())
        self._conns.add(conn)
        self._stats.accepted += 1
        tasks: list[asyncio.Task[None]] = []
        clean = False
        try:
            held = await self._hold_connect(creader)  # blackhole: hold the connect until traffic flows again
            if held is None:
                self._stats.abandoned += 1
                return  # the client gave up while held: drop it (finally: RST), nothing goes upstream
            try:
                sreader, swriter = await asyncio.wait_for(
                    asyncio.open_connection(self.target_host, self.target_port), self.connect_timeout)
            except (TimeoutError, OSError):
                self._stats.upstream_failures += 1
                return  # finally: RST to the client, like a dead backend
            conn.server = swriter
            if held:  # what the client sent while held (a startup packet) goes first
                swriter.write(held)
                await swriter.drain()
                self._stats.bytes_up += len(held)
            for reader, writer, direction in ((creader, swriter, "up"), (sreader, cwriter, "down")):
                queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(maxsize=64)
                tasks.append(asyncio.create_task(self._feed(reader, queue, direction)))
                tasks.append(asyncio.create_task(self._drain(queue, writer, direction)))
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            clean = all(not t.cancelled() and t.exception() is None for t in done) and len(done) == len(tasks)
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - a proxy connection must never leak errors
            log.debug("%s: connection error", self.name, exc_info=True)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (cwriter, conn.server):
                if w is None:
                    continue
                if clean:
                    w.close()
                else:
                    _abort(w)
            self._conns.discard(conn)

    async def _hold_connect(self, creader: asyncio.StreamReader) -> bytes | None:
        """Wait until traffic flows; the bytes the client sent meanwhile, or None if it closed first."""
        held = b""
        while not self._flowing.is_set():
            read = asyncio.ensure_future(creader.read(_CHUNK))
            flowing = asyncio.ensure_future(self._flowing.wait())
            try:
                await asyncio.wait({read, flowing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                flowing.cancel()
                if not read.done():
                    read.cancel()  # nothing is lost: a pending read consumed nothing yet
            if read.done() and not read.cancelled():
                data = read.result()  # a reset client raises: the connection is aborted
                if not data:
                    return None
                held += data
        return held

    async def _feed(self, reader: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes] | None],
                    direction: str) -> None:
        while True:
            await self._flowing.wait()
            data = await reader.read(_CHUNK)
            if not data:
                await queue.put(None)
                return
            await queue.put((self._due(direction), data))

    async def _drain(self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter,
                     direction: str) -> None:
        while True:
            item = await queue.get()
            if item is None:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            due, data = item
            delay = due - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._flowing.wait()
            writer.write(data)
            await writer.drain()
            if direction == "up":
                self._stats.bytes_up += len(data)
            else:
                self._stats.bytes_down += len(data)
