"""Hypothesis strategies of Kafka records for the writes topic, good and bad, each under a name.

A strategy is a function of :class:`Slot` (the region, the entity key, its sequence number and a
write id the stream chose) returning a ``SearchStrategy[Made]``: the record's Kafka key, value and
headers, and what the system must do with it (``expect``):

``good``
    applied exactly once, in the order of its key, never dead-lettered;
``bad``
    dead-lettered exactly once (its source offset in ``rg.dead-letter``, with a documented reason),
    never applied;
``either``
    one of the two, never both: a record whose fate another branch decides (42 against "42").

Bad records sit on the same entity keys (so the same partitions) as the good ones around them,
so a bad record that stalls its partition or is applied out of turn shows up in the order check.
:data:`STRATEGIES` maps a name to its strategy; a run includes or excludes them by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from hypothesis import strategies as st

from .schema import TABLE

GOOD, BAD, EITHER = "good", "bad", "either"


@dataclass(frozen=True)
class Slot:
    region: str
    entity: int
    seq: int
    wid: str


@dataclass(frozen=True)
class Made:
    key: bytes | None
    value: bytes | None
    expect: str
    headers: tuple[tuple[str, bytes], ...] = ()
    wid: str | None = None
    rows: int = 0               # row changes in ``fz`` when applied (1 for a row, 2 for a group)
    note: str | None = None     # the ``note`` the row holds after it (the final-row check)

    def __repr__(self) -> str:  # a failing example prints readably even when the value is a megabyte
        value = self.value if self.value is None or len(self.value) <= 300 else (
            self.value[:240] + b"...<%d bytes>..." % len(self.value) + self.value[-40:])
        note = self.note if self.note is None or len(self.note) <= 80 else self.note[:60] + f"...<{len(self.note)}>"
        return (f"Made(key={self.key!r}, value={value!r}, expect={self.expect!r}, headers={self.headers!r}, "
                f"wid={self.wid!r}, rows={self.rows}, note={note!r})")

    def _repr_pretty_(self, p, cycle) -> None:  # hypothesis's printer of failing examples
        p.text(repr(self))


def entity_key(entity: int) -> bytes:
    return f"{TABLE}/{entity}".encode()


def _escaped_len(text: str) -> int:
    """Bytes ``text`` takes inside a JSON string."""
    return len(dumps(text)) - 2


def dumps(doc: object) -> bytes:
    """JSON as a producer in another language might write it: non-ASCII characters unescaped."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


# ----------------------------------------------------------------------------------------- text
#: characters that have broken text handling elsewhere: RTL marks and scripts, emoji with joiners and
#: skin tones, combining marks, BOM, line and paragraph separators, the last code point
EDGE_TEXT = ["\u202e", "\u200f", "שלום", "مرحبا", "👩‍👩‍👧‍👦", "👍🏽", "🇪🇺", "e\u0301", "\ufeff",
             "\u2028", "\u2029", "\U0010ffff", "\\", "\"", "'; DROP TABLE fz; --", "\x7f", "\t\n\r"]

# text PostgreSQL can hold: no NUL, no lone surrogates
_storable = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
storable_text = st.one_of(st.text(_storable, max_size=40),
                          st.lists(st.sampled_from(EDGE_TEXT), max_size=6).map("".join))

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1),
                     st.floats(allow_nan=False, allow_infinity=False), storable_text)
json_doc = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(storable_text, inner, max_size=4)), max_leaves=12)


def _row_data(slot: Slot, note: str, draw) -> dict:
    data: dict = {"seq": slot.seq, "note": note, "wid": slot.wid}
    if draw(st.booleans()):
        data["doc"] = draw(json_doc)
    if draw(st.booleans()):
        data["qty"] = draw(st.integers(0, 2 ** 31 - 1))
    return data


def _event(slot: Slot, data: dict, **extra) -> dict:
    ev = {"id": slot.wid, "region": slot.region, "table": TABLE, "op": "upsert", "key": {"id": slot.entity},
          "data": data}
    ev.update(extra)
    return ev


def _group(slot: Slot, ops: list[dict]) -> dict:
    return {"id": slot.wid, "region": slot.region, "ordering_key": entity_key(slot.entity).decode(), "ops": ops}


def _ops(slot: Slot, note: str, draw) -> list[dict]:
    """Two operations on the slot's key: an upsert, then an update of the same row in the same transaction."""
    return [{"table": TABLE, "op": "upsert", "key": {"id": slot.entity}, "data": _row_data(slot, note, draw)},
            {"table": TABLE, "op": "update", "key": {"id": slot.entity},
             "data": {"qty": draw(st.integers(0, 1000)), "seq": slot.seq, "wid": slot.wid}}]


