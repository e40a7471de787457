"""A JSON value in the form its PostgreSQL column gives it (pure, no I/O).

PostgreSQL decides what a row is: ``{"id": 42}``, ``{"id": "42"}`` and
``{"id": 42.0}`` are one row of a ``bigint`` key. Planning groups a batch's
writes by row before PostgreSQL sees them, so it must agree: two spellings of
one key planned as two rows put both in one statement, where an ``UPDATE ...
FROM`` applies one of them (the other is lost while its inbox claim commits)
and an upsert fails with SQLSTATE 21000. So key and column values are brought
to their column's type first (:class:`TableCasts`), and a value that cannot be
is the write's ``schema`` dead letter naming the column, before any statement.

The rules follow PostgreSQL 15's input functions for the text we send
(:func:`regionguard_client.core.sql.pg_text`):

- smallint, integer, bigint: an int in range; a float with an integral value
  (42.0); a string of ASCII digits with an optional sign and surrounding
  whitespace. Not 42.5, not "4e2" or "0x2a" (PostgreSQL 15 refuses them too),
  not a bool.
- numeric: a ``Decimal`` (ints stay ints: ``Decimal(42) == 42`` with the same
  hash); a float by its shortest repr, which is the text PostgreSQL got before;
  a decimal string, exponent allowed. "NaN" and "Infinity" spellings go on as
  they are (PostgreSQL reads them; as keys, it reads them for us too, below).
- real, double precision: a float (ints stay ints, equal to their float);
  special spellings go on as they are, as for numeric.
- text, character varying: a string as is; a number or bool as the text
  PostgreSQL would have stored (``str(42)``, ``"true"``). character (bpchar):
  trailing spaces dropped, which PostgreSQL ignores in comparisons.
- uuid: the canonical lower-case hyphenated form; braces, upper case and
  missing hyphens are one uuid, as PostgreSQL reads them.
- boolean: a bool; 0 and 1; the strings PostgreSQL reads (true/false, yes/no,
  on/off, 1/0, t/f, y/n and unique prefixes, any case, trimmed).
- timestamp with time zone: an ISO string with an explicit offset (or Z), at
  most microseconds, becomes the same instant in UTC; timestamp without time
  zone: an ISO string without offset, in Python's ISO form ("2026-01-02
  03:04:05", "2026-01-02T03:04:05" and "2026-01-02T03:04:05.000000" are one).
- date: "2026-01-02" and "20260102" become "2026-01-02".
- json, jsonb, arrays and any other type: the value as it is.

A domain follows its base type's rules (core/sql.py ``COLUMNS_QUERY`` reads
``typbasetype`` through domains of domains): a domain over bigint is a bigint
here, while the statement still casts to the domain, so its CHECK stays
PostgreSQL's to enforce.

Key columns are cast by every rule above: they are the row's identity. Data
columns are cast only by the types that can refuse a value (numbers, uuid,
boolean), so a bad value there is named too and 42.0 is an int there as in a
key; text and time columns of data are left alone (nothing to name, and
parsing time is the costliest rule). A value of the class its column's values
have when in form (an int for an integer column, a str for a text one) is
taken as it is, without a call: an int out of range is found later, in one
scan per statement column (:mod:`.refuse`), and named there. Measured with
``bench/plan_cast.py`` (1,000 writes, bigint key and 3 columns): planning went
from about 1.6 to 2.2 µs a write on a busy 2-core machine, of which the key
alone is about 0.3 µs.

What no rule reads exactly, PostgreSQL reads for the planner
(:meth:`TableCasts.asked`, regionguard's core/spelling.py): a key of a type
with no rule here (citext, enums, inet, time, interval...), a date or time
spelled otherwise than above ("Jan 2 2026", "2026-002", no offset for a
timestamptz, "now"), a "NaN" or "Infinity" numeric or float key. Those values
are sent to PostgreSQL as they are, as before; before planning, the batch's
such key values are cast by PostgreSQL in one query (one per batch, none when
all were read before), and its reading is the row's identity to the planner:
the value's JSON text, brought to the form of the rule above for its type
(:func:`canonical`), lower-cased for citext, whose equality ignores case, and
justified for an interval, whose equality compares spans ("1 day" = "24 hours").
So "2026-01-02" and "Jan 2 2026" are one row of a date key, "Alice" and
"ALICE" one row of a citext key (stored in the case first written), and a
value PostgreSQL refuses is the write's ``schema`` dead letter naming the
column and the SQLSTATE. Text under a nondeterministic collation, whose
equality is not its text in a way we can read, is still two rows to the
planner (docs/contract.md says so).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Callable


class CastError(ValueError):
    """A value its column's type cannot take; ``detail`` names the column and the value."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class _Ask(Exception):
    """Raised by a caster: no exact rule here for this spelling; PostgreSQL reads it (a key's is asked, :meth:`TableCasts.asked`)."""


