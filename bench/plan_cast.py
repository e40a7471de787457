"""Per-write cost of casting values to their columns' forms in planning (core/cast.py), on this machine.

1,000 typical writes (a bigint key and 3 columns: bigint, numeric, text), decoded as the router does.
Times ``plan_writes`` with the cast and with every write taken as in form (the planner before it),
interleaved, best of ``--rounds`` runs each so a busy machine slows both alike; then the cast alone,
and a variant casting key columns only (no loop over the data), for comparison.

    python bench/plan_cast.py [--rounds 40]
"""

from __future__ import annotations

import argparse
import json
import timeit
import uuid

from regionguard.core import cast, db, wire
from regionguard.core.sql import TableSchema

ORDERS = TableSchema("orders", ("id",), None, frozenset({"id", "user_id", "amount", "status"}),
                     {"id": "bigint", "user_id": "bigint", "amount": "numeric", "status": "text"})


def _key_only(self, key, data):
    forms = self.forms
    for c, v in key.items():
        cls = v.__class__
        if forms.get(c, cls) is not cls:
            return self._cast(key), data
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    writes = [wire.decode(json.dumps({
        "id": str(uuid.uuid4()), "region": "eu", "table": "orders", "op": "upsert", "key": {"id": i},
        "data": {"user_id": i % 97, "amount": 10 + i % 5, "status": "ok"}}).encode()) for i in range(1000)]
    schemas = {"orders": ORDERS}
    full_row, n = cast.TableCasts.row, 20
    per_write = lambda t: t / n / len(writes) * 1e6  # noqa: E731
    with_cast, without = [], []
    for _ in range(args.rounds):
        cast.TableCasts.row = full_row
        with_cast.append(timeit.timeit(lambda: db.plan_writes(schemas, writes), number=n))
        cast.TableCasts.row = lambda self, key, data: None  # every write taken as in form: no cast
        without.append(timeit.timeit(lambda: db.plan_writes(schemas, writes), number=n))
    casts = ORDERS.casts
    try:
        cast.TableCasts.row = full_row
        alone = min(timeit.repeat(lambda: [casts.row(w.key, w.data) for w in writes], number=n, repeat=args.rounds))
        cast.TableCasts.row = _key_only
        keys = min(timeit.repeat(lambda: [casts.row(w.key, w.data) for w in writes], number=n, repeat=args.rounds))
    finally:
        cast.TableCasts.row = full_row
    print(f"plan_writes per write: {per_write(min(without)):.3f} us without the cast, "
          f"{per_write(min(with_cast)):.3f} us with it")
    print(f"the cast alone per write: {per_write(alone):.3f} us (key and data columns), "
          f"{per_write(keys):.3f} us (key columns only)")


if __name__ == "__main__":
    main()
