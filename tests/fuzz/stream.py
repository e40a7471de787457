"""The fuzzer's stream of records, reproducible from a seed.

Record ``i`` of seed ``s`` is drawn by its own :class:`ConjectureData` on ``Random(f"{s}:{i}")``,
so the same seed gives the same stream whatever the other settings are, and one record can be
drawn again alone (``python -m tests.fuzz.run --seed s --show i``). Hypothesis has no public call
for "one example from this seed"; ``ConjectureData`` in a ``BuildContext`` is what ``@given`` runs each example in.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

from hypothesis.control import BuildContext
from hypothesis.errors import StopTest
from hypothesis.internal.conjecture.data import ConjectureData

from .strategies import BAD_STRATEGIES, GOOD_STRATEGIES, RARE, STRATEGIES, Made, Slot

#: null-key writes take entities from here up, one each, so no two of them share a key
NULL_KEY_ENTITIES = 10 ** 12


#: notes longer than this are kept (and compared with the row) as their digest
LONG_NOTE = 1000


def note_digest(note: str | None) -> str | None:
    if note is None or len(note) <= LONG_NOTE:
        return note
    return "sha256:" + hashlib.sha256(note.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class FuzzRecord:
    index: int
    strategy: str
    entity: int
    seq: int
    made: Made

    def light(self) -> "FuzzRecord":
        """Once produced, a copy small enough to keep 100,000 of: the value cut short, a long note digested."""
        value = self.made.value
        short = value if value is None or len(value) <= 300 else value[:300] + b"...<%d bytes>" % len(value)
        return replace(self, made=replace(self.made, value=short, note=note_digest(self.made.note)))


def pick(include: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[str]:
    """The strategy names to run: ``include`` (default all) without ``exclude``; unknown names are an error."""
    names = list(include) if include else list(STRATEGIES)
    unknown = (set(names) | set(exclude)) - set(STRATEGIES)
    if unknown:
        raise ValueError(f"unknown strategies {sorted(unknown)}; known: {sorted(STRATEGIES)}")
    return [n for n in names if n not in set(exclude)]


def draw_one(seed: int, index: int, strategy: str, slot: Slot) -> Made:
    for attempt in range(100):  # a filter that rejects ends the draw: try the next random stream
        data = ConjectureData(random=random.Random(f"{seed}:{index}:{attempt}"))
        try:
            with BuildContext(data, wrapped_test=draw_one):
                return data.draw(STRATEGIES[strategy](slot))
        except StopTest:
            continue
    raise RuntimeError(f"strategy {strategy!r} rejected 100 draws for record {index} of seed {seed}")


def stream(seed: int, n: int, names: list[str], *, region: str, keys: int, bad_share: float = 0.3,
           rare_weight: int = 4) -> Iterator[FuzzRecord]:
    """``n`` records over ``keys`` entities, good and bad interleaved on the same keys.

    The kind of each record, its entity and its write id come from ``Random(f"{seed}:{index}")``;
    ``seq`` counts the records of each entity in stream order.
    """
    good = [s for s in names if s in GOOD_STRATEGIES]
    bad = [s for s in names if s in BAD_STRATEGIES]
    seqs: dict[int, int] = {}
    for i in range(n):
        rng = random.Random(f"{seed}:{i}")
        pool = bad if bad and (not good or rng.random() < bad_share) else good
        strategy = rng.choices(pool, weights=[rare_weight if s in RARE else 20 for s in pool])[0]
        entity = NULL_KEY_ENTITIES + i if strategy == "null_key" else rng.randrange(keys)
        seqs[entity] = seq = seqs.get(entity, 0) + 1
        wid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        made = draw_one(seed, i, strategy, Slot(region, entity, seq, wid))
        yield FuzzRecord(i, strategy, entity, seq, made)
