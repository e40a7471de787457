"""A load generator that records exactly what Kafka acknowledged.

:class:`LoadGen` publishes writes to every region through the producer SDK
(:class:`regionguard.client.WriteProducer`) in batches. A write enters the
:class:`Model` as ``acked`` only after ``flush()`` confirmed its batch; if a
flush fails, the batch is recorded as ``unconfirmed`` (it may or may not be in
Kafka), so the checker neither demands nor forbids its effects.

The workload (see :class:`Mix`):

- ``users`` upserts with a strictly increasing ``version`` per key (last-writer-wins);
- ``orders`` inserts with ids never used before;
- deletes of both (a user delete carries the next version, so it is versioned);
- some upserts/inserts with policy ``failover`` (fallback regions from the
  config), ``shed``, or an ``expires_at`` a few seconds ahead, so sync-back,
  shedding and expiry are exercised while a region is out;
- a few deliberately bad writes: an order with a negative amount (``constraint``)
  and a write to a table outside the allow-list (``unknown_table``);
- atomic write groups (:meth:`WriteProducer.group`): an order with 2 to 5
  ``order_items`` (``ordering_key`` ``customer/<user id>``), with the same
  policies as single-row inserts; a few with one item whose ``qty`` breaks its
  CHECK, so the whole group must be dead-lettered (``constraint``) and leave
  nothing; and follow-up groups on an order already acknowledged (same
  ordering key: mark the order paid and add one more item), which only apply
  cleanly if the events of one ordering key apply in order.

Every region has its own key range, so a failover write applied in a fallback
region never touches that region's own rows. Every row carries the id of the
write that produced it (column ``wid``), and :data:`VERIFY_SCHEMA` logs every
row change in ``rg_effects`` (with the row's key), which lets the checker see
an apply that happened twice even where last-writer-wins would hide it.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import orjson

from regionguard.core.config import Config
from regionguard.core.kafka import KafkaDeliveryError
from regionguard.client.producer import WriteProducer

__all__ = ["VERIFY_SCHEMA", "VERIFY_TABLES", "RESIDENT_TABLE", "verify_tables", "Mix", "Model", "WriteRecord", "LoadGen", "user_key_base", "order_id_base",
           "item_qty"]

#: Tables of the verification workload. ``wid`` holds the id of the write that
#: last changed the row; ``rg_effects`` logs every insert/update a write caused, with the row's key
#: (``id``, or ``order_id/line`` for ``order_items``): a group changes several rows once each, a
#: write applied twice changes one row twice.
VERIFY_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id bigint PRIMARY KEY, name text, email text, version bigint NOT NULL, wid text);
CREATE TABLE IF NOT EXISTS orders (
    id bigint PRIMARY KEY, user_id bigint, amount numeric CHECK (amount >= 0), status text, wid text);
CREATE TABLE IF NOT EXISTS order_items (
    order_id bigint NOT NULL REFERENCES orders(id), line int NOT NULL, sku text, qty int CHECK (qty > 0), wid text,
    PRIMARY KEY (order_id, line));
CREATE TABLE IF NOT EXISTS rg_effects (
    n bigserial PRIMARY KEY, tbl text NOT NULL, op text NOT NULL, wid text, k text,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION rg_effect() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r jsonb := to_jsonb(NEW);
BEGIN
    INSERT INTO rg_effects (tbl, op, wid, k)
    VALUES (TG_TABLE_NAME, TG_OP, NEW.wid, coalesce(r->>'id', (r->>'order_id') || '/' || (r->>'line')));
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS rg_effect_users ON users;
CREATE TRIGGER rg_effect_users AFTER INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION rg_effect();
DROP TRIGGER IF EXISTS rg_effect_orders ON orders;
CREATE TRIGGER rg_effect_orders AFTER INSERT OR UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION rg_effect();
DROP TRIGGER IF EXISTS rg_effect_order_items ON order_items;
CREATE TRIGGER rg_effect_order_items AFTER INSERT OR UPDATE ON order_items FOR EACH ROW EXECUTE FUNCTION rg_effect();
CREATE TABLE IF NOT EXISTS consents (id bigint PRIMARY KEY, user_id bigint, purpose text, wid text);
DROP TRIGGER IF EXISTS rg_effect_consents ON consents;
CREATE TRIGGER rg_effect_consents AFTER INSERT OR UPDATE ON consents FOR EACH ROW EXECUTE FUNCTION rg_effect();
"""

#: The ``tables`` section of a config for :data:`VERIFY_SCHEMA`.
VERIFY_TABLES: dict[str, dict[str, Any]] = {"users": {"key": ["id"], "version": "version"},
                                            "orders": {"key": ["id"]},
                                            "order_items": {"key": ["order_id", "line"]}}

