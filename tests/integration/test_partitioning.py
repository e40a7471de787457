"""Every producer puts a row's key in the partition Java's producer would (issue 11, 5a).

The language-neutral vectors (schemas/vectors/partitions.json, key bytes -> partition
for 1, 3, 12 and 48 partitions) are checked here against
- the project's producers on the real broker: the SDK (WriteProducer) and the plain
  producer settings of tests, benchmarks and examples, reading back where each
  record landed;
- the JVM: kafka-clients' own murmur2 and key partitioner, resolved with Maven;
- the Node client (clients/node, on @platformatic/kafka), with the partitioner it gives the producer;
- the Java and Go clients (clients/java, clients/go), each building the keys itself.
The packages' own tests (scripts/test-clients.sh) check the same vectors without a build cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from regionguard.core.config import parse_config
from regionguard.core.kafka import producer_conf
from regionguard.core.partitions import PARTITION_COUNTS, VECTORS_PATH
from regionguard.client import WriteProducer
from tests.harness import create_topics
from tests.integration.helpers import read_topic

ROOT = Path(__file__).resolve().parents[2]
JVM_DIR = ROOT / "tests" / "jvm"
VECTORS = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
EXPECTED = {bytes.fromhex(v["key_hex"]): v["partition"] for v in VECTORS["vectors"]}


def _landed(bootstrap: str, topic: str) -> dict[bytes, int]:
    msgs = read_topic(bootstrap, topic, idle=1.0, timeout=30.0)
    assert len(msgs) == len(EXPECTED), f"{topic}: read {len(msgs)} of {len(EXPECTED)} records"
    return {m.key(): m.partition() for m in msgs}


@pytest.mark.smoke
@pytest.mark.parametrize("partitions", [3, 12, 48])
def test_the_sdk_puts_each_vector_key_in_javas_partition(broker, partitions):
    prefix = f"pv{uuid.uuid4().hex[:8]}."
    cfg = parse_config({
        "kafka": {"bootstrap": broker.bootstrap, "topic_prefix": prefix, "partitions": partitions},
        "regions": {"eu": {"dsn": "postgresql://unused@127.0.0.1/unused"}},
        "tables": {t: {"key": list(k)} for t, k in {(v["table"], tuple(v["key"])) for v in VECTORS["vectors"]}},
    })
    topic = cfg.topic("writes", "eu")
    create_topics(broker.bootstrap, {topic: partitions})
    with WriteProducer(cfg) as producer:
        for v in VECTORS["vectors"]:
            ev = producer.write("eu", v["table"], "delete", v["key"]).event
            assert ev.kafka_key().hex() == v["key_hex"]
    landed = _landed(broker.bootstrap, topic)
    wrong = {k.decode(): (p, EXPECTED[k][str(partitions)]) for k, p in landed.items()
             if p != EXPECTED[k][str(partitions)]}
    assert not wrong, f"{len(wrong)} of {len(landed)} keys in another partition than Java's (got, want): {wrong}"


def test_plain_producers_of_tests_benches_and_examples_partition_like_java(broker):
    topic = f"pv-plain-{uuid.uuid4().hex[:8]}"
    create_topics(broker.bootstrap, {topic: 12})
    p = Producer(producer_conf(broker.bootstrap, **{"linger.ms": 5}))
    for key in EXPECTED:
        p.produce(topic, key=key, value=b"x")
    assert p.flush(30) == 0
    landed = _landed(broker.bootstrap, topic)
    assert {k: p for k, p in landed.items() if p != EXPECTED[k]["12"]} == {}


def _cache_dir() -> Path:
    return Path(os.environ.get("RG_CACHE_DIR") or Path.home() / ".cache" / "regionguard")


def _kafka_clients_libs() -> Path:
    """kafka-clients and its dependencies, resolved once with Maven from tests/jvm/pom.xml."""
    pom = JVM_DIR / "pom.xml"
    libs = _cache_dir() / "jvm-test-libs" / uuid.uuid5(uuid.NAMESPACE_URL, pom.read_text()).hex[:12]
    if not list(libs.glob("kafka-clients-*.jar")):
        libs.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([shutil.which("mvn"), "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                               f"-DoutputDirectory={libs}"], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0 and list(libs.glob("kafka-clients-*.jar")), \
            f"mvn could not resolve kafka-clients: {(proc.stdout + proc.stderr)[-2000:]}"
    return libs


def test_the_jvm_kafka_clients_agrees_with_the_vectors():
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        pytest.skip(f"LOUD SKIP: no {'java' if java is None else 'mvn'} on PATH, so the vectors are NOT checked "
                    "against the JVM's kafka-clients (install a JDK 11+ and Maven)")
    libs = _kafka_clients_libs()
    keys = "".join(f"{v['key_hex']}\n" for v in VECTORS["vectors"])
    proc = subprocess.run([java, "-cp", str(libs / "*"), str(JVM_DIR / "Vectors.java"),
                           *map(str, PARTITION_COUNTS)], input=keys, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip()]
    assert len(rows) == len(VECTORS["vectors"])
    for v, row in zip(VECTORS["vectors"], rows):
        assert row[0] == v["key_hex"]
        assert int(row[1]) == v["murmur2"], v["key_utf8"]
        assert dict(zip(map(str, PARTITION_COUNTS), map(int, row[2:]))) == v["partition"], v["key_utf8"]


def test_the_node_client_agrees_with_the_vectors():
    from tests.integration.polyglot import Missing, node_script

    try:
        cmd = node_script("partitions.js")
    except Missing as exc:
        pytest.skip(f"node or @platformatic/kafka missing: {exc}")
    proc = subprocess.run([*cmd, str(VECTORS_PATH)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = {r["key_hex"]: r["partition"] for r in json.loads(proc.stdout)}
    assert got == {v["key_hex"]: v["partition"] for v in VECTORS["vectors"]}


def _example_vectors(lang: str, command) -> None:
    """The client builds each vector row's key itself and partitions it with its Kafka client's partitioner."""
    from tests.integration.polyglot import Missing, loud_skip_reason

    try:
        cmd = command()
    except Missing as exc:
        pytest.skip(loud_skip_reason(lang, str(exc)))
    proc = subprocess.run([*cmd, "vectors", str(VECTORS_PATH)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout)
    assert [r["key_hex"] for r in got] == [v["key_hex"] for v in VECTORS["vectors"]], f"{lang}: key bytes differ"
    assert {r["key_hex"]: r["partition"] for r in got} == {v["key_hex"]: v["partition"] for v in VECTORS["vectors"]}
    for r, v in zip(got, VECTORS["vectors"]):
        if "murmur2" in r:
            assert r["murmur2"] == v["murmur2"], v["key_utf8"]


def test_the_java_client_builds_keys_and_partitions_like_the_vectors():
    from tests.integration.polyglot import java_producer

    _example_vectors("Java (clients/java, kafka-clients)", java_producer)


def test_the_go_client_builds_keys_and_partitions_like_the_vectors():
    from tests.integration.polyglot import go_producer

    _example_vectors("Go (clients/go, franz-go)", go_producer)
