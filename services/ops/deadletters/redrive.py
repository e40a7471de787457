"""``dead-letters list`` and ``dead-letters redrive``: the I/O around :mod:`.plan`.

A redrive of reason R, exactly once (docs/operations.md, "Redriving dead letters"):

1. Its consumer group ``<prefix>redrive.R`` holds how far the dead-letter topic has
   been settled for R (redriven, refused, or passed over). The run reads from
   there to the end the topic has when it starts: dead letters written during
   the run (a redriven write failing again) wait for the next run.
2. A transactional producer (transactional id = the group name) republishes a
   batch and commits the group's offset past it in the same transaction
   (``send_offsets_to_transaction``). ``init_transactions`` first aborts a batch
   a killed run left open, so on Apache Kafka a crash republishes nothing
   visible to the router (it reads committed records only) and the rerun does
   that batch again.
3. Brokers whose transactions don't hide aborted records (tansu) are covered by a
   second guard: every republished record names its dead letter in ``rg-redrive-of``,
   and a run first reads the targets' tails (from the last commit's time, or the
   oldest pending dead letter's, minus a margin) and skips what is already there.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from datetime import datetime
from typing import Any, TextIO

from confluent_kafka import KafkaException, TopicPartition
from pydantic import ValidationError

from ...core.config import Config, UsageError
from ...core.kafka import make_producer
from ...core.models import DeadLetter
from . import kafkaio
from .plan import (H_COUNT, H_OF, Action, Item, decide, group_name, header, held_source, matches, parse_count,
                   redrive_id, restore, write_id)

#: the tail scan for records an earlier run republished starts this long before its bound (clock skew)
SCAN_MARGIN_S = 300.0


def _parse(value: bytes | None) -> DeadLetter | None:
    if not value:
        return None
    try:
        return DeadLetter.model_validate_json(value)
    except ValidationError:
        return None


def read_dead_letters(cfg: Config, c, topic: str, partitions: list[int], exact: bool,
                      start: dict[int, int] | None = None) -> tuple[list[Item], dict[int, int]]:
    """Dead letters from ``start`` (default: the beginning) to the topic's end now, and that end per partition."""
    items: list[Item] = []
    ends: dict[int, int] = {}
    for p in partitions:
        first = (start or {}).get(p, 0)
        ends[p] = first
        for msg in kafkaio.read_range(c, topic, p, first, exact=exact):
            items.append(Item(p, msg.offset(), msg.key(), _parse(msg.value())))
            ends[p] = msg.offset() + 1
    return items, ends


def committed(c, group_topic: str, partitions: list[int]) -> tuple[dict[int, int], dict[int, str]]:
    """The group's committed offsets (0 where none) and their metadata."""
    try:
        tps = c.committed([TopicPartition(group_topic, p) for p in partitions], timeout=15)
    except KafkaException as exc:
        raise UsageError(f"cannot read the redrive group's offsets: {kafkaio._why(exc)}") from None
    offs = {tp.partition: max(tp.offset, 0) for tp in tps}
    meta = {tp.partition: tp.metadata for tp in tps if getattr(tp, "metadata", None)}
    return offs, meta


# ----------------------------------------------------------------------------------- list
def run_list(cfg: Config, *, reason: str | None, since: datetime | None, as_json: bool,
             out: TextIO = sys.stdout) -> int:
    topic = cfg.topic("dead-letter")
    partitions, exact = kafkaio.connect(cfg, topic)
    c = kafkaio.reader(cfg)
    try:
        items, _ = read_dead_letters(cfg, c, topic, partitions, exact)
    finally:
        c.close()
    settled: dict[str, dict[int, int]] = {}
    shown = [i for i in items if i.dl is not None and matches(i.dl, reason=reason, since=since)]
    for r in sorted({i.dl.reason.value for i in shown}):
        g = kafkaio.reader(cfg, group_name(cfg, r))
        try:
            settled[r] = committed(g, topic, partitions)[0]
        finally:
            g.close()
    counts: Counter = Counter()
    for i in shown:
        dl = i.dl
        state = "settled" if i.offset < settled[dl.reason.value].get(i.partition, 0) else "pending"
        counts[dl.reason.value] += 1
        if as_json:
            doc = json.loads(dl.model_dump_json())
            doc.update({"dead_letter_partition": i.partition, "dead_letter_offset": i.offset, "redrive": state})
            print(json.dumps(doc, sort_keys=True), file=out)
        else:
            detail = " ".join(dl.detail.split())[:100]
            print(f"{i.partition}/{i.offset}  {dl.at.isoformat(timespec='seconds')}  {dl.reason.value:<14} "
                  f"{dl.topic}[{dl.partition}]@{dl.offset}  write={write_id(dl) or '-'}  {state}  {detail}", file=out)
    if not as_json:
        by = ", ".join(f"{r}={n}" for r, n in sorted(counts.items())) or "none"
        unreadable = sum(1 for i in items if i.dl is None)
        extra = f"; {unreadable} unreadable record(s) in {topic}" if unreadable else ""
        print(f"{len(shown)} dead letter(s) ({by}){extra}", file=out)
    return 0