class _Refused(Exception):
    """Raised by a caster: the value cannot be of this type (``why`` may say more)."""

    def __init__(self, why: str = ""):
        super().__init__(why)
        self.why = why


Caster = Callable[[Any], Any]

_INT = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+[ \t\n\r\f\v]*", re.ASCII)
_DECIMAL = re.compile(r"[ \t\n\r\f\v]*[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[ \t\n\r\f\v]*", re.ASCII)
_SPECIAL = {"nan", "infinity", "+infinity", "-infinity", "inf", "+inf", "-inf"}
_UUID = re.compile(r"(\{)?[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7}(?(1)\})", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}", re.ASCII)  # 2026-01-02 and 20260102, as PostgreSQL reads both
_TS = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
                 r"(?P<tz>Z|[+-][0-9]{2}(?::?[0-9]{2})?)?", re.ASCII)


def _integer(bits: int) -> Caster:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    def cast(v: Any) -> Any:
        if v.__class__ is int and lo <= v <= hi:
            return v
        if v is None:
            return v
        if v.__class__ is int:
            raise _Refused("out of range")
        if v.__class__ is float:
            if not v.is_integer():
                raise _Refused()
            n = int(v)
        elif v.__class__ is str and _INT.fullmatch(v):
            n = int(v)
        else:
            raise _Refused()  # a bool, a fraction, anything else
        if not lo <= n <= hi:
            raise _Refused("out of range")
        return n

    return cast


def _numeric(v: Any) -> Any:
    if v is None or v.__class__ is int or v.__class__ is Decimal:
        return v
    if v.__class__ is float:
        return Decimal(repr(v)) if math.isfinite(v) else v
    if v.__class__ is str:
        if _DECIMAL.fullmatch(v):
            try:
                return Decimal(v.strip())
            except InvalidOperation:  # the pattern admits only what Decimal reads; kept for safety
                raise _Refused() from None
        if v.strip().lower() in _SPECIAL:
            raise _Ask()  # "NaN", "nan", " Infinity": PostgreSQL's spellings, read by it
    raise _Refused()


def _floating(v: Any) -> Any:
    if v is None or v.__class__ is float or v.__class__ is int:
        return v
    if v.__class__ is str:
        if _DECIMAL.fullmatch(v):
            return float(v)
        if v.strip().lower() in _SPECIAL:
            raise _Ask()
    raise _Refused()


def _text(v: Any) -> Any:
    if v is None or v.__class__ is str:
        return v
    if v.__class__ is bool:
        return "true" if v else "false"
    if v.__class__ is int:
        return str(v)
    if v.__class__ is float:
        return repr(v)
    return v  # objects and arrays travel as JSON text (sql.pg_text); they are never keys


def _character(v: Any) -> Any:
    v = _text(v)
    return v.rstrip(" ") if v.__class__ is str else v


def _uuid(v: Any) -> Any:
    if v is None:
        return v
    if v.__class__ is str and _UUID.fullmatch(v):
        h = v.strip("{}").replace("-", "").lower()
        canon = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        return v if canon == v else canon
    raise _Refused()


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _boolean(v: Any) -> Any:
    if v is None or v.__class__ is bool:
        return v
    if v.__class__ is int and v in (0, 1):
        return v == 1
    if v.__class__ is str:
        s = v.strip(" \t\n\r\f\v").lower()
        # PostgreSQL's parse_bool: a whole word or a prefix of one; "o" alone is both on and off
        if s and s != "o":
            if any(w.startswith(s) for w in _TRUE):
                return True
            if any(w.startswith(s) for w in _FALSE):
                return False
    raise _Refused()


def _timestamptz(v: Any) -> Any:
    if v.__class__ is str:
        m = _TS.fullmatch(v)
        if m and m.group("tz"):
            try:
                canon = datetime.fromisoformat(v).astimezone(timezone.utc).isoformat()
            except ValueError:
                raise _Ask() from None  # e.g. February 30th: PostgreSQL refuses it, naming why
            return v if canon == v else canon
    if v is None:
        return v
    raise _Ask()  # no offset (the session's time zone decides), "now", month names, 7 digits...


def _timestamp(v: Any) -> Any:
    if v.__class__ is str:
        m = _TS.fullmatch(v)
        if m and not m.group("tz"):
            try:
                canon = datetime.fromisoformat(v).isoformat()
            except ValueError:
                raise _Ask() from None
            return v if canon == v else canon
    if v is None:
        return v
    raise _Ask()  # an offset (PostgreSQL drops it), month names, "epoch"...


def _date(v: Any) -> Any:
    if v.__class__ is str and _DATE.fullmatch(v):
        try:
            canon = date.fromisoformat(v).isoformat()
        except ValueError:
            raise _Ask() from None
        return v if canon == v else canon
    if v is None:
        return v
    raise _Ask()  # "Jan 2 2026", "2026-002", "01/02/2026" (DateStyle decides), "today"...


class _Never:
    """The form class of a type whose values always take a call (no class alone says "in form")."""