BAD_TABLE = "not_allowed"

#: A table under data residency: its rows may live in the first region only (``verify_tables``).
RESIDENT_TABLE = "consents"


def verify_tables(regions: Iterable[str]) -> dict[str, dict[str, Any]]:
    """:data:`VERIFY_TABLES` plus ``consents``, allowed only in the first of ``regions`` (residency)."""
    first = next(iter(regions))
    return {**VERIFY_TABLES, RESIDENT_TABLE: {"key": ["id"], "allowed_regions": [first]}}


def user_key_base(region_index: int) -> int:
    return region_index * 10_000_000 + 1


def order_id_base(region_index: int) -> int:
    return region_index * 10**12 + 1


def item_qty(order_id: int, line: int) -> int:
    """The ``qty`` a group writes for item ``line`` of ``order_id`` (the checker expects exactly it)."""
    return 1 + (order_id + line) % 7


@dataclass(slots=True)
class WriteRecord:
    """One write as the model knows it.

    An atomic write group is one record too: ``group`` set, ``table``/``op``/``key``
    naming its order row (``insert``, or ``update`` for a follow-up group) and
    ``lines`` the ``order_items`` lines it inserts; :meth:`rows` lists every row it writes.
    """

    id: str
    seq: int                  # production order (per key it is also the apply order)
    region: str
    table: str
    op: str
    key: int
    version: int | None       # users only
    policy: str               # hold | failover | shed
    expect: str               # apply | constraint | unknown_table
    expires: bool = False     # has an expires_at
    fallbacks: tuple[str, ...] = ()
    status: str = "acked"     # acked | unconfirmed
    t: float = 0.0            # unix time when the batch was confirmed (or failed)
    group: bool = False       # an atomic write group (its order row and ``lines`` items)
    lines: tuple[int, ...] = ()   # order_items lines a group inserts
    ordering_key: str = ""
    sent: float = 0.0         # unix time it was handed to the producer (produce-to-apply latency)

    @property
    def acked(self) -> bool:
        return self.status == "acked"

    def rows(self) -> list[tuple[str, Any]]:
        """Every row this write changes: ``(table, key)``, ``key`` an int or ``(order_id, line)``."""
        out: list[tuple[str, Any]] = [(self.table, self.key)]
        out += [("order_items", (self.key, line)) for line in self.lines]
        return out

    def to_json(self) -> bytes:
        d = asdict(self)
        d["fallbacks"] = list(self.fallbacks)
        d["lines"] = list(self.lines)
        return orjson.dumps(d)

    @classmethod
    def from_json(cls, line: bytes | str) -> "WriteRecord":
        d = orjson.loads(line)
        d["fallbacks"] = tuple(d.get("fallbacks") or ())
        d["lines"] = tuple(d.get("lines") or ())
        return cls(**d)


class Model:
    """Every write the generator produced, acked or unconfirmed; optionally appended to a JSONL file.

    Thread-safe. ``Model.load(path)`` reads a file written by another process.
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self.records: dict[str, WriteRecord] = {}
        self._lock = threading.Lock()
        self._fh = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")

    def add(self, records: Iterable[WriteRecord]) -> None:
        with self._lock:
            lines = []
            for r in records:
                self.records[r.id] = r
                lines.append(r.to_json())
            if self._fh is not None and lines:
                self._fh.write(b"\n".join(lines) + b"\n")
                self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def save(self, path: str | Path) -> Path:
        """Write the whole model as JSONL (for a model kept in memory only)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            p.write_bytes(b"".join(r.to_json() + b"\n" for r in self.records.values()))
        return p

    @classmethod
    def load(cls, path: str | Path, *, into: "Model | None" = None) -> "Model":
        """Read a JSONL model (a later line for the same write wins); ``into`` merges into another model.

        A torn last line (its writer was SIGKILLed mid-write) is skipped: the write it named was
        journaled as unconfirmed before it was sent, or never sent at all.
        """
        m = into if into is not None else cls()
        with open(path, "rb") as fh:
            lines = fh.read().split(b"\n")
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                r = WriteRecord.from_json(line)
            except (orjson.JSONDecodeError, TypeError):
                if i == len(lines) - 1:
                    continue
                raise
            m.records[r.id] = r
        return m

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[WriteRecord]:
        with self._lock:
            return iter(list(self.records.values()))

    def get(self, wid: str) -> WriteRecord | None:
        return self.records.get(wid)

    def counts(self) -> Counter:
        c: Counter = Counter()
        for r in self:
            c[r.status] += 1
        return c