# ----------------------------------------------------------------------------------- redrive
def _counts(cfg: Config, c, items: list[Item], exact: bool) -> None:
    """Fill ``item.count`` from the dead-lettered record's ``rg-redrive-count`` (following a held record home)."""
    todo = [i for i in items if i.dl is not None]
    first = kafkaio.fetch_headers(c, [(i.dl.topic, i.dl.partition, i.dl.offset) for i in todo], exact=exact)
    second_wanted: dict[int, tuple[str, int, int]] = {}
    held_topics = {cfg.topic("held", r) for r in cfg.regions}
    for idx, i in enumerate(todo):
        hdrs = first.get((i.dl.topic, i.dl.partition, i.dl.offset))
        if hdrs is None:
            i.count = 0  # the record is gone (retention): its count is unknown, taken as 0 (docs/operations.md)
            continue
        i.count = parse_count(header(hdrs, H_COUNT))
        if i.dl.topic in held_topics:
            src = held_source(hdrs)
            if src is not None:
                second_wanted[idx] = src
    if second_wanted:
        second = kafkaio.fetch_headers(c, second_wanted.values(), exact=exact)
        for idx, src in second_wanted.items():
            hdrs = second.get(src)
            todo[idx].count = 0 if hdrs is None else parse_count(header(hdrs, H_COUNT))


def _restore(c, truncated: list[Item], exact: bool) -> None:
    """Read the whole original of each dead letter that holds only its start (core/sizes.py) from its source."""
    if not truncated:
        return
    fetched = kafkaio.fetch_values(c, [(i.dl.topic, i.dl.partition, i.dl.offset) for i in truncated], exact=exact)
    for i in truncated:
        restore(i, fetched.get((i.dl.topic, i.dl.partition, i.dl.offset)))


def _already(cfg: Config, c, dl_topic: str, candidates: list[Item], bound_ms: int | None, exact: bool) -> set[str]:
    """``rg-redrive-of`` values already in the targets' tails: dead letters republished by an unfinished run."""
    targets = {i.target for i in candidates if i.target is not None}
    if not targets:
        return set()
    if bound_ms is None:
        bound_ms = int(min(i.dl.at.timestamp() for i in candidates) * 1000)
    start_ms = bound_ms - int(SCAN_MARGIN_S * 1000)
    wanted = {redrive_id(dl_topic, i.partition, i.offset) for i in candidates}
    found: set[str] = set()
    for topic, part in sorted(targets):
        first = kafkaio.first_offset_after(c, topic, part, start_ms)
        for msg in kafkaio.read_range(c, topic, part, first, exact=exact):
            of = header(list(msg.headers() or []), H_OF)
            if of is not None:
                val = of.decode("utf-8", "replace")
                if val in wanted:
                    found.add(val)
    return found


