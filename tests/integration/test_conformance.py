"""One contract, four producers (issue 13, item 3): Python (the SDK), Node.js (kafkajs), Java
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

A language whose toolchain (node + kafkajs, java + mvn, go) is missing is skipped loudly: its
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

from regionguard.core.models import entity_key
from regionguard.core.partitions import partition_for
from regionguard.producer import WriteProducer
from tests.harness import DEFAULT_SCHEMA
from tests.integration.helpers import read_json, read_topic, wait_until
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
        if lang == "node":  # tansu refuses kafkajs' InitProducerId (README, "From any language")
            env["RG_NO_IDEMPOTENCE"] = "1"
        if lang == "go":  # tansu closes the connection on franz-go's newest ApiVersions request
            env["RG_KAFKA_MAX_VERSION"] = "v3.9.0"
    return env


def _run_all(cmds: dict[str, list[str] | None], cf, cfg, broker_kind: str) -> None:
    """Start every producer at once; each writes its rows in version order."""
    procs: dict[str, subprocess.Popen] = {}
    for lang, cmd in cmds.items():
        if cmd is None:
            continue
        procs[lang] = subprocess.Popen([*cmd, "produce", cf.bootstrap, cf.prefix, "eu"], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(lang, broker_kind))

    def python() -> None:
        with WriteProducer(cfg) as p:
            for w in _writes(0, "python"):
                p.write("eu", w["table"], w["op"], w["key"], w["data"])

    t = threading.Thread(target=python)
    t.start()
    outs = {lang: p.communicate("".join(json.dumps(w) + "\n" for w in _writes(LANGS.index(lang), lang)), timeout=300)
            for lang, p in procs.items()}
    t.join(300)
    for lang, p in procs.items():
        assert p.returncode == 0, f"{lang} producer failed: {outs[lang][1][-2000:]}"
        assert json.loads(outs[lang][0].strip().splitlines()[-1]) == {"sent": len(_writes(0, lang))}, outs[lang]


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