@st.composite
def _odd_headers(draw) -> tuple[tuple[str, bytes], ...]:
    """Headers a producer should be free to send: binary values, repeated names, names the services use."""
    names = st.one_of(st.text(_storable, min_size=1, max_size=12),
                      st.sampled_from(["rg-fence", "rg-source-offset", "rg-applied-in", "rg-hold-reason",
                                       "rg-verify", "content-type", ""]))
    return tuple(draw(st.lists(st.tuples(names, st.binary(max_size=32)), min_size=1, max_size=5)))


# ----------------------------------------------------------------------------------------- good
@st.composite
def good_row(draw, slot: Slot) -> Made:
    """An upsert of the slot's row: unicode edge cases in ``note``, any JSON in ``doc``."""
    note = draw(storable_text)
    return Made(entity_key(slot.entity), dumps(_event(slot, _row_data(slot, note, draw))), GOOD,
                wid=slot.wid, rows=1, note=note)


@st.composite
def good_group(draw, slot: Slot) -> Made:
    """An atomic group of two operations on the slot's row, ordering key = the row's Kafka key."""
    note = draw(storable_text)
    return Made(entity_key(slot.entity), dumps(_group(slot, _ops(slot, note, draw))), GOOD,
                wid=slot.wid, rows=2, note=note)


@st.composite
def good_headers(draw, slot: Slot) -> Made:
    """A good row with odd headers: binary, repeated, named like the ones the services write."""
    made = draw(good_row(slot))
    return Made(made.key, made.value, GOOD, draw(_odd_headers()), made.wid, made.rows, made.note)


@st.composite
def good_large(draw, slot: Slot) -> Made:
    """A note of 100-300 kB: large, but the record and any dead letter of it fit the broker's 1 MB."""
    size = draw(st.integers(100_000, 300_000))
    unit = draw(st.sampled_from(EDGE_TEXT))
    note = unit * max(1, size // _escaped_len(unit))
    return Made(entity_key(slot.entity), dumps(_event(slot, {"seq": slot.seq, "note": note, "wid": slot.wid})),
                GOOD, wid=slot.wid, rows=1, note=note)


@st.composite
def null_key(draw, slot: Slot) -> Made:
    """No Kafka key: any partition. The stream gives it an entity of its own, so no order is at stake."""
    made = draw(good_row(slot))
    return Made(None, made.value, GOOD, made.headers, made.wid, made.rows, made.note)


@st.composite
def key_spelling(draw, slot: Slot) -> Made:
    """The key column as a JSON string ("42" for 42), same Kafka key: applied as 42 or dead-lettered."""
    note = draw(storable_text)
    ev = _event(slot, _row_data(slot, note, draw), key={"id": str(slot.entity)})
    return Made(entity_key(slot.entity), dumps(ev), EITHER, wid=slot.wid, rows=1, note=note)


# ----------------------------------------------------------------------------------------- bad
def _bad(slot: Slot, value: bytes | None, *, headers=(), wid: str | None = None) -> Made:
    return Made(entity_key(slot.entity), value, BAD, tuple(headers), wid)


_WRONG = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@st.composite
def wrong_type(draw, slot: Slot) -> Made:
    """A valid event with one envelope field of the wrong JSON type (or a value outside its enum)."""
    ev = _event(slot, {"seq": slot.seq, "note": "x", "wid": slot.wid})
    field = draw(st.sampled_from(["id", "region", "table", "op", "key", "data", "policy", "expires_at",
                                  "fallback_regions", "meta", "ordering_key", "ops"]))
    wrong = {"id": st.one_of(_WRONG, st.just("not-a-uuid")), "region": _WRONG.filter(lambda v: v != slot.region),
             "op": st.one_of(_WRONG, st.sampled_from(["merge", "UPSERT", ""])),
             "policy": st.one_of(_WRONG.filter(lambda v: v is not None), st.sampled_from(["sometimes", ""])),
             "key": st.one_of(st.none(), st.just({}), st.lists(st.integers(), max_size=2), st.text(max_size=3),
                              st.just({"id": [1]}), st.just({"id": {"n": 1}})),
             "data": st.one_of(st.booleans(), st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2),
                               st.just({})),
             "expires_at": st.one_of(st.integers(), st.just("yesterday"), st.just("2030-01-01T00:00:00")),
             "fallback_regions": st.one_of(st.text(max_size=3), st.just([1]), st.just(["nowhere"])),
             "meta": st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=2)),
             "ordering_key": st.one_of(st.integers(), st.just(""), st.just("k" * 257)),
             "ops": st.one_of(st.integers(), st.just([]), st.just({}), st.just([{"table": TABLE}]))}
    ev[field] = draw(wrong.get(field, _WRONG))
    return _bad(slot, dumps(ev), wid=slot.wid if field != "id" else None)