@dataclass
class Mix:
    """Relative weights of the write kinds, and shares of special policies among upserts/inserts."""

    upsert: float = 0.55
    insert: float = 0.30
    delete_user: float = 0.05
    delete_order: float = 0.03
    bad_constraint: float = 0.004
    bad_table: float = 0.003
    group: float = 0.04         # an order with 2-5 items, one atomic write group
    bad_group: float = 0.003    # ... with one item breaking its CHECK: the whole group dead-lettered
    group_more: float = 0.01    # a follow-up group on an acknowledged order: status paid + one more item
    failover: float = 0.08      # of upserts/inserts (and groups)
    shed: float = 0.01
    expiring: float = 0.02
    consent: float = 0.0        # a row of the resident table (allowed in the first region only)


@dataclass
class LoadStats:
    produced: int = 0
    acked: int = 0
    unconfirmed: int = 0
    batches: int = 0
    flush_failures: int = 0
    by_kind: Counter = field(default_factory=Counter)
    last_error: str = ""
    #: per batch: (unix time its flush returned, seconds from its first produce to then) -- produce→ack latency
    flushes: list[tuple[float, float]] = field(default_factory=list)


class LoadGen:
    """Produce a mixed, checkable workload to ``regions`` (default: every region of ``cfg``).

    ``rate`` is writes per second over all regions (0: as fast as flushes allow);
    ``batch`` writes are produced, then flushed; ``users_per_region`` bounds the
    versioned key space (small: many versions per key).
    """

    def __init__(self, cfg: Config, model: Model | None = None, *, regions: Iterable[str] | None = None,
                 rate: float = 500.0, batch: int = 50, users_per_region: int = 200, seed: int | None = None,
                 mix: Mix | None = None, expire_s: float = 5.0, flush_timeout: float = 30.0,
                 lane: int = 0, journal: bool = False) -> None:
        """``lane`` (0-9) gives this generator its own users and orders, so several generators (one per
        process) never write the same key; ``journal`` records each batch as unconfirmed before it is
        sent, so a generator SIGKILLed mid-batch leaves no write the model does not know."""
        self.cfg = cfg
        self.model = model if model is not None else Model()
        self.regions = list(regions or cfg.regions)
        self.index = {r: i for i, r in enumerate(cfg.regions)}
        self.rate, self.batch = rate, max(1, batch)
        self.users_per_region = users_per_region
        self.mix = mix or Mix()
        self.expire_s, self.flush_timeout = expire_s, flush_timeout
        self.rng = random.Random(seed)
        self.stats = LoadStats()
        self._versions: dict[tuple[str, int], int] = {}
        if not 0 <= lane <= 9:
            raise ValueError("lane must be 0-9")
        self.lane, self.journal = lane, journal
        self._user_base = {r: user_key_base(self.index[r]) + lane * 1_000_000 for r in cfg.regions}
        self._next_order = {r: order_id_base(self.index[r]) + lane * 10**10 for r in cfg.regions}
        self._orders: dict[str, list[int]] = {r: [] for r in cfg.regions}
        # acknowledged groups sure to apply at home: order id -> [ordering key, next free line]
        self._group_orders: dict[str, dict[int, list[Any]]] = {r: {} for r in cfg.regions}
        self._seq = 0
        self._lock = threading.Lock()
        self._producer: WriteProducer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        kinds = ["upsert", "insert", "delete_user", "delete_order", "bad_constraint", "bad_table", "group",
                 "bad_group", "group_more", "consent"]
        self._kinds = kinds
        self._weights = [getattr(self.mix, k) for k in kinds]

    # ---------------------------------------------------------------- one write
    def _fallbacks(self, region: str) -> list[str]:
        fb = list(self.cfg.regions[region].fallbacks)
        return fb or [r for r in self.cfg.regions if r != region]

    def _plan(self, region: str, kind: str, policy: str | None = None) -> tuple[dict[str, Any], WriteRecord]:
        """The keyword arguments for ``WriteProducer.write`` and the model record (status set later)."""
        self._seq += 1
        wid = str(uuid.uuid4())
        ri = self.index[region]
        kw: dict[str, Any] = {"region": region, "id": uuid.UUID(wid)}
        version = None
        expect = "apply"
        expires = False
        lines: tuple[int, ...] = ()
        okey = ""
        if policy is None:
            policy = "hold"
            if kind in ("upsert", "insert", "group"):
                x = self.rng.random()
                m = self.mix
                if x < m.failover:
                    policy = "failover"
                elif x < m.failover + m.shed:
                    policy = "shed"
                elif x < m.failover + m.shed + m.expiring:
                    expires = True
        if kind in ("upsert", "delete_user"):
            k = self._user_base[region] + self.rng.randrange(self.users_per_region)
            version = self._versions.get((region, k), 0) + 1
            self._versions[(region, k)] = version
            if kind == "upsert":
                kw.update(table="users", op="upsert", key={"id": k},
                          data={"name": f"u{k}v{version}", "version": version, "wid": wid})
            else:
                kw.update(table="users", op="delete", key={"id": k}, data={"version": version})
            table, op = "users", kw["op"]
        elif kind in ("insert", "bad_constraint"):
            k = self._next_order[region]
            self._next_order[region] = k + 1
            amount = -1 if kind == "bad_constraint" else round(self.rng.uniform(1, 500), 2)
            kw.update(table="orders", op="insert", key={"id": k},
                      data={"user_id": self._user_base[region] + self.rng.randrange(self.users_per_region),
                            "amount": amount, "status": "new", "wid": wid})
            table, op = "orders", "insert"
            if kind == "bad_constraint":
                expect = "constraint"
        elif kind == "delete_order":
            pool = self._orders[region]
            if not pool:
                self._seq -= 1
                return self._plan(region, "insert", policy)
            k = pool.pop(self.rng.randrange(len(pool)))
            kw.update(table="orders", op="delete", key={"id": k})
            table, op = "orders", "delete"
        elif kind in ("group", "bad_group"):
            k = self._next_order[region]
            self._next_order[region] = k + 1
            n = self.rng.randint(2, 5)
            bad = self.rng.randint(1, n) if kind == "bad_group" else None
            customer = self._user_base[region] + self.rng.randrange(self.users_per_region)
            ops = [("orders", "insert", {"id": k}, {"user_id": customer, "amount": round(self.rng.uniform(1, 500), 2),
                                                    "status": "new", "wid": wid})]
            ops += [("order_items", "insert", {"order_id": k, "line": line},
                     {"sku": f"sku{line}", "qty": 0 if line == bad else item_qty(k, line), "wid": wid})
                    for line in range(1, n + 1)]
            okey = f"customer/{customer}"
            kw.update(ops=ops, ordering_key=okey)
            table, op, lines = "orders", "insert", tuple(range(1, n + 1))
            if bad is not None:
                expect = "constraint"
        elif kind == "group_more":
            pool = self._group_orders[region]
            if not pool:
                self._seq -= 1
                return self._plan(region, "group", policy)
            k = self.rng.choice(list(pool))
            okey, line = pool[k]
            pool[k][1] = line + 1
            ops = [("orders", "update", {"id": k}, {"status": "paid", "wid": wid}),
                   ("order_items", "insert", {"order_id": k, "line": line},
                    {"sku": f"sku{line}", "qty": item_qty(k, line), "wid": wid})]
            kw.update(ops=ops, ordering_key=okey)
            table, op, lines = "orders", "update", (line,)
        elif kind == "consent" and not self.cfg.allowed_in(RESIDENT_TABLE, region):
            self._seq -= 1
            return self._plan(region, "insert", policy)
        elif kind == "consent":
            # a row that must stay in its region (tables.consents.allowed_regions): a failover write is held
            # for home, never applied in a fallback outside the list (the model allows none of those)
            k = self._next_order[region]
            self._next_order[region] = k + 1
            kw.update(table=RESIDENT_TABLE, op="insert", key={"id": k},
                      data={"user_id": user_key_base(ri), "purpose": "marketing", "wid": wid})
            table, op = RESIDENT_TABLE, "insert"
        elif kind == "bad_table":
            k = self._seq
            kw.update(table=BAD_TABLE, op="upsert", key={"id": k}, data={"x": 1})
            table, op, expect = BAD_TABLE, "upsert", "unknown_table"
        else:
            raise ValueError(f"unknown write kind {kind!r}")
        fallbacks: tuple[str, ...] = ()
        if policy != "hold":
            kw["policy"] = policy
        if policy == "failover":
            fallbacks = tuple(self._fallbacks(region))
            kw["fallback_regions"] = list(fallbacks)
            if table in self.cfg.tables:  # where it may be applied (the checker counts any other as misrouted)
                fallbacks = tuple(f for f in fallbacks if self.cfg.allowed_in(table, f))
        if expires:
            kw["expires_at"] = datetime.now(timezone.utc) + timedelta(seconds=self.expire_s)
        rec = WriteRecord(id=wid, seq=self._seq, region=region, table=table, op=op, key=k, version=version,
                          policy=policy, expect=expect, expires=expires, fallbacks=fallbacks,
                          group="ops" in kw, lines=lines, ordering_key=okey)
        return kw, rec

    # ---------------------------------------------------------------- batches
    def _ensure_producer(self) -> WriteProducer:
        if self._producer is None:
            self._producer = WriteProducer(self.cfg)
        return self._producer

    def _send(self, plans: list[tuple[dict[str, Any], WriteRecord]]) -> list[WriteRecord]:
        producer = self._ensure_producer()
        t_first = time.monotonic()
        if self.journal:
            for _kw, rec in plans:
                rec.status = "unconfirmed"   # until the flush below says otherwise
            self.model.add([rec for _kw, rec in plans])
        for kw, rec in plans:
            rec.sent = time.time()
            args = dict(kw)
            if "ops" in args:
                ops = args.pop("ops")
                with producer.group(args.pop("region"), **args) as g:
                    for table, op, key, data in ops:
                        g.add(table, op, key, data)
                continue
            producer.write(args.pop("region"), args.pop("table"), args.pop("op"), args.pop("key"),
                           args.pop("data", None), **args)
        self.stats.produced += len(plans)
        try:
            producer.flush(self.flush_timeout)
            status = "acked"
        except KafkaDeliveryError as exc:
            status = "unconfirmed"
            self.stats.flush_failures += 1
            self.stats.last_error = str(exc)
        now = time.time()
        self.stats.flushes.append((now, time.monotonic() - t_first))
        recs = []
        for kw, rec in plans:
            rec.status, rec.t = status, now
            recs.append(rec)
            if status == "acked":
                self.stats.acked += 1
                self.stats.by_kind[f"{'group' if rec.group else rec.table}.{rec.op}.{rec.policy}"] += 1
                if rec.group:
                    # a follow-up needs its order applied at home for sure (not shed, not expired)
                    if rec.op == "insert" and rec.expect == "apply" and rec.policy in ("hold", "failover") \
                            and not rec.expires:
                        self._group_orders[rec.region][rec.key] = [rec.ordering_key, len(rec.lines) + 1]
                elif rec.table == "orders" and rec.op == "insert" and rec.expect == "apply":
                    self._orders[rec.region].append(rec.key)
            else:
                self.stats.unconfirmed += 1
        self.model.add(recs)
        self.stats.batches += 1
        return recs

    def run_batch(self, n: int | None = None) -> list[WriteRecord]:
        """Produce ``n`` (default ``batch``) random writes, flush, record; returns their records."""
        with self._lock:
            plans = []
            for _ in range(n or self.batch):
                region = self.rng.choice(self.regions)
                kind = self.rng.choices(self._kinds, self._weights)[0]
                plans.append(self._plan(region, kind))
            return self._send(plans)

    def write(self, region: str, kind: str = "upsert", *, policy: str = "hold", count: int = 1) -> list[WriteRecord]:
        """Produce ``count`` writes of one ``kind`` (upsert, insert, delete_user, ...) and ``policy`` now."""
        with self._lock:
            return self._send([self._plan(region, kind, policy) for _ in range(count)])

    def run(self, total: int | None = None, *, duration: float | None = None,
            stop: threading.Event | None = None) -> LoadStats:
        """Produce until ``total`` writes, ``duration`` seconds or ``stop`` (or :meth:`stop`), at ``rate``."""
        stop = stop or self._stop
        t0 = time.monotonic()
        start_count = self.stats.produced
        while not stop.is_set():
            done = self.stats.produced - start_count
            if total is not None and done >= total:
                break
            if duration is not None and time.monotonic() - t0 >= duration:
                break
            n = self.batch if total is None else min(self.batch, total - done)
            self.run_batch(n)
            if self.rate > 0:
                ahead = (self.stats.produced - start_count) / self.rate - (time.monotonic() - t0)
                if ahead > 0:
                    stop.wait(ahead)
        return self.stats

    # ---------------------------------------------------------------- background
    def start(self, **kw: Any) -> "LoadGen":
        """Run :meth:`run` in a daemon thread; :meth:`stop` ends it."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run_thread, kwargs=kw, name="loadgen", daemon=True)
        self._thread.start()
        return self

    def _run_thread(self, **kw: Any) -> None:
        try:
            self.run(**kw)
        except Exception as exc:  # noqa: BLE001 - reported through stats
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            raise

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 60.0) -> LoadStats:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self.stats

    def close(self) -> None:
        self.stop()
        if self._producer is not None:
            try:
                self._producer.flush(self.flush_timeout)
            except KafkaDeliveryError:
                pass
        self.model.close()