#: PostgreSQL type -> (caster, the class its values have when already in form)
_TYPES: dict[str, tuple[Caster, type]] = {
    "smallint": (_integer(16), int), "integer": (_integer(32), int), "bigint": (_integer(64), int),
    "numeric": (_numeric, int), "real": (_floating, float), "double precision": (_floating, float),
    "text": (_text, str), "character varying": (_text, str), "character": (_character, _Never),
    "uuid": (_uuid, _Never), "boolean": (_boolean, bool),
    "timestamp with time zone": (_timestamptz, _Never), "timestamp without time zone": (_timestamp, _Never),
    "date": (_date, _Never),
}

#: types whose every spelling has an exact rule above: their key values are never asked
_EXACT = ("smallint", "integer", "bigint", "text", "character varying", "character", "uuid", "boolean")

#: types whose data columns are cast too: those that can refuse a value, so the dead letter names it
_REFUSING = ("smallint", "integer", "bigint", "numeric", "real", "double precision", "uuid", "boolean")


@dataclass(frozen=True)
class TableCasts:
    """The casts of one table's columns: every typed key column, and the data columns of :data:`_REFUSING` types.

    ``types`` are the columns' base types (a domain's, core/sql.py ``COLUMNS_QUERY``).
    """

    types: dict[str, str]
    casts: dict[str, Caster]
    # column -> the class of its values that need no call; a column absent here needs no cast at all
    forms: dict[str, type]
    # key column -> its base type, for key columns some spelling of which only PostgreSQL can read
    asks: dict[str, str]

    @classmethod
    def of(cls, types: dict[str, str], key: tuple[str, ...]) -> "TableCasts":
        cols = [c for c, t in types.items() if t in _REFUSING] + [c for c in key if types.get(c) in _TYPES]
        asks = {c: types[c] for c in key if c in types and types[c] not in _EXACT}
        return cls(dict(types), {c: _TYPES[types[c]][0] for c in cols}, {c: _TYPES[types[c]][1] for c in cols},
                   asks)

    def asked(self, key: dict) -> list[tuple[str, str, Any]]:
        """``(column, base type, value)`` of each value of ``key`` that only PostgreSQL can bring to its form.

        A value of a type with no rule here, or a spelling its rule does not read exactly
        (:class:`_Ask`): two such spellings of one row are one row only by PostgreSQL's reading,
        which core/spelling.py asks for. The same answer for a key before or after :meth:`row`
        (a value asked for is one :meth:`row` leaves as it is).
        """
        out = []
        for c, t in self.asks.items():
            v = key.get(c)
            if v is None:
                continue
            f = self.casts.get(c)
            if f is not None:
                try:
                    f(v)
                    continue
                except _Ask:
                    pass
                except _Refused:
                    continue  # :meth:`row` names it
            out.append((c, t, v))
        return out

    def row(self, key: dict, data: dict | None) -> tuple[dict, dict | None] | None:
        """``(key, data)`` with every cast column in its type's form; None when all already were.

        The common case (an int for an integer column, a str for a text key) costs a class check per
        value, no call: an int out of range therefore passes here, and planning names it
        (core/refuse.py) before PostgreSQL sees it. Raises :class:`CastError` naming the first column its type refuses.
        A spelling only PostgreSQL reads is left as it is (:meth:`asked`).
        """
        form = self.forms.get
        for c, v in key.items():
            cls = v.__class__
            if form(c, cls) is not cls:
                return self._cast(key), self._cast(data)
        if data:
            for c, v in data.items():
                cls = v.__class__
                if form(c, cls) is not cls:
                    return key, self._cast(data)
        return None

    def _cast(self, values: dict | None) -> dict | None:
        if not values:
            return values
        out = values
        for c, v in values.items():
            f = self.casts.get(c)
            if f is None:
                continue
            try:
                x = f(v)
            except _Ask:
                continue  # sent as it is; PostgreSQL reads it (and, for a key, core/spelling.py asks how)
            except _Refused as r:
                raise CastError(refused(c, self.types.get(c), v, r.why)) from None
            if x is not v:
                if out is values:
                    out = dict(values)
                out[c] = x
        return out


def refused(column: str, type_: str | None, v: Any, why: str = "") -> str:
    """The ``schema`` dead letter's detail of a value its column's type refuses."""
    shown = repr(v)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    return f"column {column!r} ({type_}): cannot cast {shown}" + (f" ({why})" if why else "")


def canonical(type_: str, text: str) -> str:
    """PostgreSQL's reading of a value (its JSON text, core/spelling.py) in the form our rule gives the same value.

    "2026-01-02T03:04:05+01:00" from a session in Paris and "2026-01-02T02:04:05Z" sent in ISO
    form must be one key: the time rules bring PostgreSQL's answer to their own form.
    """
    rule = _TYPES.get(type_)
    if rule is None or type_ in _EXACT:
        return text
    try:
        x = rule[0](text)
    except (_Ask, _Refused):
        return text
    return x if x.__class__ is str else text