@st.composite
def missing_field(draw, slot: Slot) -> Made:
    """A valid event without one of its required fields."""
    ev = _event(slot, {"seq": slot.seq, "note": "x", "wid": slot.wid})
    field = draw(st.sampled_from(["id", "region", "table", "op", "key", "data"]))
    del ev[field]
    return _bad(slot, dumps(ev), wid=slot.wid if field != "id" else None)


@st.composite
def column_type(draw, slot: Slot) -> Made:
    """Valid JSON and allow-listed columns, but a value the column's type or CHECK refuses: a database verdict."""
    col, val = draw(st.sampled_from([("qty", "three"), ("qty", -1), ("qty", 2 ** 31), ("qty", 1.5),
                                     ("seq", "x"), ("seq", [1])]))
    data = {"seq": slot.seq, "note": "x", "wid": slot.wid, col: val}
    return _bad(slot, dumps(_event(slot, data)), wid=slot.wid)


@st.composite
def huge_number(draw, slot: Slot) -> Made:
    """Integers past 64 bits, where the column is bigint or int."""
    n = draw(st.integers(2 ** 63, 2 ** 200) | st.integers(-(2 ** 200), -(2 ** 63) - 1))
    where = draw(st.sampled_from(["qty", "seq"]))
    return _bad(slot, dumps(_event(slot, {"seq": slot.seq, "note": "x", "wid": slot.wid, where: n})), wid=slot.wid)


@st.composite
def deep_nesting(draw, slot: Slot) -> Made:
    """``data.doc`` nested 1,000 levels (or more): written by hand, as ``json.dumps`` itself would recurse."""
    depth = draw(st.integers(1000, 1200))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    doc = opener * depth + "1" + closer * depth
    head = dumps(_event(slot, {"seq": slot.seq, "note": "x", "wid": slot.wid}))[:-2]  # drop the closing "}}"
    return _bad(slot, head + b',"doc":' + doc.encode() + b"}}", wid=slot.wid)


@st.composite
def nul_char(draw, slot: Slot) -> Made:
    """"\\u0000" in a text or jsonb column: valid JSON that PostgreSQL refuses to store."""
    where = draw(st.sampled_from(["note", "doc"]))
    text = draw(storable_text) + "\x00" + draw(storable_text)
    data = {"seq": slot.seq, "note": "x", "wid": slot.wid}
    data[where] = text if where == "note" else {"t": text}
    return _bad(slot, json.dumps(_event(slot, data)).encode(), wid=slot.wid)


@st.composite
def lone_surrogate(draw, slot: Slot) -> Made:
    """An escaped lone surrogate ("\\ud800"): well-formed JSON text that is no Unicode string."""
    cp = draw(st.integers(0xD800, 0xDFFF))
    data = {"seq": slot.seq, "note": "x" + chr(cp), "wid": slot.wid}
    return _bad(slot, json.dumps(_event(slot, data)).encode(), wid=slot.wid)


@st.composite
def invalid_utf8(draw, slot: Slot) -> Made:
    """A valid event whose note's bytes are not UTF-8."""
    junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]))
    raw = dumps(_event(slot, {"seq": slot.seq, "note": "@@", "wid": slot.wid})).replace(b"@@", junk)
    return _bad(slot, raw, wid=slot.wid)


@st.composite
def random_bytes(draw, slot: Slot) -> Made:
    """Any bytes at all (now and then well-formed JSON that is still no event)."""
    raw = draw(st.binary(max_size=200))
    return _bad(slot, raw)


@st.composite
def not_object(draw, slot: Slot) -> Made:
    """Well-formed JSON that is not an object; or an object cut short."""
    raw = draw(st.one_of(_scalars.map(dumps), st.lists(json_doc, max_size=3).map(dumps),
                         st.just(dumps(_event(slot, {"seq": slot.seq, "wid": slot.wid}))[:-3])))
    return _bad(slot, raw)


@st.composite
def null_value(draw, slot: Slot) -> Made:
    """A record without a value (a tombstone), sometimes with headers the router's fences carry."""
    headers = draw(st.one_of(st.just(()), _odd_headers()))
    return _bad(slot, None, headers=headers)


@st.composite
def oversized(draw, slot: Slot) -> Made:
    """A record of 0.6-0.95 MB that is bad (an unknown column): its dead letter holds it escaped, so may not fit 1 MB."""
    size = draw(st.integers(600_000, 950_000))
    filler = draw(st.sampled_from(['"', "\\", "\x01", "a", "é"]))
    n = size // _escaped_len(filler)
    data = {"seq": slot.seq, "wid": slot.wid, "no_such_column": filler * n}
    return _bad(slot, dumps(_event(slot, data)), wid=slot.wid)


