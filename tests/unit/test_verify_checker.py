"""The checker must catch every kind of failure it claims to (a checker that always passes proves nothing)."""

from __future__ import annotations

import uuid

from regionguard_testkit.verify.checker import DeadLetterInfo, RegionSnapshot, evaluate
from regionguard_testkit.verify.loadgen import Model, WriteRecord


class Dead:
    """A stand-in for DeadLetterReader with the same two attributes the evaluation reads."""

    def __init__(self, items: list[DeadLetterInfo]) -> None:
        self.items = items
        self.by_id: dict[str, list[DeadLetterInfo]] = {}
        for i in items:
            self.by_id.setdefault(i.write_id, []).append(i)

    def reasons(self):
        from collections import Counter

        return Counter(i.reason for i in self.items)


def rec(seq, region="eu", table="users", op="upsert", key=1, version=None, policy="hold", expect="apply",
        expires=False, fallbacks=(), status="acked") -> WriteRecord:
    return WriteRecord(id=str(uuid.uuid4()), seq=seq, region=region, table=table, op=op, key=key,
                       version=version if version is not None else (seq if table == "users" else None),
                       policy=policy, expect=expect, expires=expires, fallbacks=tuple(fallbacks), status=status)


def dl(r: WriteRecord, reason: str) -> DeadLetterInfo:
    return DeadLetterInfo(reason=reason, write_id=r.id, region=r.region, table=r.table, detail="", offset=0)


def model(*recs: WriteRecord) -> Model:
    m = Model()
    m.add(recs)
    return m


def snap(region: str, applied: list[WriteRecord], rows: dict | None = None, effects=None, source="router"):
    inbox = {r.id: (source if r.region == region else f"failover:{r.region}") for r in applied}
    if rows is None:  # rows as a correct apply leaves them
        rows, last = {}, {}
        for r in sorted(applied, key=lambda r: r.seq):
            last[(r.table, r.key)] = r
        for k, r in last.items():
            if r.op != "delete":
                rows[k] = (r.version, r.id)
    return RegionSnapshot(region, inbox, rows, dict(effects or {}))


def test_a_correct_outcome_passes() -> None:
    a, b = rec(1, key=1), rec(2, key=1)
    o = rec(3, table="orders", op="insert", key=7)
    d = rec(4, table="orders", op="delete", key=7)
    shed = rec(5, key=2, policy="shed")
    bad = rec(6, table="orders", op="insert", key=8, expect="constraint")
    fo = rec(7, key=3, policy="failover", fallbacks=("us",))
    m = model(a, b, o, d, shed, bad, fo)
    res = evaluate(m, {"eu": snap("eu", [a, b, o, d, fo]), "us": snap("us", [fo])},
                   Dead([dl(shed, "shed"), dl(bad, "constraint")]))
    assert res.ok, res.report()
    assert (res.acknowledged, res.applied, res.dead_lettered, res.failover_applied) == (7, 5, 2, 1)
    assert "RESULT produced=7 applied=5 lost=0 duplicates=0 dead_lettered=2" == res.result_line()


def test_lost_and_unexplained_dead_letters() -> None:
    a, b, c = rec(1, key=1), rec(2, key=2), rec(3, key=3)
    res = evaluate(model(a, b, c), {"eu": snap("eu", [a])}, Dead([dl(c, "shed")]))  # c is not policy shed
    assert res.lost == 2 and res.unexplained_dead_letters == 1 and not res.ok


def test_unconfirmed_writes_are_neither_demanded_nor_forbidden() -> None:
    a, u1, u2 = rec(1, key=1), rec(2, key=2, status="unconfirmed"), rec(3, key=3, status="unconfirmed")
    res = evaluate(model(a, u1, u2), {"eu": snap("eu", [a, u2])}, Dead([]))
    assert res.ok and res.unconfirmed == 2 and res.lost == 0


def test_applied_twice_is_seen_in_effects_and_in_constraint_dead_letters() -> None:
    a = rec(1, key=1)
    o = rec(2, table="orders", op="insert", key=5)
    res = evaluate(model(a, o), {"eu": snap("eu", [a, o], effects={a.id: 2})}, Dead([dl(o, "constraint")]))
    assert res.duplicates == 2 and not res.ok


def test_rows_not_at_their_last_applied_write() -> None:
    a, b = rec(1, key=1), rec(2, key=1)            # users 1: v1 then v2
    o, d = rec(3, table="orders", op="insert", key=9), rec(4, table="orders", op="delete", key=9)
    x = rec(5, key=4)
    rows = {("users", 1): (a.version, a.id),       # stale: still v1
            ("orders", 9): (None, o.id),           # should have been deleted (order inverted)
            ("users", 77): (1, "nobody")}          # no write explains it; users 4 (x) is missing
    res = evaluate(model(a, b, o, d, x), {"eu": snap("eu", [a, b, o, d, x], rows=rows)}, Dead([]))
    assert (res.stale_rows, res.missing_rows, res.extra_rows) == (2, 1, 1) and not res.ok


