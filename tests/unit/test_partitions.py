"""Partitioning test vectors (schemas/vectors/partitions.json) against pure-Python murmur2s.

The JVM, the Node client and the real producer on a real broker are checked against the
same file in tests/integration/test_partitioning.py.
"""

from __future__ import annotations

import json
import warnings

from hypothesis import given
from hypothesis import strategies as st

with warnings.catch_warnings():  # kafka-python 3 loads its protocol schemas with a deprecated importlib call
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from regionguard.core.models import entity_key
from regionguard.core.partitions import PARTITION_COUNTS, VECTORS_PATH, murmur2, partition_for, render


def _vectors() -> dict:
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def test_committed_vectors_are_fresh():
    assert VECTORS_PATH.read_text(encoding="utf-8") == render(), \
        "stale: run `python -m regionguard.core.partitions --write` and commit"


def test_vectors_cover_the_edge_cases():
    doc = _vectors()
    assert doc["partition_counts"] == [1, 3, 12, 48] == list(PARTITION_COUNTS)
    keys = [bytes.fromhex(v["key_hex"]) for v in doc["vectors"]]
    assert len(set(keys)) == len(keys) >= 25
    assert {len(k) % 4 for k in keys} == {0, 1, 2, 3}  # every tail length of murmur2
    assert any(len(v["key"]) > 1 for v in doc["vectors"])  # composite keys
    assert any(k.decode().count("/") > len(v["key"]) for k, v in zip(keys, doc["vectors"]))  # "/" in a value
    assert any(max(k) >= 0x80 for k in keys)  # non-ASCII
    assert any(k.endswith(b"/") for k in keys)  # empty value
    assert any(len(k) > 255 for k in keys)
    assert any(v["murmur2"] < 0 for v in doc["vectors"])  # the sign bit is masked, not negated


def test_each_vector_key_is_the_sdk_key_and_its_partitions_are_javas():
    for v in _vectors()["vectors"]:
        key = bytes.fromhex(v["key_hex"])
        assert key == entity_key(v["table"], v["key"]) == v["key_utf8"].encode("utf-8")
        theirs = kafka_python_murmur2(key)
        assert murmur2(key) == v["murmur2"]
        assert theirs & 0x7FFFFFFF == v["murmur2"] & 0x7FFFFFFF
        for n in PARTITION_COUNTS:
            assert v["partition"][str(n)] == (theirs & 0x7FFFFFFF) % n == partition_for(key, n), (v["key_utf8"], n)


@given(st.binary(max_size=64))
def test_murmur2_equals_kafka_pythons(data):
    assert murmur2(data) & 0x7FFFFFFF == kafka_python_murmur2(data) & 0x7FFFFFFF
    assert -(2**31) <= murmur2(data) < 2**31


def test_the_cli_names_a_rows_partition(capsys):
    from regionguard.core.partitions import main

    assert main(["users", "id=42", "--partitions", "12"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"key": "users/42", "partition": partition_for(b"users/42", 12), "partitions": 12}
