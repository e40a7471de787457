"""Hold every region's database to the model of acknowledged writes.

:func:`check` reads, per region, the inbox (``regionguard_applied``), the rows
of ``users`` and ``orders`` and the effect log (``rg_effects``, see
:data:`~regionguard_testkit.verify.loadgen.VERIFY_SCHEMA`), plus the dead-letter
topic, and compares them with the :class:`~regionguard_testkit.verify.loadgen.Model`:

``lost``
    an acknowledged write that is neither in its home region's inbox nor
    dead-lettered for a reason its workload explains (``shed`` for policy
    shed, ``expired`` for a write with ``expires_at``, ``constraint`` and
    ``unknown_table`` for the deliberately bad writes).
``duplicates``
    a write applied twice in one region: more than one row change logged for
    its id in ``rg_effects``, or a ``constraint`` dead letter for a write that
    is also in the inbox (a second apply that hit the primary key).
``stale_rows``
    a row not at the highest version (or not holding the last write) among
    the writes applied in that region; ``missing_rows``: a row whose last
    applied write was not a delete is absent; ``extra_rows``: a row no
    applied write explains.
``unexplained_dead_letters``
    a dead letter whose reason the workload does not explain, or for a write
    the model does not know.
``unknown_applied`` / ``misrouted``
    an inbox entry of a write the model never produced, or a write applied in
    a region that is neither its home nor one of its failover fallbacks.
``partial_groups``
    an atomic write group only partly there: in a region whose inbox has it,
    some but not all of the rows it still owns (not overwritten by a later
    write) hold its id and values; in a region whose inbox does not have it
    (a dead-lettered group everywhere), any row holding its id.
``split_groups``
    a group whose rows (those it still owns) were not all written by one
    transaction: more than one ``xmin`` among them.
``residency``
    a row stored in a region its table's ``allowed_regions`` leaves out
    (whatever write put it there: counted from the rows, not the inbox).

:func:`produce_to_apply` gives, per region, the produce-to-apply latency of
the writes in flight during a time window (a full regional event's
survivors), from the producer's send time to the inbox's ``applied_at``.

Groups are counted whole: ``groups`` acknowledged, ``groups_applied`` whole at
home (``groups_replayed`` of them by the replayer), ``groups_failover_applied``
whole in a fallback region, ``groups_dead_lettered`` whole with nothing left.

:func:`wait_quiescent` waits until the system is at rest: every acknowledged
write accounted for, the replayer's committed offset at the end of every held
partition, and every partition back in direct mode (a probe write in each
partition applied by the router itself, inbox source ``router``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable

import asyncpg
from confluent_kafka import Consumer, TopicPartition

from regionguard.core.config import Config
from regionguard.core.kafka import Confirmer, KafkaDeliveryError, make_producer, replayer_group
from regionguard.core.models import WriteEvent
from ..embedded.net import run_sync
from .loadgen import Model, WriteRecord, item_qty, order_id_base

__all__ = ["CheckResult", "DeadLetterReader", "QuiesceResult", "acheck", "check", "wait_quiescent",
           "held_ends", "replayer_committed", "read_region", "RegionSnapshot", "produce_to_apply", "percentile"]

FAILURES = ("lost", "duplicates", "stale_rows", "missing_rows", "extra_rows", "unexplained_dead_letters",
            "unknown_applied", "misrouted", "dead_after_apply", "partial_groups", "split_groups", "residency")


# ---------------------------------------------------------------------------- dead letters
@dataclass
class DeadLetterInfo:
    reason: str
    write_id: str | None
    region: str | None
    table: str | None
    detail: str
    offset: int
    at: float | None = None    # unix time the dead letter was written


class DeadLetterReader:
    """Follows ``<prefix>dead-letter`` from the beginning without joining a group.

    :meth:`poll` consumes whatever is new; :meth:`catch_up` reads until the
    topic has been quiet for ``idle`` seconds. Each record's write id comes from
    its ``write_id`` field or, failing that, from the original event's JSON.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.topic = cfg.topic("dead-letter")
        self.items: list[DeadLetterInfo] = []
        self.by_id: dict[str, list[DeadLetterInfo]] = defaultdict(list)
        self._c = Consumer(cfg.kafka_client_conf(**{
            "group.id": f"rg-verify-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "enable.partition.eof": False, "log_level": 0}))
        md = self._c.list_topics(self.topic, timeout=10)
        parts = md.topics[self.topic].partitions if self.topic in md.topics else {0: None}
        self._c.assign([TopicPartition(self.topic, p, 0) for p in parts])

    def poll(self, timeout: float = 0.2) -> int:
        n = 0
        for msg in self._c.consume(1000, timeout):
            if msg.error() is not None or not msg.value():
                continue
            self._add(msg.value(), msg.offset())
            n += 1
        return n

    def catch_up(self, idle: float = 0.5, timeout: float = 30.0) -> int:
        total, last, start = 0, time.monotonic(), time.monotonic()
        while time.monotonic() - last < idle and time.monotonic() - start < timeout:
            n = self.poll(0.1)
            if n:
                total += n
                last = time.monotonic()
        return total

    def _add(self, raw: bytes, offset: int) -> None:
        try:
            d = json.loads(raw)
        except ValueError:
            return
        wid, table, region = d.get("write_id"), None, d.get("region")
        try:
            orig = json.loads(d.get("original") or "null") if d.get("original_encoding", "text") == "text" else None
        except ValueError:
            orig = None
        if isinstance(orig, dict):
            wid = wid or orig.get("id")
            table = orig.get("table")
            region = region or orig.get("region")
        at = None
        try:
            at = datetime.fromisoformat(str(d.get("at"))).timestamp()
        except ValueError:
            pass
        info = DeadLetterInfo(reason=str(d.get("reason")), write_id=wid, region=region, table=table,
                              detail=str(d.get("detail", ""))[:200], offset=offset, at=at)
        self.items.append(info)
        if wid:
            self.by_id[str(wid)].append(info)

    def reasons(self) -> Counter:
        return Counter(i.reason for i in self.items)

    def close(self) -> None:
        try:
            self._c.close()
        except Exception:  # noqa: BLE001 - test kit: best-effort teardown of a read-only consumer; nothing to lose
            pass


# ---------------------------------------------------------------------------- database snapshot
@dataclass
class RegionSnapshot:
    region: str
    inbox: dict[str, str]                       # write id -> source
    rows: dict[tuple[str, Any], tuple[int | None, str | None]]  # (table, key) -> (version, wid)
    effects: dict[str, int]                     # wid -> most changes of one row by it (only > 1 kept)
    applied_times: dict[str, float] = field(default_factory=dict)  # write id -> unix time applied, if asked
    xmins: dict[tuple[str, Any], str] = field(default_factory=dict)  # orders and order_items rows -> xmin
    qty: dict[tuple[int, int], int | None] = field(default_factory=dict)  # order_items (order_id, line) -> qty


async def read_region(region: str, dsn: str, *, with_times: bool = False) -> RegionSnapshot:
    conn = await asyncpg.connect(dsn, timeout=15)
    try:
        inbox_rows = await conn.fetch("SELECT write_id::text AS id, source, "
                                      "extract(epoch FROM applied_at)::float8 AS t FROM regionguard_applied")
        rows: dict[tuple[str, int], tuple[int | None, str | None]] = {}
        for r in await conn.fetch("SELECT id, version, wid FROM users"):
            rows[("users", r["id"])] = (r["version"], r["wid"])
        xmins: dict[tuple[str, Any], str] = {}
        for r in await conn.fetch("SELECT id, wid, xmin::text AS x FROM orders"):
            rows[("orders", r["id"])] = (None, r["wid"])
            xmins[("orders", r["id"])] = r["x"]
        if await conn.fetchval("SELECT to_regclass('consents') IS NOT NULL"):
            for r in await conn.fetch("SELECT id, wid FROM consents"):
                rows[("consents", r["id"])] = (None, r["wid"])
        qty: dict[tuple[int, int], int | None] = {}
        if await conn.fetchval("SELECT to_regclass('order_items') IS NOT NULL"):
            for r in await conn.fetch("SELECT order_id, line, qty, wid, xmin::text AS x FROM order_items"):
                k = ("order_items", (r["order_id"], r["line"]))
                rows[k] = (None, r["wid"])
                xmins[k] = r["x"]
                qty[(r["order_id"], r["line"])] = r["qty"]
        effects: dict[str, int] = {}
        if await conn.fetchval("SELECT to_regclass('rg_effects') IS NOT NULL"):
            # per row: a group changes several rows once each; a write applied twice changes one row twice
            keyed = await conn.fetchval("SELECT count(*) FROM information_schema.columns "
                                        "WHERE table_name = 'rg_effects' AND column_name = 'k'")
            by = "wid, tbl, k" if keyed else "wid"
            for r in await conn.fetch(f"SELECT wid, max(n) AS n FROM (SELECT wid, count(*) AS n FROM rg_effects "
                                      f"WHERE wid IS NOT NULL GROUP BY {by} HAVING count(*) > 1) d GROUP BY wid"):
                effects[r["wid"]] = r["n"]
    finally:
        await conn.close()
    snap = RegionSnapshot(region, {r["id"]: r["source"] for r in inbox_rows}, rows, effects, xmins=xmins, qty=qty)
    if with_times:
        snap.applied_times = {r["id"]: r["t"] for r in inbox_rows}
    return snap


async def _inbox_ids(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn, timeout=15)
    try:
        return {r[0]: r[1] for r in await conn.fetch("SELECT write_id::text, source FROM regionguard_applied")}
    finally:
        await conn.close()


# ---------------------------------------------------------------------------- result
@dataclass
class CheckResult:
    produced: int = 0
    acknowledged: int = 0
    unconfirmed: int = 0
    applied: int = 0              # acknowledged writes found in their home region's inbox
    replayed: int = 0             # ... of which the replayer applied
    failover_applied: int = 0     # inbox entries in a fallback region (policy failover)
    dead_lettered: int = 0        # acknowledged writes dead-lettered for an explained reason
    dead_letters: int = 0         # dead-letter records seen
    dead_reasons: Counter = field(default_factory=Counter)
    dead_after_apply: int = 0     # applied, and also dead-lettered as shed/expired (a dead letter naming an applied write)
    lost: int = 0
    duplicates: int = 0
    stale_rows: int = 0
    missing_rows: int = 0
    extra_rows: int = 0
    unexplained_dead_letters: int = 0
    unknown_applied: int = 0
    misrouted: int = 0
    partial_groups: int = 0       # a group partly there (see the module docstring)
    split_groups: int = 0         # a group's rows written by more than one transaction
    residency: int = 0            # rows in a region their table's allowed_regions leaves out
    rows_checked: int = 0
    groups: int = 0               # acknowledged atomic write groups
    groups_applied: int = 0       # ... whole, at home
    groups_replayed: int = 0      # ... of which the replayer applied
    groups_failover_applied: int = 0  # whole in a fallback region (policy failover)
    groups_dead_lettered: int = 0     # dead-lettered whole, for an explained reason
    group_rows_checked: int = 0   # rows of applied groups held to their group (values, one xmin)
    per_region: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(getattr(self, f) == 0 for f in FAILURES)

    def _example(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)

    def result_line(self) -> str:
        return (f"RESULT produced={self.produced} applied={self.applied} lost={self.lost} "
                f"duplicates={self.duplicates} dead_lettered={self.dead_lettered}")

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["dead_reasons"] = dict(self.dead_reasons)
        d["ok"] = self.ok
        return d

    def report(self) -> str:
        lines = [
            f"checker: {'OK' if self.ok else 'FAILED'}",
            f"  writes produced {self.produced}, acknowledged {self.acknowledged}, unconfirmed {self.unconfirmed}",
            f"  applied {self.applied} (replayed {self.replayed}), failover-applied elsewhere {self.failover_applied}",
            f"  dead-lettered {self.dead_lettered} ({', '.join(f'{k} {v}' for k, v in sorted(self.dead_reasons.items())) or 'none'})",
            f"  rows checked {self.rows_checked}",
            f"  groups {self.groups} acknowledged: applied whole {self.groups_applied} (replayed "
            f"{self.groups_replayed}), failover-applied whole elsewhere {self.groups_failover_applied}, "
            f"dead-lettered whole {self.groups_dead_lettered}; {self.group_rows_checked} group rows, "
            f"each group's in one transaction",
            f"  residency: {self.residency} rows outside their table's allowed regions",
            "  " + ", ".join(f"{f} {getattr(self, f)}" for f in FAILURES),
        ]
        lines += [f"  ! {e}" for e in self.examples]
        return "\n".join(lines)


def _explains(rec: WriteRecord) -> set[str]:
    if rec.expect == "constraint":
        return {"constraint"}
    if rec.expect == "unknown_table":
        return {"unknown_table"}
    out = set()
    if rec.policy == "shed":
        out.add("shed")
    if rec.expires:
        out.add("expired")
    return out


def evaluate(model: Model, snaps: dict[str, RegionSnapshot], dead: DeadLetterReader | None,
             allowed: dict[str, set[str]] | None = None) -> CheckResult:
    """The pure comparison (no I/O): model + region snapshots + dead letters -> result.

    ``allowed`` maps a table under data residency to the regions its rows may live in.
    """
    res = CheckResult()
    recs = list(model)
    by_id = {r.id: r for r in recs}
    dl_by_id = dead.by_id if dead is not None else {}
    res.produced = len(recs)
    for region in snaps:
        res.per_region[region] = Counter()
    # -- every write: applied at home, or explained dead letter; never both in a contradictory way
    for r in recs:
        if r.acked:
            res.acknowledged += 1
        else:
            res.unconfirmed += 1
        home = snaps.get(r.region)
        applied = home is not None and r.id in home.inbox
        reasons = {d.reason for d in dl_by_id.get(r.id, ())}
        explained = _explains(r)
        if r.expect != "apply" and applied:
            res.unknown_applied += 1
            res._example(f"bad write {r.id} ({r.expect} expected) was applied in {r.region}")
        if r.group and r.acked:
            res.groups += 1
        if applied and r.expect == "apply":
            if r.acked:
                res.applied += 1
                res.per_region[r.region]["applied"] += 1
                if home.inbox[r.id] == "replay":
                    res.replayed += 1
                    res.per_region[r.region]["replayed"] += 1
                if r.group:
                    res.groups_applied += 1
                    res.groups_replayed += home.inbox[r.id] == "replay"
            if "constraint" in reasons:
                res.duplicates += 1
                res._example(f"write {r.id} applied in {r.region} and also failed a constraint (second apply)")
            if reasons & {"shed", "expired"}:
                res.dead_after_apply += 1
                res._example(f"write {r.id} applied in {r.region} and also dead-lettered as "
                             f"{'/'.join(sorted(reasons & {'shed', 'expired'}))}")
        elif reasons & explained:
            if r.acked:
                res.dead_lettered += 1
                res.per_region[r.region]["dead_lettered"] += 1
                res.groups_dead_lettered += r.group
        elif r.acked and r.region in snaps:
            res.lost += 1
            res.per_region[r.region]["lost"] += 1
            res._example(f"lost: {r.table} {r.op} key={r.key} id={r.id} region={r.region} policy={r.policy}"
                         + (f" (dead letters: {sorted(reasons)})" if reasons else ""))
        for d in dl_by_id.get(r.id, ()):
            if d.reason not in explained and not (d.reason == "constraint" and applied):
                res.unexplained_dead_letters += 1
                res._example(f"unexplained dead letter {d.reason} for {r.id} ({r.table} {r.op}): {d.detail}")
    if dead is not None:
        res.dead_letters = len(dead.items)
        res.dead_reasons = dead.reasons()
        for d in dead.items:
            if not d.write_id or d.write_id not in by_id:
                res.unexplained_dead_letters += 1
                res._example(f"dead letter {d.reason} for a write the model does not know: {d.write_id} {d.detail}")
    # -- every region: inbox entries are known and allowed there; rows match the last applied write
    for region, snap in snaps.items():
        winners: dict[tuple[str, Any], WriteRecord] = {}
        here: list[WriteRecord] = []   # groups applied in this region
        for wid, source in snap.inbox.items():
            r = by_id.get(wid)
            if r is None:
                res.unknown_applied += 1
                res._example(f"{region}: inbox has write {wid} ({source}) the model never produced")
                continue
            if r.region != region:
                if r.policy != "failover" or region not in r.fallbacks:
                    res.misrouted += 1
                    res._example(f"{region}: write {wid} of {r.region} ({r.policy}) applied here")
                    continue
                res.failover_applied += 1
                res.per_region[region]["failover_applied_here"] += 1
                res.groups_failover_applied += r.group and r.expect == "apply"
            if r.expect != "apply":
                continue
            if r.group:
                here.append(r)
            for k in r.rows():
                if k not in winners or winners[k].seq < r.seq:
                    winners[k] = r
        for wid, n in snap.effects.items():
            res.duplicates += 1
            res.per_region[region]["duplicates"] += 1
            res._example(f"{region}: write {wid} changed a row {n} times")
        for k, winner in winners.items():
            res.rows_checked += 1
            row = snap.rows.get(k)
            if winner.op == "delete":
                if row is not None:
                    res.stale_rows += 1
                    res._example(f"{region}: {k} should be deleted by {winner.id}, holds version {row[0]} wid {row[1]}")
                continue
            if row is None:
                res.missing_rows += 1
                res._example(f"{region}: {k} missing; last applied write {winner.id} ({winner.op} v{winner.version})")
                continue
            version, wid = row
            if wid != winner.id or (winner.version is not None and version != winner.version):
                res.stale_rows += 1
                res._example(f"{region}: {k} at version {version} by {wid}; expected v{winner.version} by {winner.id}")
            elif k[0] == "order_items" and snap.qty.get(k[1], -1) != item_qty(*k[1]):
                res.stale_rows += 1
                res._example(f"{region}: {k} holds qty {snap.qty.get(k[1])}, its group {wid} wrote {item_qty(*k[1])}")
        for k in snap.rows:
            if k not in winners:
                res.extra_rows += 1
                res._example(f"{region}: row {k} not explained by any applied write")
        _check_groups(res, region, snap, here, winners, recs)
        for table, key in snap.rows:
            if allowed and table in allowed and region not in allowed[table]:
                res.residency += 1
                res._example(f"{region}: {table} row {key} stored outside its allowed regions "
                             f"{sorted(allowed[table])}")
    res.per_region = {r: dict(c) for r, c in res.per_region.items()}
    return res


def _check_groups(res: CheckResult, region: str, snap: RegionSnapshot, here: list[WriteRecord],
                  winners: dict[tuple[str, Any], WriteRecord], recs: list[WriteRecord]) -> None:
    """All or nothing, in one transaction: every group applied in ``region`` whole, every other none."""
    by_wid: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for k, (_v, wid) in snap.rows.items():
        if wid is not None:
            by_wid[wid].append(k)
    applied_here = {r.id for r in here}
    for r in here:
        owned = [k for k in r.rows() if winners.get(k) is r]   # the rows no later write overwrote
        present = [k for k in owned if k in snap.rows and snap.rows[k][1] == r.id]
        res.group_rows_checked += len(present)
        if present and len(present) < len(owned):
            res.partial_groups += 1
            res._example(f"{region}: group {r.id} (order {r.key}) half there: {len(present)} of its "
                         f"{len(owned)} rows, missing {sorted(set(owned) - set(present), key=str)[:3]}")
        xmins = {snap.xmins.get(k) for k in present}
        if len(xmins) > 1:
            res.split_groups += 1
            res._example(f"{region}: group {r.id} (order {r.key}) written by {len(xmins)} transactions "
                         f"(xmin {sorted(map(str, xmins))})")
    for r in recs:
        if r.group and r.id not in applied_here and by_wid.get(r.id):
            res.partial_groups += 1
            res._example(f"{region}: group {r.id} ({r.expect}, not applied here) left rows "
                         f"{sorted(by_wid[r.id], key=str)[:3]}")


async def acheck(cfg: Config, model: Model, dsns: dict[str, str] | None = None, *,
                 dead: DeadLetterReader | None = None) -> CheckResult:
    """Read every region and the dead-letter topic and compare with ``model``.

    ``dsns`` should bypass fault proxies (default: the config's DSNs).
    """
    dsns = dsns or {r: c.dsn for r, c in cfg.regions.items()}
    own = dead is None
    if own:
        dead = await asyncio.to_thread(DeadLetterReader, cfg)
    try:
        await asyncio.to_thread(dead.catch_up, 1.0)
        snaps = dict(zip(dsns, await asyncio.gather(*(read_region(r, d) for r, d in dsns.items()))))
    finally:
        if own:
            dead.close()
    allowed = {t: {r for r in cfg.regions if cfg.allowed_in(t, r)} for t, tc in cfg.tables.items()
               if tc.allowed_regions is not None}
    return evaluate(model, snaps, dead, allowed)


def produce_to_apply(model: Model, snaps: dict[str, RegionSnapshot], regions: Iterable[str],
                     start: float, end: float) -> dict[str, list[float]]:
    """Seconds from send to apply at home of every acknowledged write of ``regions`` in flight during
    [``start``, ``end``] (unix times): sent by ``end`` and applied at ``start`` or later, so a write
    sent just before a fault and stuck through it counts too. Per region; needs snapshots read
    ``with_times``.

    The inbox's ``applied_at`` is the applying transaction's start (``now()``): the latency of a
    write is at most its batch's own apply time short.
    """
    want = set(regions)
    out: dict[str, list[float]] = {r: [] for r in want}
    for r in model:
        if r.region not in want or not r.acked or not r.sent or r.sent > end:
            continue
        t = snaps[r.region].applied_times.get(r.id) if r.region in snaps else None
        if t is not None and t >= start:
            out[r.region].append(max(0.0, t - r.sent))
    return out


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


def check(cfg: Config, model: Model, dsns: dict[str, str] | None = None, *,
          dead: DeadLetterReader | None = None) -> CheckResult:
    """Sync :func:`acheck`."""
    return run_sync(acheck(cfg, model, dsns, dead=dead))


# ---------------------------------------------------------------------------- quiescence
def _true_end(c: Consumer, topic: str, p: int) -> int:
    """End offset of one partition, not trusting the broker's high watermark beyond a lower bound.

    (tansu reports the last batch's base offset + 1): read forward from there.
    """
    _low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
    start = max(0, high - 1)
    c.assign([TopicPartition(topic, p, start)])
    end, idle_since = high, time.monotonic()
    while time.monotonic() - idle_since < 0.3:
        msgs = c.consume(1000, 0.1)
        for m in msgs:
            if m.error() is None:
                end = max(end, m.offset() + 1)
        if msgs:
            idle_since = time.monotonic()
    c.unassign()
    return end


def held_ends(cfg: Config, region: str) -> dict[int, int]:
    topic = cfg.topic("held", region)
    c = Consumer(cfg.kafka_client_conf(**{"group.id": f"rg-verify-{uuid.uuid4().hex[:8]}",
                                          "enable.auto.commit": False, "log_level": 0}))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: _true_end(c, topic, p) for p in sorted(parts)}
    finally:
        c.close()


def replayer_committed(cfg: Config, region: str, partitions: Iterable[int]) -> dict[int, int]:
    c = Consumer(cfg.kafka_client_conf(**{"group.id": replayer_group(cfg, region), "enable.auto.commit": False,
                                          "log_level": 0}))
    try:
        tps = c.committed([TopicPartition(cfg.topic("held", region), p) for p in partitions], timeout=10)
        return {tp.partition: (tp.offset if tp.offset is not None and tp.offset >= 0 else 0) for tp in tps}
    finally:
        c.close()


@dataclass
class QuiesceResult:
    ok: bool
    seconds: float
    pending: int = 0
    held_behind: dict[str, int] = field(default_factory=dict)
    probes: int = 0
    direct_partitions: dict[str, int] = field(default_factory=dict)
    detail: str = ""


def _pending(model: Model, inboxes: dict[str, dict[str, str]], dead: DeadLetterReader) -> list[WriteRecord]:
    out = []
    for r in model:
        if not r.acked or r.region not in inboxes:
            continue
        if r.id in inboxes[r.region] or r.id in dead.by_id:
            continue
        out.append(r)
    return out


class _Prober:
    """Probe writes (order inserts on a reserved id range), one or more per partition, recorded in the model."""

    def __init__(self, cfg: Config, model: Model) -> None:
        self.cfg, self.model = cfg, model
        self.producer = make_producer(cfg)
        self.index = {r: i for i, r in enumerate(cfg.regions)}
        self.next_id = {r: order_id_base(i) + 5 * 10**11 for r, i in self.index.items()}
        self.seq = 10**12

    def send(self, region: str, n: int) -> dict[str, int]:
        """Produce ``n`` probes to ``region``; returns write id -> partition."""
        parts: dict[str, int] = {}
        recs: list[WriteRecord] = []
        c = Confirmer()

        def cb(err, msg, wid: str) -> None:
            c.callback(err, msg)
            if err is None:
                parts[wid] = msg.partition()

        for _ in range(n):
            k = self.next_id[region]
            self.next_id[region] = k + 1
            self.seq += 1
            wid = uuid.uuid4()
            ev = WriteEvent(id=wid, region=region, table="orders", op="insert", key={"id": k},
                            data={"user_id": 0, "amount": 0, "status": "probe", "wid": str(wid)})
            self.producer.produce(self.cfg.topic("writes", region), ev.model_dump_json().encode(),
                                  key=ev.kafka_key(), on_delivery=lambda err, msg, w=str(wid): cb(err, msg, w))
            c.pending += 1
            recs.append(WriteRecord(id=str(wid), seq=self.seq, region=region, table="orders", op="insert", key=k,
                                    version=None, policy="hold", expect="apply"))
        try:
            c.wait(self.producer, 30)
            status = "acked"
        except KafkaDeliveryError:
            status = "unconfirmed"
        now = time.time()
        for r in recs:
            r.status, r.t = status, now
        self.model.add(recs)
        return parts if status == "acked" else {}


def wait_quiescent(cfg: Config, model: Model, dsns: dict[str, str] | None = None, *, timeout: float = 120.0,
                   dead: DeadLetterReader | None = None, probe: bool = True,
                   on_wait: Callable[[str], None] | None = None) -> QuiesceResult:
    """Wait (polling, up to ``timeout``) until the system is at rest; see the module docstring.

    Heal every fault and stop the load first. Returns ``ok=False`` with what
    was still pending when the time ran out (the checker then says what is lost).
    """
    dsns = dsns or {r: c.dsn for r, c in cfg.regions.items()}
    t0 = time.monotonic()
    deadline = t0 + timeout
    own = dead is None
    dead = dead or DeadLetterReader(cfg)
    say = on_wait or (lambda _s: None)
    res = QuiesceResult(ok=False, seconds=0.0)
    try:
        # 1. every acknowledged write applied at home or dead-lettered
        while True:
            dead.poll(0.1)
            inboxes = run_sync(_gather_inboxes(dsns))
            pend = _pending(model, inboxes, dead)
            res.pending = len(pend)
            if not pend:
                break
            say(f"{len(pend)} acknowledged writes not yet applied")
            if time.monotonic() > deadline:
                res.detail = "pending writes: " + ", ".join(f"{r.region}/{r.table}/{r.key}" for r in pend[:5])
                return _done(res, t0)
            time.sleep(0.5)
        # 2. every held partition replayed to its end
        while True:
            behind = {}
            for region in cfg.regions:
                ends = held_ends(cfg, region)
                committed = replayer_committed(cfg, region, ends)
                n = sum(max(0, ends[p] - committed.get(p, 0)) for p in ends)
                if n:
                    behind[region] = n
            res.held_behind = behind
            if not behind:
                break
            say(f"held backlog not replayed: {behind}")
            if time.monotonic() > deadline:
                res.detail = f"held backlog left: {behind}"
                return _done(res, t0)
            time.sleep(0.5)
        # 3. every partition direct: a probe in each partition applied by the router itself
        if probe:
            prober = _Prober(cfg, model)
            want = {r: set(range(cfg.kafka.partitions)) for r in cfg.regions}
            outstanding: dict[str, dict[str, int]] = {r: {} for r in cfg.regions}   # region -> wid -> partition
            direct: dict[str, set[int]] = {r: set() for r in cfg.regions}
            last_send = 0.0
            while True:
                if time.monotonic() - last_send > 3.0:
                    last_send = time.monotonic()
                    for region in cfg.regions:
                        missing = want[region] - direct[region]
                        covered = set(outstanding[region].values())
                        if missing - covered or not outstanding[region]:
                            outstanding[region].update(prober.send(region, 3 * len(missing) + 1))
                            res.probes += 3 * len(missing) + 1
                # only the probes' inbox rows: reading whole inboxes every 0.3 s (tens of thousands of
                # rows after a long run) kept this process busy enough to starve the fault proxies,
                # which run in it, so health saw a region time out and held its partitions
                inboxes = run_sync(_gather_sources(dsns, {r: list(out) for r, out in outstanding.items()}))
                for region, out in outstanding.items():
                    for wid, p in list(out.items()):
                        src = inboxes[region].get(wid)
                        if src == "router":
                            direct[region].add(p)
                            del out[wid]
                        elif src is not None:
                            del out[wid]  # applied by the replayer: that partition was still held; probe again
                res.direct_partitions = {r: len(s) for r, s in direct.items()}
                if all(want[r] <= direct[r] for r in want):
                    break
                say(f"partitions direct: {res.direct_partitions}")
                if time.monotonic() > deadline:
                    res.detail = f"partitions not direct: { {r: sorted(want[r] - direct[r]) for r in want} }"
                    return _done(res, t0)
                time.sleep(0.3)
            # the probes themselves must be accounted for before the checker runs
            while _pending(model, run_sync(_gather_inboxes(dsns)), dead) and time.monotonic() < deadline:
                dead.poll(0.1)
                time.sleep(0.3)
        res.ok = True
        return _done(res, t0)
    finally:
        if own:
            dead.close()


def _done(res: QuiesceResult, t0: float) -> QuiesceResult:
    res.seconds = round(time.monotonic() - t0, 2)
    return res


async def _gather_inboxes(dsns: dict[str, str]) -> dict[str, dict[str, str]]:
    return dict(zip(dsns, await asyncio.gather(*(_inbox_ids(d) for d in dsns.values()))))


async def _inbox_sources(dsn: str, ids: list[str]) -> dict[str, str]:
    """Write id -> inbox source, for ``ids`` only."""
    if not ids:
        return {}
    conn = await asyncpg.connect(dsn, timeout=15)
    try:
        rows = await conn.fetch("SELECT write_id::text, source FROM regionguard_applied "
                                "WHERE write_id = ANY($1::uuid[])", ids)
        return {r[0]: r[1] for r in rows}
    finally:
        await conn.close()


async def _gather_sources(dsns: dict[str, str], ids: dict[str, list[str]]) -> dict[str, dict[str, str]]:
    return dict(zip(dsns, await asyncio.gather(*(_inbox_sources(d, ids.get(r, [])) for r, d in dsns.items()))))


def locate(cfg: Config, model: Model, ids: Iterable[str]) -> dict[str, str]:
    """Where each write id is in Kafka: its writes/held partition and offset against the groups' commits.

    For diagnosing a write that is neither applied nor dead-lettered.
    """
    from regionguard.core.kafka import router_group

    want = set(ids)
    regions = {model.get(i).region for i in want if model.get(i) is not None}
    found: dict[str, list[str]] = defaultdict(list)
    c = Consumer(cfg.kafka_client_conf(**{"group.id": f"rg-verify-{uuid.uuid4().hex[:8]}",
                                          "enable.auto.commit": False, "log_level": 0}))
    try:
        for region in sorted(regions):
            for kind, group in (("writes", router_group(cfg, region)), ("held", replayer_group(cfg, region))):
                topic = cfg.topic(kind, region)
                parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
                g = Consumer(cfg.kafka_client_conf(**{"group.id": group, "enable.auto.commit": False,
                                                      "log_level": 0}))
                try:
                    committed = {tp.partition: tp.offset for tp in
                                 g.committed([TopicPartition(topic, p) for p in parts], timeout=10)}
                finally:
                    g.close()
                c.assign([TopicPartition(topic, p, 0) for p in parts])
                last = time.monotonic()
                while time.monotonic() - last < 0.5:
                    msgs = c.consume(1000, 0.1)
                    if msgs:
                        last = time.monotonic()
                    for m in msgs:
                        if m.error() is not None or not m.value():
                            continue
                        try:
                            wid = json.loads(m.value()).get("id")
                        except ValueError:
                            continue
                        if wid in want:
                            p = m.partition()
                            found[wid].append(f"{kind}[{p}]@{m.offset()} (group committed {committed.get(p)})")
                c.unassign()
    finally:
        c.close()
    return {i: "; ".join(found.get(i, ["not in Kafka"])) for i in want}
