"""One contract, four producers (issue 13, item 3): Python (the SDK), Node.js (@platformatic/kafka), Java
(kafka-clients) and Go (franz-go) write interleaved versions of the same rows at once, each
building keys and events by the contract itself; a real router process applies them to PostgreSQL.

Language ``i`` writes versions ``v = i + 4*k`` (k = 0..K-1) of every shared row, in k order,
concurrently with the others, so the log interleaves their writes. Then:
- every record of a row sits in one partition, the one Java's murmur2 names (so the producers
  agree on the key bytes and the partitioner);
- per key, each producer's records keep its send order (offsets increase with its versions);
- versioned tables end at the highest version per row (last-writer-wins, whoever wrote it);
  the unversioned table ends at the last record of its key's partition (the router applied
  each key's records in offset order);
- nothing is dead-lettered, every write id is in the inbox.

Atomic write groups (docs/contract.md, "Atomic write groups and ordering keys"; issue 16, item 3): each
language's group API publishes some groups, a single-row write sharing a group's ordering key, and
a group with a bad op; on the real router and PostgreSQL each good group applied whole (its rows
carry one ``xmin``), in order with the single write, and the bad one left nothing and one dead
letter. Each language also rebuilds the accepted vectors of schemas/vectors/write-events.json that
carry an ordering_key with its API and gets their kafka_key and (murmur2) partitions.

A language whose toolchain (node + @platformatic/kafka, java + mvn, go) is missing is skipped loudly: its
parametrized case is a pytest skip starting "LOUD SKIP", plus a warning in the summary; the
other languages still run.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections import defaultdict
from typing import Any

import pytest

from regionguard.core.models import WriteEvent, entity_key
from regionguard.core.partitions import PARTITION_COUNTS, murmur2, partition_for
from regionguard.core.write_vectors import VECTORS_PATH as WRITE_VECTORS_PATH
from regionguard.client import WriteProducer
from tests.harness import DEFAULT_SCHEMA
from tests.integration.helpers import read_json, read_topic, wait_assigned, wait_until
from tests.integration.polyglot import Missing, go_producer, java_producer, loud_skip_reason, node_script

LANGS = ("python", "node", "java", "go")  # index = the version offset
K = 6  # versions per row per language
PARTITIONS = 12

DOCS_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    tenant text NOT NULL, path text NOT NULL, body text, version bigint NOT NULL,
    PRIMARY KEY (tenant, path));
"""
TABLES = {"users": {"key": ["id"], "version": "version"}, "orders": {"key": ["id"]},
          "docs": {"key": ["tenant", "path"], "version": "version"}}
# composite keys, "/" inside values, unicode, an empty value
DOC_KEYS = [{"tenant": "acme", "path": "a/b/c"}, {"tenant": "acme", "path": "Zoë/東京"},
            {"tenant": "", "path": "🚀"}, {"tenant": "t/x", "path": "y"}]
ROW_IDS = range(1, 9)


def _writes(lang_index: int, lang: str) -> list[dict[str, Any]]:
    out = []
    for k in range(K):
        v = lang_index + 4 * k
        for i in ROW_IDS:
            out.append({"table": "users", "op": "upsert", "key": {"id": i}, "data": {"name": lang, "version": v}})
            out.append({"table": "orders", "op": "upsert", "key": {"id": i}, "data": {"amount": v, "status": lang}})
        for key in DOC_KEYS:
            out.append({"table": "docs", "op": "upsert", "key": key, "data": {"body": lang, "version": v}})
    return out


def _commands() -> tuple[dict[str, list[str] | None], dict[str, str]]:
    """Command per language (None for Python, which runs in process) and skip reasons of the missing."""
    builders = {"node": lambda: node_script("produce-lines.js"), "java": java_producer, "go": go_producer}
    cmds: dict[str, list[str] | None] = {"python": None}
    skipped: dict[str, str] = {}
    for lang, build in builders.items():
        try:
            cmds[lang] = build()
        except Missing as exc:
            skipped[lang] = str(exc)
    return cmds, skipped


