"""Per-write cost of the NUL / integer-range check in planning (core/refuse.py), on this machine.

1,000 typical writes (``users``: bigint key, two text columns, a bigint version), decoded as the
router does. Times ``plan_writes`` with the check and with it replaced by a no-op, interleaved,
41 rounds each so a busy machine slows both alike; prints medians and minimums in µs a write.

    python bench/plan_refuse.py
"""

from __future__ import annotations

import json
import statistics
import timeit
import uuid

from regionguard.core import plan as db, wire  # planning lives in core/plan.py
from regionguard.core.sql import TableSchema

USERS = TableSchema("users", ("id",), "version", frozenset({"id", "name", "email", "version"}),
                    {"id": "bigint", "name": "text", "email": "text", "version": "bigint"})
writes = [wire.decode(json.dumps({"id": str(uuid.uuid4()), "region": "eu", "table": "users", "op": "upsert",
          "key": {"id": i}, "data": {"name": f"user {i}", "email": f"u{i}@example.com", "version": 1_700_000_000 + i}}).encode())
          for i in range(1000)]
schemas = {"users": USERS}
real = db._refused
on, off = [], []
for _ in range(41):
    db._refused = real
    on.append(timeit.timeit(lambda: db.plan_writes(schemas, writes), number=10) / 10 / 1000 * 1e6)
    db._refused = lambda steps, todo: {}
    off.append(timeit.timeit(lambda: db.plan_writes(schemas, writes), number=10) / 10 / 1000 * 1e6)
db._refused = real
print(f"plan_writes per write: with the check median {statistics.median(on):.3f} us, without {statistics.median(off):.3f} us, "
      f"added {statistics.median(on) - statistics.median(off):.3f} us; min {min(on):.3f} / {min(off):.3f}")