@st.composite
def allow_list(draw, slot: Slot) -> Made:
    """Outside the allow-list: a table, column or key column not listed, another region or fallback region."""
    data = {"seq": slot.seq, "note": "x", "wid": slot.wid}
    case = draw(st.sampled_from(["table", "column", "key", "region", "fallback"]))
    ev = _event(slot, data)
    if case == "table":
        ev["table"] = draw(st.sampled_from(["users", "pg_authid", "fz; DROP TABLE fz", "FZ", "fz "]))
    elif case == "column":
        ev["data"] = {**data, draw(st.sampled_from(["nope", "id\"", "Seq", "xmin", ""])): 1}
    elif case == "key":
        ev["key"] = draw(st.sampled_from([{"id": slot.entity, "seq": 1}, {"ID": slot.entity}, {"seq": 1}]))
    elif case == "region":
        ev["region"] = draw(st.sampled_from(["mars", slot.region.upper(), slot.region + " "]))
    else:
        ev["policy"], ev["fallback_regions"] = "failover", ["mars"]
    return _bad(slot, dumps(ev), wid=slot.wid)


@st.composite
def bad_ops(draw, slot: Slot) -> Made:
    """A group with one bad operation among good ones: nothing of it may apply."""
    ops = _ops(slot, "x", draw)
    case = draw(st.sampled_from(["table", "column", "check", "no_data", "op", "empty", "too_many", "mixed",
                                 "no_ordering_key", "not_a_list"]))
    ev = _group(slot, ops)
    at = draw(st.integers(0, len(ops)))
    if case == "table":
        ops.insert(at, {"table": "nope", "op": "upsert", "key": {"id": 1}, "data": {"a": 1}})
    elif case == "column":
        ops.insert(at, {"table": TABLE, "op": "upsert", "key": {"id": slot.entity}, "data": {"nope": 1}})
    elif case == "check":  # an upsert, not an update: an update of a row not there yet changes nothing, checks nothing
        ops.insert(at, {"table": TABLE, "op": "upsert", "key": {"id": slot.entity},
                        "data": {"seq": slot.seq, "qty": -5, "wid": slot.wid}})
    elif case == "no_data":
        ops.insert(at, {"table": TABLE, "op": "upsert", "key": {"id": slot.entity}})
    elif case == "op":
        ops.insert(at, {"table": TABLE, "op": draw(st.sampled_from(["merge", None, 3])), "key": {"id": slot.entity},
                        "data": {"qty": 1}})
    elif case == "empty":
        ev["ops"] = []
    elif case == "too_many":
        ev["ops"] = ops + [ops[1]] * 1000
    elif case == "mixed":
        ev["table"] = TABLE
    elif case == "no_ordering_key":
        del ev["ordering_key"]
    else:
        ev["ops"] = ops[0]
    return _bad(slot, dumps(ev), wid=slot.wid)


#: every strategy by name; the stream draws a good one most of the time
GOOD_STRATEGIES: dict[str, Callable[[Slot], st.SearchStrategy[Made]]] = {
    "good_row": good_row, "good_group": good_group, "good_headers": good_headers, "good_large": good_large,
    "null_key": null_key, "key_spelling": key_spelling}
BAD_STRATEGIES: dict[str, Callable[[Slot], st.SearchStrategy[Made]]] = {
    "wrong_type": wrong_type, "missing_field": missing_field, "column_type": column_type,
    "huge_number": huge_number, "deep_nesting": deep_nesting, "nul_char": nul_char,
    "lone_surrogate": lone_surrogate, "invalid_utf8": invalid_utf8, "random_bytes": random_bytes,
    "not_object": not_object, "null_value": null_value, "oversized": oversized, "allow_list": allow_list,
    "bad_ops": bad_ops}
STRATEGIES = {**GOOD_STRATEGIES, **BAD_STRATEGIES}
#: strategies that find a bug another branch fixes: left out unless ``$RG_FUZZ_EXCLUDE`` (or
#: ``--exclude``) is set, even to nothing; drop a name here once its fix is merged
KNOWN_BUGS: dict[str, str] = {
    # empty: deep_nesting (finding 1), oversized (finding 2) and key_spelling (finding 3) are fixed
    # and run in every profile; a strategy that finds a bug not fixed yet is named here with why
}
#: drawn more rarely than the others (see ``stream``'s ``rare_weight``): big records are slow to move
RARE = {"good_large", "oversized", "deep_nesting"}