def test_writes_applied_where_they_do_not_belong() -> None:
    a = rec(1, key=1)                                   # hold policy: only ever at home
    bad = rec(2, table="orders", op="insert", key=3, expect="constraint")
    ghost = RegionSnapshot("eu", {str(uuid.uuid4()): "router"}, {}, {})
    res = evaluate(model(a, bad), {"eu": snap("eu", [a, bad]), "us": snap("us", [a])}, Dead([dl(bad, "constraint")]))
    assert res.misrouted == 1 and res.unknown_applied >= 1 and not res.ok
    res = evaluate(model(), {"eu": ghost}, Dead([]))
    assert res.unknown_applied == 1


def test_a_dead_letter_naming_an_applied_write_fails() -> None:
    """Issue 12: a write applied just before a crash came back during an outage and was shed."""
    s = rec(1, key=1, policy="shed")
    res = evaluate(model(s), {"eu": snap("eu", [s])}, Dead([dl(s, "shed")]))
    assert res.dead_after_apply == 1 and not res.ok


# ---------------------------------------------------------------------------- atomic write groups
def grec(seq, key, lines, *, op="insert", expect="apply", region="eu", policy="hold", fallbacks=(),
         status="acked") -> WriteRecord:
    r = rec(seq, region=region, table="orders", op=op, key=key, policy=policy, expect=expect, fallbacks=fallbacks,
            status=status)
    r.group, r.lines, r.ordering_key = True, tuple(lines), f"customer/{key}"
    return r


def gsnap(region: str, applied: list[WriteRecord], *, drop=(), xmin=None, extra=None, source="router"):
    """A snapshot as a correct apply leaves groups: every row at its last write, one xmin per write."""
    from regionguard_testkit.verify.loadgen import item_qty

    inbox = {r.id: (source if r.region == region else f"failover:{r.region}") for r in applied}
    rows, xmins, qty = {}, {}, {}
    for r in sorted(applied, key=lambda r: r.seq):
        for k in r.rows():
            rows[k], xmins[k] = (None, r.id), str(r.seq)
            if k[0] == "order_items":
                qty[k[1]] = item_qty(*k[1])
    for k, (wid, x) in (extra or {}).items():
        rows[k], xmins[k] = (None, wid), x
        if k[0] == "order_items":
            qty[k[1]] = item_qty(*k[1])
    for k in drop:
        rows.pop(k, None)
    xmins.update(xmin or {})
    return RegionSnapshot(region, inbox, rows, {}, xmins=xmins, qty=qty)


def test_groups_applied_whole_replayed_failed_over_and_dead_lettered_pass() -> None:
    g = grec(1, 10, [1, 2, 3])
    more = grec(2, 10, [4], op="update")                       # follow-up: the order paid, one more item
    fo = grec(3, 20, [1, 2], policy="failover", fallbacks=("us",))
    bad = grec(4, 30, [1, 2], expect="constraint")
    res = evaluate(model(g, more, fo, bad), {"eu": gsnap("eu", [g, more, fo], source="replay"),
                                             "us": gsnap("us", [fo])}, Dead([dl(bad, "constraint")]))
    assert res.ok, res.report()
    assert (res.groups, res.groups_applied, res.groups_replayed, res.groups_failover_applied,
            res.groups_dead_lettered) == (4, 3, 3, 1, 1)
    assert res.group_rows_checked == 3 + 2 + 3 + 3   # g lost its order row to the follow-up
    assert "groups 4 acknowledged" in res.report()


def test_half_a_group_or_two_transactions_or_leftovers_of_a_dead_group_fail() -> None:
    g, h = grec(1, 10, [1, 2, 3]), grec(2, 11, [1, 2])
    bad = grec(3, 30, [1, 2], expect="constraint")
    half = gsnap("eu", [g, h], drop=[("order_items", (10, 3))])
    res = evaluate(model(g, h, bad), {"eu": half}, Dead([dl(bad, "constraint")]))
    assert res.partial_groups == 1 and res.missing_rows == 1 and not res.ok, res.report()
    split = gsnap("eu", [g, h], xmin={("order_items", (11, 2)): "999"})
    res = evaluate(model(g, h, bad), {"eu": split}, Dead([dl(bad, "constraint")]))
    assert res.split_groups == 1 and res.partial_groups == 0 and not res.ok, res.report()
    left = gsnap("eu", [g, h], extra={("orders", 30): (bad.id, "7")})   # the bad group's order row stayed
    res = evaluate(model(g, h, bad), {"eu": left}, Dead([dl(bad, "constraint")]))
    assert res.partial_groups == 1 and res.extra_rows == 1 and not res.ok, res.report()


def test_a_group_item_with_other_values_is_stale() -> None:
    g = grec(1, 10, [1, 2])
    s = gsnap("eu", [g])
    s.qty[(10, 2)] += 1
    res = evaluate(model(g), {"eu": s}, Dead([]))
    assert res.stale_rows == 1 and not res.ok
