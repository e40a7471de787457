"""The pure part of ``regionguard dead-letters``: arguments, headers, and what to do with each dead letter.

No I/O here; :mod:`.kafkaio` reads and writes the topics, :mod:`.redrive` runs it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ...core.config import Config, UsageError
from ...core.held import H_SOURCE_OFFSET, H_SOURCE_PARTITION, H_SOURCE_TOPIC
from ...core.models import DeadLetter, DeadReason

#: header of a redriven record: how many times its write has been redriven (1 the first time); docs/contract.md
H_COUNT = "rg-redrive-count"
#: header of a redriven record: the dead letter it republishes, ``<dead-letter topic>/<partition>/<offset>``
#: (a contract extension: a redrive restarted after a crash skips what is already there)
H_OF = "rg-redrive-of"


REASONS = tuple(r.value for r in DeadReason)

_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_reason(text: str | None, *, required: bool = False) -> str | None:
    """A dead-letter reason of the contract, or a one-line UsageError listing them."""
    if text is None:
        if required:
            raise UsageError(f"--reason is required (one of: {', '.join(REASONS)})")
        return None
    if text not in REASONS:
        raise UsageError(f"--reason: unknown reason {text!r} (one of: {', '.join(REASONS)})")
    return text


def parse_since(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """``--since``: an ISO 8601 date or time (no zone means UTC), or an age like ``90s``, ``15m``, ``2h``, ``3d``, ``1w``."""
    if text is None:
        return None
    m = _REL.match(text)
    if m:
        now = now or datetime.now(timezone.utc)
        return now - timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(f"--since: {text!r} is neither an ISO 8601 time (2026-11-26T10:00:00Z) nor an age "
                         "(90s, 15m, 2h, 3d, 1w)") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def group_name(cfg: Config, reason: str) -> str:
    """Consumer group (and transactional id) of the redrive of one reason: ``<prefix>redrive.<reason>``.

    One per reason, so redriving one reason never passes over the dead letters of another.
    """
    return f"{cfg.kafka.topic_prefix}redrive.{reason}"


def redrive_id(topic: str, partition: int, offset: int) -> str:
    """The value of :data:`H_OF`: which dead letter a republished record comes from."""
    return f"{topic}/{partition}/{offset}"


def header(headers: list[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name:
            return v
    return None


def parse_count(raw: bytes | None) -> int | None:
    """The redrive count a record carries: 0 without the header, None when the header is unreadable."""
    if raw is None:
        return 0
    try:
        n = int(raw.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    return n if n >= 0 else None


def held_source(headers: list[tuple[str, bytes]] | None) -> tuple[str, int, int] | None:
    """The writes-topic record a held record came from (the router's headers), if it says."""
    try:
        topic = header(headers, H_SOURCE_TOPIC)
        part = header(headers, H_SOURCE_PARTITION)
        off = header(headers, H_SOURCE_OFFSET)
        if topic is None or part is None or off is None:
            return None
        return topic.decode(), int(part), int(off)
    except (UnicodeDecodeError, ValueError):
        return None


def target_of(cfg: Config, dl: DeadLetter) -> tuple[str, int] | None:
    """Where a redrive republishes a dead letter: its writes topic, same partition; None if not one of ours.

    A dead letter of a writes topic goes back there. One of a held topic (the replayer's:
    expired, or a constraint met on replay) goes to the writes topic of that region, with the
    same partition number (held partitions mirror the source's): through the router again,
    never straight into the held topic behind the fence-and-switch's back.
    """
    for region in cfg.regions:
        if dl.topic in (cfg.topic("writes", region), cfg.topic("held", region)):
            if 0 <= dl.partition < cfg.kafka.partitions:
                return cfg.topic("writes", region), dl.partition
            return None
    return None


class Action(str, enum.Enum):
    redrive = "redrive"
    refuse = "refuse"                # past dead_letters.max_redrives, or not redrivable
    already = "already"              # republished by an earlier run that crashed before committing
    older = "older"                  # before --since: passed over
    other = "other"                  # another reason: that reason's redrive handles it
    unreadable = "unreadable"        # not a DeadLetter record: passed over, reported


@dataclass(slots=True)
class Item:
    """One record of the dead-letter topic and what the redrive does with it."""

    partition: int
    offset: int
    key: bytes | None
    dl: DeadLetter | None
    action: Action = Action.other
    count: int | None = 0            # redrives so far (from the dead-lettered record's header)
    target: tuple[str, int] | None = None
    why: str = ""
    original: bytes | None = None    # read back from its source topic when the dead letter holds only its start

    def value(self) -> bytes:
        """The exact bytes to republish."""
        return self.original if self.original is not None else self.dl.original_bytes()

    @property
    def ref(self) -> str:
        return f"dead letter {self.partition}/{self.offset}"


def decide(item: Item, cfg: Config, *, reason: str, since: datetime | None, already: set[str],
           dl_topic: str) -> Item:
    """Set ``item.action`` (and target/why) from its dead letter, its redrive count and the run's filters.

    ``item.count`` must already hold the count read from the dead-lettered record (None: unreadable).
    """
    dl = item.dl
    if dl is None:
        item.action, item.why = Action.unreadable, "not a DeadLetter record"
        return item
    if dl.reason.value != reason:
        item.action = Action.other
        return item
    if since is not None and _aware(dl.at) < since:
        item.action = Action.older
        return item
    if redrive_id(dl_topic, item.partition, item.offset) in already:
        item.action = Action.already
        return item
    target = target_of(cfg, dl)
    if target is None:
        item.action, item.why = Action.refuse, f"{dl.topic}[{dl.partition}] is not a writes or held topic of this config"
        return item
    item.target = target
    limit = cfg.dead_letters.max_redrives
    if item.count is None:
        item.action, item.why = Action.refuse, f"its {H_COUNT} header is unreadable"
    elif item.count >= limit:
        item.action = Action.refuse
        item.why = (f"redriven {item.count} time{'s' if item.count != 1 else ''} already, "
                    f"dead_letters.max_redrives is {limit}")
    else:
        item.action = Action.redrive
    return item


def restore(item: Item, fetched: bytes | None) -> Item:
    """Give a redrive whose dead letter holds only the start of its original the whole, read from its source.

    Refused, in one plain line, when the source no longer retains the record, or holds another one there.
    """
    dl = item.dl
    where = f"{dl.topic}[{dl.partition}]@{dl.offset}"
    if fetched is None:
        item.action = Action.refuse
        item.why = (f"its original ({dl.original_size} bytes) was truncated in the dead letter and {where} is no "
                    "longer retained: the write cannot be redriven")
    elif (dl.original_size is not None and len(fetched) != dl.original_size) or \
            not fetched.startswith(dl.original_bytes()):
        item.action = Action.refuse
        item.why = f"its original was truncated in the dead letter and the record at {where} is not the same write"
    else:
        item.original = fetched
    return item


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def matches(dl: DeadLetter, *, reason: str | None, since: datetime | None) -> bool:
    """The ``list`` filter."""
    if reason is not None and dl.reason.value != reason:
        return False
    return since is None or _aware(dl.at) >= since


def write_id(dl: DeadLetter) -> str | None:
    """The dead letter's write id, or the original event's ``id`` when it is JSON text."""
    if dl.write_id:
        return dl.write_id
    if dl.original_encoding != "text":
        return None
    import json

    try:
        doc = json.loads(dl.original)
    except ValueError:
        return None
    wid = doc.get("id") if isinstance(doc, dict) else None
    return str(wid) if wid is not None else None
