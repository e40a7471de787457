"""Read-your-writes: tokens, and waiting until a write is visible (docs/contract.md, "Read-your-writes").

``WriteProducer.write`` returns a :class:`WriteToken` (the write's id and home region; for a
failover write also its fallback regions). :class:`ConsistencyWatcher.wait_applied` answers what
became of it: ``applied`` (in its home region), ``applied_elsewhere`` (a failover write, applied in a
fallback region while home is down), ``held`` (home is not closed and it is not applied anywhere
yet: it waits in the held topic), ``dead_lettered`` (with the reason) or ``timeout``.

How it knows, without adding anything to the router's hot path: the inbox
(``regionguard_applied``) is written in the same transaction as the rows, so a write id found
there is committed and visible. Waiters of one region share one poll loop that asks for every
pending id in one indexed query every ``poll_s`` (5 ms by default) while anything is pending,
so a thousand waiting requests cost one small query per poll, not a thousand. Dead letters come
from following ``rg.dead-letter`` from its end (started with the watcher); ``held`` needs a live
:class:`~regionguard_client.views.RegionStates` view.

Written by hand because it is specific to our inbox and topics; the token format is ours too:
``<region>:<uuid>`` or ``<region>:<uuid>:<fallback>,<fallback>`` (an HTTP header or cookie value).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .core.config import Config, statement_cache_size
from .core.kafka import make_consumer
from .core.models import DeadLetter, WriteEvent
from .core.sql import INBOX_APPLIED
from .core.supervise import swallowed

log = logging.getLogger("regionguard.client.consistency")  # its name before the move (loggers stay in the regionguard tree)

__all__ = ["WriteToken", "Visibility", "ConsistencyWatcher", "BadToken", "UnknownTokenRegion", "VISIBLE_SQL"]

#: How often a waiter looks at its home region's state (``held`` is said only after the inbox answered).
HELD_CHECK_S = 0.05

#: Is the write visible on this connection? (the inbox row commits with the write's rows)
VISIBLE_SQL = "SELECT EXISTS (SELECT 1 FROM regionguard_applied WHERE write_id = $1::uuid)"


#: No honest token is longer (a region name is at most 63 characters): a longer one is not parsed at all.
MAX_TOKEN_LEN = 1024


class BadToken(ValueError):
    """A token that is not ``<region>:<uuid>[:<fallbacks>]`` of configured regions; ``reason`` says which part."""

    reason = "malformed"


class UnknownTokenRegion(BadToken):
    """A well-formed token naming a region (home or fallback) that is not configured."""

    reason = "unknown_region"


@dataclass(frozen=True)
class WriteToken:
    """What a producer hands back for a write: enough to ask whether it is visible, and where."""

    id: str
    region: str
    fallbacks: tuple[str, ...] = ()
    event: WriteEvent | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, ev: WriteEvent) -> "WriteToken":
        fallbacks = tuple(ev.fallback_regions) if ev.policy.value == "failover" else ()
        return cls(str(ev.id), ev.region, fallbacks, ev)

    def __str__(self) -> str:
        tail = ":" + ",".join(self.fallbacks) if self.fallbacks else ""
        return f"{self.region}:{self.id}{tail}"

    @classmethod
    def parse(cls, text: str, cfg: Config | None = None) -> "WriteToken":
        """The token from its string form; raises :class:`BadToken` with a one-line reason."""
        if len(str(text)) > MAX_TOKEN_LEN:
            raise BadToken(f"malformed token: longer than {MAX_TOKEN_LEN} characters")
        parts = str(text).strip().split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise BadToken(f"malformed token {text!r}: expected <region>:<write id>[:<fallbacks>]")
        try:
            wid = str(uuid.UUID(parts[1]))
        except ValueError:
            raise BadToken(f"malformed token {text!r}: {parts[1]!r} is not a write id (UUID)") from None
        fallbacks = tuple(f for f in parts[2].split(",") if f) if len(parts) == 3 else ()
        if cfg is not None:
            for r in (parts[0], *fallbacks):
                if r not in cfg.regions:
                    raise UnknownTokenRegion(f"token {text!r} names unknown region {r!r}")
        return cls(wid, parts[0], fallbacks)

    @classmethod
    def coerce(cls, token: "WriteToken | str", cfg: Config | None = None) -> "WriteToken":
        return token if isinstance(token, WriteToken) else cls.parse(token, cfg)


@dataclass(frozen=True)
class Visibility:
    """The answer of :meth:`ConsistencyWatcher.wait_applied`."""

    status: str                 # applied | applied_elsewhere | held | dead_lettered | timeout
    region: str | None = None   # where it is applied (applied, applied_elsewhere)
    reason: str | None = None   # the dead letter's reason
    waited_s: float = 0.0

    @property
    def visible(self) -> bool:
        return self.status in ("applied", "applied_elsewhere")

    def __str__(self) -> str:
        extra = self.region if self.status == "applied_elsewhere" else self.reason
        return f"{self.status}({extra})" if extra else self.status


class _RegionPoll:
    """The pending write ids of one region and the loop that looks them up in its inbox."""

    def __init__(self, watcher: "ConsistencyWatcher", region: str) -> None:
        self.watcher, self.region = watcher, region
        self.pending: dict[str, list[asyncio.Future]] = {}
        self.wake = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.pool: asyncpg.Pool | None = None
        # lookups started and settled (answered, or failed: the region cannot answer); the loop runs
        # one at a time, so a waiter added when `started` was n was settled once `settled` > n
        self.started = 0
        self.settled = 0

    def settled_since(self, mark: int) -> bool:
        """Did a lookup that started after ``mark`` (a value of :attr:`started`) settle?"""
        return self.settled > mark

    def add(self, wid: str, fut: asyncio.Future) -> None:
        self.pending.setdefault(wid, []).append(fut)
        self.wake.set()
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())

    def forget(self, wid: str, fut: asyncio.Future) -> None:
        futs = self.pending.get(wid)
        if futs is not None and fut in futs:
            futs.remove(fut)
            if not futs:
                del self.pending[wid]

    async def _run(self) -> None:
        while not self.watcher.closed:
            if not self.pending:
                self.wake.clear()
                await self.wake.wait()
                continue
            self.started += 1
            try:
                found = await self._lookup(list(self.pending))
            except Exception as exc:  # noqa: BLE001 - a region that can't answer: ask again later
                swallowed("consistency", exc, what=f"looking up writes in {self.region}'s inbox", logger=log,
                          level=logging.DEBUG)
                self.settled += 1  # unreachable: no lookup can answer, so a waiter may say held
                await asyncio.sleep(self.watcher.poll_s * 20)
                continue
            self.settled += 1
            for wid in found:
                for fut in self.pending.pop(wid, []):
                    if not fut.done():
                        fut.set_result(self.region)
            await asyncio.sleep(self.watcher.poll_s)

    async def _lookup(self, ids: list[str]) -> set[str]:
        if self.pool is None:
            self.pool = await asyncpg.create_pool(self.watcher.cfg.regions[self.region].dsn, min_size=1,
                                                  max_size=1, timeout=self.watcher.cfg.health.timeout_s * 5,
                                                  command_timeout=self.watcher.cfg.health.timeout_s * 5,
                                                  statement_cache_size=statement_cache_size(self.watcher.cfg, self.region))
        async with self.pool.acquire() as conn:
            return {r[0] for r in await conn.fetch(INBOX_APPLIED, ids)}

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - closing
                pass
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.terminate()


class _DeadLetters(threading.Thread):
    """Follows ``rg.dead-letter`` from its end; remembers the reason per write id (bounded)."""

    def __init__(self, cfg: Config, on_dead, keep: int = 100_000) -> None:
        super().__init__(name="rg-consistency-dead-letters", daemon=True)
        self.cfg, self.on_dead, self.keep = cfg, on_dead, keep
        self.reasons: OrderedDict[str, str] = OrderedDict()
        self.ready = threading.Event()
        self.halt = threading.Event()

    def run(self) -> None:
        from confluent_kafka import OFFSET_END, TopicPartition

        topic = self.cfg.topic("dead-letter")
        consumer = make_consumer(self.cfg, f"{self.cfg.kafka.topic_prefix}consistency.{uuid.uuid4().hex[:8]}",
                                 **{"queued.max.messages.kbytes": 1024})
        try:
            md = consumer.list_topics(topic, timeout=10)
            parts = md.topics[topic].partitions if topic in md.topics else {}
            consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
            self.ready.set()
            while not self.halt.is_set():
                msg = consumer.poll(0.1)
                if msg is None or msg.error() is not None or msg.value() is None:
                    continue
                try:
                    dl = DeadLetter.model_validate_json(msg.value())
                except ValueError:
                    continue
                if dl.write_id:
                    self.reasons[dl.write_id] = dl.reason.value
                    if len(self.reasons) > self.keep:
                        self.reasons.popitem(last=False)
                    self.on_dead(dl.write_id, dl.reason.value)
        except Exception as exc:  # noqa: BLE001 - without it, dead letters show up as timeouts (reported)
            swallowed("consistency", exc, what="following the dead-letter topic", logger=log)
        finally:
            self.ready.set()
            consumer.close()


class ConsistencyWatcher:
    """Answers :meth:`wait_applied` for tokens of any configured region.

    Create it inside the event loop that will use it, before the writes it will be asked
    about (dead letters are followed from the moment it starts)::

        async with ConsistencyWatcher(cfg, states=states) as watcher:
            token = producer.write("eu", "users", "upsert", {"id": 1}, {...})
            producer.flush()
            v = await watcher.wait_applied(token, timeout=2.0)   # Visibility("applied", "eu")
    """

    def __init__(self, cfg: Config, *, states: Any = None, poll_s: float = 0.005,
                 dead_letters: bool = True) -> None:
        self.cfg, self.states, self.poll_s = cfg, states, poll_s
        self.closed = False
        self._polls: dict[str, _RegionPoll] = {}
        self._dead_waiters: dict[str, list[asyncio.Future]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dead = _DeadLetters(cfg, self._on_dead) if dead_letters else None

    async def start(self) -> "ConsistencyWatcher":
        self._loop = asyncio.get_running_loop()
        if self._dead is not None and not self._dead.is_alive():
            self._dead.start()
            await asyncio.to_thread(self._dead.ready.wait, 15)
        return self

    async def __aenter__(self) -> "ConsistencyWatcher":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _on_dead(self, wid: str, reason: str) -> None:  # the follower's thread
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._resolve_dead, wid, reason)

    def _resolve_dead(self, wid: str, reason: str) -> None:
        for fut in self._dead_waiters.pop(wid, []):
            if not fut.done():
                fut.set_result(reason)

    def _poll(self, region: str) -> _RegionPoll:
        poll = self._polls.get(region)
        if poll is None:
            poll = self._polls[region] = _RegionPoll(self, region)
        return poll

    def _home_closed(self, region: str) -> bool | None:
        if self.states is None:
            return None
        st = self.states.state(region)
        return None if st is None else st.state.value == "closed"

    async def wait_applied(self, token: WriteToken | str, timeout: float) -> Visibility:
        """Wait up to ``timeout`` seconds for the write to become visible, or to be known held or dead."""
        if self.closed:
            raise RuntimeError("ConsistencyWatcher is closed")
        if self._loop is None:
            await self.start()
        tok = WriteToken.coerce(token, self.cfg)
        t0 = time.monotonic()
        if self._dead is not None and tok.id in self._dead.reasons:
            return Visibility("dead_lettered", reason=self._dead.reasons[tok.id])
        loop = asyncio.get_running_loop()
        applied: asyncio.Future = loop.create_future()
        dead: asyncio.Future = loop.create_future()
        regions = [tok.region, *[f for f in tok.fallbacks if f != tok.region]]
        home = self._poll(tok.region)
        mark = home.started  # before add(): a lookup already running may not include this id
        for r in regions:
            self._poll(r).add(tok.id, applied)
        self._dead_waiters.setdefault(tok.id, []).append(dead)
        try:
            while True:
                left = timeout - (time.monotonic() - t0)
                # held only once home's inbox said "not applied" (or could not be reached) after the
                # write was asked about: a lookup that has not answered yet (a slow first connection)
                # says nothing, and the write may well be applied
                looked = home.settled_since(mark) and not applied.done()
                if self._home_closed(tok.region) is False and not tok.fallbacks and looked:
                    return Visibility("held", waited_s=time.monotonic() - t0)
                if left <= 0:
                    held = self._home_closed(tok.region) is False and looked
                    return Visibility("held" if held else "timeout", waited_s=time.monotonic() - t0)
                # without a states view nothing but the futures can change the answer: one wait, no wake-ups
                step = left if self.states is None else min(left, HELD_CHECK_S)
                done, _ = await asyncio.wait({applied, dead}, timeout=step, return_when=asyncio.FIRST_COMPLETED)
                if applied in done:
                    where = applied.result()
                    status = "applied" if where == tok.region else "applied_elsewhere"
                    return Visibility(status, region=where, waited_s=time.monotonic() - t0)
                if dead in done:
                    return Visibility("dead_lettered", reason=dead.result(), waited_s=time.monotonic() - t0)
        finally:
            for r in regions:
                self._poll(r).forget(tok.id, applied)
            waiters = self._dead_waiters.get(tok.id)
            if waiters is not None and dead in waiters:
                waiters.remove(dead)
                if not waiters:
                    del self._dead_waiters[tok.id]

    async def close(self) -> None:
        self.closed = True
        if self._dead is not None:
            self._dead.halt.set()
            await asyncio.to_thread(self._dead.join, 5)
        for poll in self._polls.values():
            await poll.close()