@pytest.fixture(scope="module")
def producers() -> tuple[dict[str, list[str] | None], dict[str, str]]:
    return _commands()


def _env(lang: str, broker_kind: str) -> dict[str, str]:
    env = dict(os.environ)
    if broker_kind == "tansu":
        if lang == "node":  # tansu refuses the Node producer's InitProducerId (README, "From any language")
            env["RG_NO_IDEMPOTENCE"] = "1"
        if lang == "go":  # tansu closes the connection on franz-go's newest ApiVersions request
            env["RG_KAFKA_MAX_VERSION"] = "v3.9.0"
    return env


def _run_all(cmds: dict[str, list[str] | None], cf, cfg, broker_kind: str, lines=None) -> None:
    """Start every producer at once; each sends its lines (``lines(lang)``, default :func:`_writes`) in order.

    A line is a single-row write (optionally with ``ordering_key``) or a group ``{"ordering_key", "ops"}``,
    which each language builds with its own group API; Python's is ``WriteProducer.group``.
    """
    lines = lines or (lambda lang: _writes(LANGS.index(lang), lang))
    procs: dict[str, subprocess.Popen] = {}
    for lang, cmd in cmds.items():
        if cmd is None:
            continue
        procs[lang] = subprocess.Popen([*cmd, "produce", cf.bootstrap, cf.prefix, "eu"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(lang, broker_kind))

    def python() -> None:
        with WriteProducer(cfg) as p:
            for w in lines("python"):
                if "ops" in w:
                    with p.group("eu", ordering_key=w["ordering_key"]) as g:
                        for op in w["ops"]:
                            g.add(op["table"], op["op"], op["key"], op.get("data"))
                else:
                    p.write("eu", w["table"], w["op"], w["key"], w["data"], ordering_key=w.get("ordering_key"))

    t = threading.Thread(target=python)
    t.start()
    outs = {lang: p.communicate("".join(json.dumps(w) + "\n" for w in lines(lang)), timeout=300)
            for lang, p in procs.items()}
    t.join(300)
    for lang, p in procs.items():
        assert p.returncode == 0, f"{lang} producer failed: {outs[lang][1][-2000:]}"
        assert json.loads(outs[lang][0].strip().splitlines()[-1]) == {"sent": len(lines(lang))}, outs[lang]


def _row_key(table: str, key: dict) -> tuple:
    return (table, *(key[c] for c in TABLES[table]["key"]))


def test_four_languages_interleave_writes_to_the_same_rows(producers, regions, rg_config, services, broker):
    cmds, skipped = producers
    for lang, why in skipped.items():
        loud_skip_reason(lang, f"left out of the conformance run: {why}")
    lr = regions(["eu"], schema=DEFAULT_SCHEMA + DOCS_SCHEMA)
    cf = rg_config(lr, partitions=PARTITIONS, tables=TABLES)
    cfg = cf.load()
    # a new router group starts at the earliest offset, so producing before it is assigned loses nothing
    services("router", cf.cli_args("router", "--no-health"))
    _run_all(cmds, cf, cfg, broker.kind)
    langs = [lang for lang in LANGS if lang in cmds]
    total = len(langs) * len(_writes(0, "python"))

    # the log: where each row's records landed, and in which order
    msgs = read_topic(cf.bootstrap, cf.topic("writes", "eu"), idle=1.0, timeout=60)
    assert len(msgs) == total, f"read {len(msgs)} of {total} records"
    by_row: dict[tuple, list[tuple[int, int, dict]]] = defaultdict(list)
    for m in msgs:
        ev = json.loads(m.value())
        assert m.key() == entity_key(ev["table"], ev["key"]), (m.key(), ev)
        by_row[_row_key(ev["table"], ev["key"])].append((m.partition(), m.offset(), ev))
    model: dict[tuple, dict] = {}
    for row, recs in by_row.items():
        parts = {p for p, _, _ in recs}
        key = recs[0][2]["key"]
        assert parts == {partition_for(entity_key(row[0], key), PARTITIONS)}, \
            f"{row}: records in partitions {parts}, Java's murmur2 names one"
        recs.sort(key=lambda r: r[1])
        seen_writers = {}
        for _, _, ev in recs:
            writer = ev["data"].get("name") or ev["data"].get("status") or ev["data"].get("body")
            v = ev["data"].get("version", ev["data"].get("amount"))
            assert v == LANGS.index(writer) + 4 * (seen_writers.get(writer, -1) + 1), \
                f"{row}: {writer}'s records out of its send order"
            seen_writers[writer] = (v - LANGS.index(writer)) // 4
        assert len({ev["data"].get("name") or ev["data"].get("status") or ev["data"].get("body")
                    for _, _, ev in recs}) == len(langs)
        if TABLES[row[0]].get("version"):
            model[row] = max((ev for _, _, ev in recs), key=lambda e: e["data"]["version"])["data"]
        else:
            model[row] = recs[-1][2]["data"]  # last in the partition's order
    # interleaved: on some row, a write of one language follows another's and is followed by it again
    interleaved = sum(1 for recs in by_row.values()
                      if len({(ev["data"].get("name") or ev["data"].get("status") or ev["data"].get("body"))
                               for _, _, ev in recs[:len(recs) // 2]}) > 1)
    print(f"\nconformance: {', '.join(langs)}; {total} writes; {len(by_row)} rows; "
          f"{interleaved} rows with interleaved producers in their first half; skipped: {skipped or 'none'}")

    def db() -> dict[tuple, dict]:
        out = {}
        for r in lr.fetch("eu", "SELECT id, name, version FROM users"):
            out[("users", r["id"])] = {"name": r["name"], "version": r["version"]}
        for r in lr.fetch("eu", "SELECT id, amount::int AS amount, status FROM orders"):
            out[("orders", r["id"])] = {"amount": r["amount"], "status": r["status"]}
        for r in lr.fetch("eu", "SELECT tenant, path, body, version FROM docs"):
            out[("docs", r["tenant"], r["path"])] = {"body": r["body"], "version": r["version"]}
        return out

    try:
        wait_until(lambda: db() == model and lr.count("eu", "regionguard_applied") == total, timeout=120,
                   what="every write applied and the rows equal to the model")
    except Exception:
        got = db()
        diff = {k: (got.get(k), model.get(k)) for k in set(got) | set(model) if got.get(k) != model.get(k)}
        pytest.fail(f"{len(diff)} rows differ from the model (db, model): {dict(list(diff.items())[:10])}; "
                    f"inbox {lr.count('eu', 'regionguard_applied')} of {total}")
    assert read_json(cf.bootstrap, cf.topic("dead-letter"), idle=0.5) == []


@pytest.mark.parametrize("lang", ["node", "java", "go"])
def test_each_language_toolchain_is_present(producers, lang):
    """One case per language: skipped loudly (with a warning) when its toolchain is missing, so the
    summary says which languages the conformance run above left out."""
    cmds, skipped = producers
    if lang in skipped:
        pytest.skip(loud_skip_reason(lang, skipped[lang]))
    assert cmds[lang]


# ---- atomic write groups from every language ------------------------------------------------

ITEMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS order_items (
    order_id bigint NOT NULL REFERENCES orders(id), line int NOT NULL, sku text, qty int CHECK (qty > 0),
    PRIMARY KEY (order_id, line));
"""
GROUP_TABLES = {"users": {"key": ["id"], "version": "version"}, "orders": {"key": ["id"]},
                "order_items": {"key": ["order_id", "line"]}}
GROUPS = 6      # good groups per language: an order and its LINES lines
LINES = 3
BAD_LINE = 2    # the bad group's line 2 breaks qty > 0: ops[2] fails


def _order_id(lang: str, j: int) -> int:
    return 1000 * (LANGS.index(lang) + 1) + j


def _group_lines(lang: str) -> list[dict[str, Any]]:
    """Per language: GROUPS good groups, a single-row update of the first group's order that shares its
    ordering key (so it applies after the group), then a group whose ops[BAD_LINE] breaks a CHECK."""

    def order(j: int, bad_line: int | None = None) -> dict[str, Any]:
        oid = _order_id(lang, j)
        ops = [{"table": "orders", "op": "insert", "key": {"id": oid}, "data": {"user_id": j, "amount": 10}}]
        ops += [{"table": "order_items", "op": "insert", "key": {"order_id": oid, "line": i},
                 "data": {"sku": lang, "qty": -1 if i == bad_line else i}} for i in range(1, LINES + 1)]
        return {"ordering_key": f"{lang}/customer/{j}", "ops": ops}

    out = [order(j) for j in range(GROUPS)]
    out.insert(2, {"table": "orders", "op": "update", "key": {"id": _order_id(lang, 0)},
                   "data": {"status": f"paid by {lang}"}, "ordering_key": f"{lang}/customer/0"})
    out.append(order(99, bad_line=BAD_LINE))
    return out


def test_each_languages_groups_apply_whole_and_a_bad_group_leaves_nothing(producers, regions, rg_config,
                                                                          services, broker):
    cmds, skipped = producers
    for lang, why in skipped.items():
        loud_skip_reason(lang, f"left out of the group conformance run: {why}")
    lr = regions(["eu"], schema=DEFAULT_SCHEMA + ITEMS_SCHEMA)
    cf = rg_config(lr, partitions=PARTITIONS, tables=GROUP_TABLES)
    services("router", cf.cli_args("router", "--no-health"))
    wait_assigned(cf, "router", "eu")  # its inbox table exists once it is assigned
    _run_all(cmds, cf, cf.load(), broker.kind, lines=_group_lines)
    langs = [lang for lang in LANGS if lang in cmds]
    per_lang = len(_group_lines("python"))

    # the log: ONE record per group and per write, keyed by its ordering key, in murmur2's partition
    msgs = read_topic(cf.bootstrap, cf.topic("writes", "eu"), idle=1.0, timeout=60)
    assert len(msgs) == len(langs) * per_lang, f"read {len(msgs)} records, want one per group and write"
    for m in msgs:
        ev = json.loads(m.value())
        assert m.key() == ev["ordering_key"].encode(), (m.key(), ev)
        assert m.partition() == partition_for(m.key(), PARTITIONS), (m.key(), m.partition())
    sent = {(lang, tuple(sorted(json.dumps(w, sort_keys=True) for w in _group_lines(lang)))) for lang in langs}
    got = defaultdict(list)
    for m in msgs:
        ev = json.loads(m.value())
        lang = ev["ordering_key"].split("/")[0]
        fields = {k: ev[k] for k in ("table", "op", "key", "data", "ordering_key", "ops") if ev.get(k) is not None}
        got[lang].append(json.dumps(fields, sort_keys=True))
    assert {(lang, tuple(sorted(v))) for lang, v in got.items()} == sent, "a producer's events differ from its lines"

    # PostgreSQL: every good group whole, the bad one nothing, the single write after its group
    good = len(langs) * GROUPS
    wait_until(lambda: lr.count("eu", "regionguard_applied") == good + len(langs), timeout=120,
               what="every good group and single write applied")
    dls = wait_until(lambda: (lambda d: d if len(d) >= len(langs) else None)(
        read_json(cf.bootstrap, cf.topic("dead-letter"), idle=0.5)), what="one dead letter per language")
    assert len(dls) == len(langs), [(d["reason"], d["partition"], d["offset"], d.get("write_id"), d["detail"][:60])
                                    for d in dls]
    by_lang = {json.loads(d["original"])["ordering_key"].split("/")[0]: d for d in dls}
    assert set(by_lang) == set(langs)
    for lang in langs:
        d = by_lang[lang]
        assert d["reason"] == "constraint" and d["detail"].startswith(f"ops[{BAD_LINE}]"), (lang, d)
        bad = _order_id(lang, 99)
        assert lr.fetch("eu", "SELECT id FROM orders WHERE id = $1", bad) == [], f"{lang}: bad group's order applied"
        assert lr.fetch("eu", "SELECT line FROM order_items WHERE order_id = $1", bad) == [], \
            f"{lang}: bad group's lines applied"
        for j in range(GROUPS):
            oid = _order_id(lang, j)
            assert lr.fetch("eu", "SELECT line FROM order_items WHERE order_id = $1 ORDER BY line", oid) == [
                {"line": i} for i in range(1, LINES + 1)], f"{lang}: group {j} not whole"
            rows = lr.fetch("eu", "SELECT xmin::text AS x FROM orders WHERE id = $1 UNION ALL "
                                  "SELECT xmin::text FROM order_items WHERE order_id = $1", oid)
            # group 0's order was then updated by the single write: its lines still share one transaction
            xmins = {r["x"] for r in (rows[1:] if j == 0 else rows)}
            assert len(rows) == 1 + LINES and len(xmins) == 1, f"{lang}: group {j} written by {len(xmins)} transactions"
        assert lr.fetch("eu", "SELECT status FROM orders WHERE id = $1", _order_id(lang, 0)) == [
            {"status": f"paid by {lang}"}], f"{lang}: the single write did not apply after its group"
    inbox = lr.fetch("eu", "SELECT tbl FROM regionguard_applied")
    assert sum(r["tbl"].startswith("group:") for r in inbox) == good  # each group recorded once
    print(f"\ngroups: {', '.join(langs)}; {good} groups applied whole, {len(langs)} bad groups dead-lettered; "
          f"skipped: {skipped or 'none'}")


def _group_vector_cases() -> list[dict[str, Any]]:
    doc = json.loads(WRITE_VECTORS_PATH.read_text(encoding="utf-8"))
    return [c for c in doc["cases"] if c["outcome"] == "accepted" and c.get("value_utf8")
            and json.loads(c["value_utf8"]).get("ordering_key") is not None]


@pytest.mark.parametrize("lang", ["node", "java", "go"])
def test_each_language_builds_the_accepted_group_vectors(producers, lang):
    """The example rebuilds every accepted vector with an ordering_key (the groups, and a single-row write
    carrying one) with its own API: same event, the vector's kafka_key, and Java's murmur2 partitions."""
    cmds, skipped = producers
    if lang in skipped:
        pytest.skip(loud_skip_reason(lang, skipped[lang]))
    cases = _group_vector_cases()
    assert any("ops" in json.loads(c["value_utf8"]) for c in cases) and len(cases) >= 5
    proc = subprocess.run([*cmds[lang], "group-vectors", str(WRITE_VECTORS_PATH), *map(str, PARTITION_COUNTS)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {r["name"]: r for r in json.loads(proc.stdout)}
    assert sorted(got) == sorted(c["name"] for c in cases)
    for c in cases:
        r, key = got[c["name"]], c["kafka_key"].encode()
        assert bytes.fromhex(r["key_hex"]) == key, c["name"]
        assert r["partition"] == {str(n): partition_for(key, n) for n in PARTITION_COUNTS}, c["name"]
        if "murmur2" in r:
            assert r["murmur2"] == murmur2(key), c["name"]
        built, want = WriteEvent.model_validate(r["value"]), WriteEvent.model_validate_json(c["value_utf8"])
        assert built.kafka_key() == key
        skip = {"id", "created_at"}
        assert built.model_dump(exclude=skip) == want.model_dump(exclude=skip), c["name"]