def run_redrive(cfg: Config, *, reason: str, since: datetime | None, dry_run: bool, batch: int = 500,
                out: TextIO = sys.stdout, as_json: bool = False) -> int:
    topic = cfg.topic("dead-letter")
    partitions, exact = kafkaio.connect(cfg, topic)
    group = group_name(cfg, reason)
    producer = None
    if not dry_run:
        producer = make_producer(cfg, **{"transactional.id": group, "transaction.timeout.ms": 60000,
                                         "linger.ms": 5, "log_level": 0})
        try:
            producer.init_transactions(30)  # fences an earlier run and aborts the batch it left open
        except KafkaException as exc:
            raise UsageError(f"cannot start the redrive transaction ({group}): {kafkaio._why(exc)}") from None
    gc = kafkaio.reader(cfg, group)
    rc = kafkaio.reader(cfg)
    try:
        start, meta = committed(gc, topic, partitions)
        items, ends = read_dead_letters(cfg, rc, topic, partitions, exact, start)
        mine = [i for i in items if i.dl is not None and i.dl.reason.value == reason]
        _counts(cfg, rc, mine, exact)
        for i in items:  # first pass: filters and counts, before looking for earlier republishes
            decide(i, cfg, reason=reason, since=since, already=set(), dl_topic=topic)
        candidates = [i for i in items if i.action == Action.redrive]
        bound = _bound_ms(meta)
        already = _already(cfg, rc, topic, candidates, bound, exact) if candidates else set()
        for i in items:
            decide(i, cfg, reason=reason, since=since, already=already, dl_topic=topic)
        _restore(rc, [i for i in items if i.action == Action.redrive and i.dl.original_truncated], exact)
        tally: Counter = Counter(i.action for i in items)
        for i in items:
            if as_json and (i.action == Action.refuse or (dry_run and i.action == Action.redrive)):
                print(json.dumps({"action": "refused" if i.action == Action.refuse else "would_redrive",
                                  "dead_letter": i.ref, "write_id": write_id(i.dl), "topic": i.dl.topic,
                                  "partition": i.dl.partition, "offset": i.dl.offset,
                                  "why": i.why if i.action == Action.refuse else None,
                                  "target": list(i.target) if i.target else None, "redrive": i.count + 1},
                                 sort_keys=True), file=out, flush=True)
            elif i.action == Action.refuse:
                print(f"refused {i.ref} (write {write_id(i.dl) or '-'}, {i.dl.topic}[{i.dl.partition}]@{i.dl.offset}): "
                      f"{i.why}", file=out, flush=True)
            elif dry_run and i.action == Action.redrive:
                print(f"would redrive {i.ref} (write {write_id(i.dl) or '-'}) to {i.target[0]}[{i.target[1]}] "
                      f"as redrive {i.count + 1} of at most {cfg.dead_letters.max_redrives}", file=out, flush=True)
        if not dry_run:
            _republish(cfg, producer, gc, topic, items, ends, start, group, batch)
        span = ", ".join(f"{p}:{start.get(p, 0)}..{ends[p]}" for p in partitions)
        verb = "would redrive" if dry_run else "redriven"
        if as_json:
            print(json.dumps({"summary": True, "reason": reason, "dry_run": dry_run,
                              "redriven": 0 if dry_run else tally[Action.redrive],
                              "would_redrive": tally[Action.redrive] if dry_run else 0,
                              "refused": tally[Action.refuse], "already_redriven": tally[Action.already],
                              "before_since": tally[Action.older], "other_reasons": tally[Action.other],
                              "unreadable": tally[Action.unreadable],
                              "dead_letter_offsets": {str(p): [start.get(p, 0), ends[p]] for p in partitions}},
                             sort_keys=True), file=out, flush=True)
            return 1 if tally[Action.refuse] else 0
        print(f"redrive {reason}{' (dry run)' if dry_run else ''}: {verb}={tally[Action.redrive]} "
              f"refused={tally[Action.refuse]} already_redriven={tally[Action.already]} "
              f"before_since={tally[Action.older]} other_reasons={tally[Action.other]} "
              f"unreadable={tally[Action.unreadable]} (dead-letter offsets {span})", file=out, flush=True)
        return 1 if tally[Action.refuse] else 0
    finally:
        gc.close()
        rc.close()


def _bound_ms(meta: dict[int, str]) -> int | None:
    """The newest commit time the group's metadata records (every run commits one before republishing)."""
    best = None
    for raw in meta.values():
        try:
            t = int(json.loads(raw)["t_ms"])
        except (ValueError, KeyError, TypeError):
            continue
        best = t if best is None else max(best, t)
    return best


def _commit_meta() -> str:
    return json.dumps({"t_ms": int(time.time() * 1000)})


def _republish(cfg: Config, producer: Any, gc, topic: str, items: list[Item], ends: dict[int, int],
               start: dict[int, int], group: str, batch: int) -> None:
    gmeta = gc.consumer_group_metadata()

    def commit(offsets: dict[int, int], records: list[Item]) -> None:
        producer.begin_transaction()
        for i in records:
            count = (i.count or 0) + 1
            headers = [(H_COUNT, str(count).encode()), (H_OF, redrive_id(topic, i.partition, i.offset).encode())]
            while True:
                try:
                    producer.produce(i.target[0], value=i.value(), key=i.key, partition=i.target[1],
                                     headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
        if records:
            left = producer.flush(30)
            if left:
                raise KafkaException(f"{left} republished record(s) unacknowledged after 30 s")
        meta = _commit_meta()
        producer.send_offsets_to_transaction([TopicPartition(topic, p, o, metadata=meta) for p, o in offsets.items()],
                                             gmeta, 30)
        producer.commit_transaction(60)

    try:
        # a commit of where the run starts, stamped with its time: bounds the tail scan of a rerun
        commit({p: start.get(p, 0) for p in ends}, [])
        by_part: dict[int, list[Item]] = {}
        for i in items:
            by_part.setdefault(i.partition, []).append(i)
        for p, part_items in by_part.items():
            for k in range(0, len(part_items), batch):
                chunk = part_items[k:k + batch]
                commit({p: chunk[-1].offset + 1}, [i for i in chunk if i.action == Action.redrive])
    except KafkaException as exc:
        try:
            producer.abort_transaction(10)
        except KafkaException:
            pass  # the broker aborts it after transaction.timeout.ms; the rerun starts from the last commit
        raise UsageError(f"redrive stopped, nothing lost (rerun resumes from the last commit): "
                         f"{kafkaio._why(exc)}") from None
