"""What producers do when partition leaders move or their region's brokers are gone (issue 26, item 6).

A private 3-node Apache Kafka cluster (KRaft, combined nodes), started here for this module only,
with each producer's writes topic at replication 3 and ``min.insync.replicas`` 2. Four producers
write at once, each to its own topic: the Python SDK (``WriteProducer``, in this process) and the
Java, Go and Node.js packages' command lines (clients/, docs/clients.md), fed one line at a time
through a pipe so they write steadily.

- *Leaders move*: the node leading most of those partitions is SIGKILLed (a crash: its sockets are
  reset) or SIGSTOPped (frozen: nothing answers and nothing is reset, as when a region is cut off).
  Every producer rides it out: no error reaches the app, every write is acknowledged, and reading
  the topics back finds every write, each key's writes in the order they were sent.
  (Without this branch's settings the SDK failed writes behind a frozen leader after 30 s and
  kafkajs kept sending to it, and @platformatic/kafka's send hung on it past the delivery timeout;
  franz-go needed MetadataMinAge to find the new leader in time.)
- *The region's brokers gone*: every node is frozen while the producers are connected and
  writing. Each producer reports its typed error (Python ``WriteNotAcknowledged``; the command
  lines exit 3 with one line) within the delivery timeout (30 s) and a margin, naming the topic.

A language whose toolchain is missing is skipped with a LOUD SKIP (tests/integration/polyglot.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from regionguard.client import WriteProducer
from regionguard.client.delivery import DELIVERY_TIMEOUT_MS, WriteNotAcknowledged
from regionguard.core.config import Config
from regionguard_testkit.embedded.kafka import ApacheKafka
from tests.integration.helpers import wait_until
from tests.integration.polyglot import Missing, go_producer, java_producer, loud_skip_reason, node_script

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PARTITIONS = 6
KEYS = 12
#: the app hears of a dead region within the delivery timeout; the margin covers one request timeout
#: (10 s: franz-go checks a record's timeout only when its request ends) and a loaded 2-core host
MARGIN_S = 20.0
#: (language, fault) pairs that may exit 3 where the others ride the fault out: printed, not failed.
#: Empty: the Node producer's frozen-leader gap (kafkajs, issue 26) is gone on @platformatic/kafka
#: (3 of 3 freeze runs on 2026-12-08 rode it out, every acknowledged write read back in order).
KNOWN_GAPS: dict[tuple[str, str], str] = {}
#: the brokers fence a silent node as docs/topology.md advises (3 s, not Kafka's 9 s default). At the
#: default, on a host loaded by other work, a frozen leader's partitions moved after 8 s and then Go
#: (franz-go) or Node missed the 30 s delivery timeout in 5 of 12 runs (2026-12-08); see docs/producers.md
FENCING = {"broker.session.timeout.ms": "3000", "broker.heartbeat.interval.ms": "500"}


@pytest.fixture(scope="module")
def kafka3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    cluster = ApacheKafka(3, workdir=tmp_path_factory.mktemp("kafka3-producers"), broker_config=FENCING)
    try:
        cluster.start(timeout=300)
        yield cluster
    finally:
        cluster.close()


def _clis() -> dict[str, list[str]]:
    out = {}
    for lang, build in {"java": java_producer, "go": go_producer,
                        "node": lambda: node_script("produce-lines.js")}.items():
        try:
            out[lang] = build()
        except Missing as exc:
            loud_skip_reason(lang, str(exc))
    return out


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 3000, "log_level": 0})


def _create_topics(bootstrap: str, topics: list[str]) -> None:
    admin = _admin(bootstrap)  # kept until the futures are done: destroying it fails them
    futures = admin.create_topics(
        [NewTopic(t, PARTITIONS, 3, config={"min.insync.replicas": "2"}) for t in topics], request_timeout=60)
    for f in futures.values():
        f.result(60)


def _leaders(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    md = _admin(bootstrap).list_topics(timeout=5)
    return {(t, p): part.leader for t in topics if t in md.topics for p, part in md.topics[t].partitions.items()}


def _ends(bootstrap: str, topic: str) -> int:
    """How many records ``topic`` has, or -1 while a partition can't say (a new topic, a leader moving)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "rg-producer-test", "log_level": 0})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] for p in range(PARTITIONS))
    except KafkaException:
        return -1
    finally:
        c.close()


def _read_back(bootstrap: str, topic: str) -> dict[int, list[int]]:
    """Every record of ``topic``: key id -> the ``seq`` values in the order of its partition."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "rg-producer-test", "enable.auto.commit": False,
                  "log_level": 0})
    try:
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
        c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        got = {p: 0 for p in range(PARTITIONS)}
        seqs: dict[int, list[int]] = {}
        deadline = time.monotonic() + 120
        while any(got[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            for m in c.consume(500, timeout=1):
                if m.error():
                    continue
                got[m.partition()] = m.offset() + 1
                ev = json.loads(m.value())
                seqs.setdefault(ev["key"]["id"], []).append(ev["data"]["seq"])
        assert all(got[p] >= ends[p] for p in ends), (got, ends)
        return seqs
    finally:
        c.close()


def _line(seq: int) -> dict[str, Any]:
    return {"table": "users", "op": "upsert", "key": {"id": seq % KEYS}, "data": {"seq": seq}}


@dataclass
class Writer:
    """One producer writing steadily: ``sent`` lines (or writes) in order, and what it reported."""

    lang: str
    topic: str
    sent: list[int] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    slowest_flush_s: float = 0.0
    proc: subprocess.Popen[str] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    ended: float | None = None  # monotonic time it reported its outcome
    stderr: str = ""  # a command line's, once stopped

    def start_cli(self, argv: list[str], bootstrap: str, prefix: str) -> None:
        self.proc = subprocess.Popen(argv + ["produce", bootstrap, prefix, "eu"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        seq = 0
        try:
            while not self.stop.is_set():
                self.proc.stdin.write(json.dumps(_line(seq)) + "\n")
                self.proc.stdin.flush()
                self.sent.append(seq)
                seq += 1
                self.stop.wait(0.025)  # pacing the load (40 writes/s), not waiting for a state
        except (BrokenPipeError, ValueError):  # the CLI stopped reading: it failed, its outcome says why
            pass
        finally:
            try:
                self.proc.stdin.close()
            except (BrokenPipeError, ValueError):
                pass

    def start_sdk(self, cfg: Config) -> None:
        self.thread = threading.Thread(target=self._sdk, args=(cfg,), daemon=True)
        self.thread.start()

    def _sdk(self, cfg: Config) -> None:
        p = WriteProducer(cfg)
        seq = 0
        while not self.stop.is_set():
            batch = []
            for _ in range(4):
                line = _line(seq)
                p.write("eu", line["table"], line["op"], line["key"], line["data"])
                batch.append(seq)
                self.sent.append(seq)
                seq += 1
            t0 = time.monotonic()
            try:
                p.flush()
                self.acked.extend(batch)
            except WriteNotAcknowledged as exc:
                self.errors.append(exc)
                self.ended = time.monotonic()
                return
            finally:
                self.slowest_flush_s = max(self.slowest_flush_s, time.monotonic() - t0)
            self.stop.wait(0.1)
        self.ended = time.monotonic()

    def finish(self, timeout: float) -> tuple[int | None, str, str]:
        """Stop feeding; the CLI's exit code, stdout and stderr (None, "", "" for the SDK)."""
        self.stop.set()
        if self.proc is None:
            assert self.thread is not None
            self.thread.join(timeout)
            assert not self.thread.is_alive(), f"{self.lang}: the SDK's flush hung"
            return None, "", ""
        assert self.thread is not None
        self.thread.join(5)  # the feeder closes stdin once stopped
        if self.thread.is_alive():  # blocked on a full pipe: the command line stopped reading
            self.proc.kill()
            self.thread.join(5)
        self.proc.stdin = None  # closed by the feeder; communicate() must not flush it
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
            return -9, out, err
        return self.proc.returncode, out, err


def _writers(kafka3: ApacheKafka, run: str) -> list[Writer]:
    clis = _clis()
    langs = ["python", *clis]
    prefixes = {lang: f"{run}-{lang}." for lang in langs}
    topics = {lang: f"{prefixes[lang]}writes.eu" for lang in langs}
    _create_topics(kafka3.bootstrap, list(topics.values()))
    writers = []
    for lang in langs:
        w = Writer(lang, topics[lang])
        if lang == "python":
            w.start_sdk(Config.model_validate({
                "kafka": {"bootstrap": kafka3.bootstrap, "topic_prefix": prefixes[lang]},
                "regions": {"eu": {"dsn": "postgresql://postgres@127.0.0.1:5432/unused"}},
                "tables": {"users": {"key": ["id"]}}}))
        else:
            w.start_cli(clis[lang], kafka3.bootstrap, prefixes[lang])
        writers.append(w)
    # every producer is writing: each topic has records
    try:
        wait_until(lambda: all(_ends(kafka3.bootstrap, w.topic) >= 40 for w in writers), 120, 0.5,
                   "every producer's first writes")
    except AssertionError as exc:
        counts = {w.lang: _ends(kafka3.bootstrap, w.topic) for w in writers}
        _stop(writers)
        said = {w.lang: (w.errors, w.proc and (w.proc.returncode, w.stderr[-500:])) for w in writers}
        raise AssertionError(f"{exc}: records {counts}; ended {said}") from None
    except BaseException:
        _stop(writers)
        raise
    return writers


def _stop(writers: list[Writer]) -> None:
    for w in writers:
        w.stop.set()
        if w.proc is not None and w.proc.returncode is None:
            if w.proc.poll() is None:
                w.proc.kill()
            if w.thread is not None:
                w.thread.join(5)  # the feeder closes stdin; communicate() must not flush it too
            w.proc.stdin = None
            w.stderr = w.proc.communicate()[1]


def _restore(kafka3: ApacheKafka) -> None:
    for node in kafka3.nodes:
        if node.running():
            node.proc.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
    for node in kafka3.nodes:
        if not node.running():
            kafka3.start_node(node.node_id, timeout=180)
    kafka3.wait_ready(180, brokers=3)


@pytest.mark.parametrize("fault", ["kill", "freeze"])
def test_producers_ride_out_a_leader_move_and_lose_no_acknowledged_write(kafka3: ApacheKafka, fault: str) -> None:
    run = f"lead{fault}{int(time.time())}"
    writers = _writers(kafka3, run)
    topics = [w.topic for w in writers]
    try:
        leaders = _leaders(kafka3.bootstrap, topics)
        counts = {n.node_id: sum(1 for ld in leaders.values() if ld == n.node_id) for n in kafka3.nodes}
        node = max(sorted(counts), key=lambda k: counts[k])
        survivors = ",".join(n.address for n in kafka3.nodes if n.node_id != node)
        t_fault = time.monotonic()
        if fault == "kill":
            kafka3.kill_node(node)
        else:
            kafka3.node(node).proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        wait_until(lambda: all(ld not in (node, -1) for ld in _leaders(survivors, topics).values()), 120, 0.5,
                   f"the partitions node {node} led to move")
        moved_s = time.monotonic() - t_fault
        # writes go on after the move: every topic grows by 100 more records
        marks = {t: _ends(survivors, t) for t in topics}
        try:
            wait_until(lambda: all(_ends(survivors, t) >= marks[t] + 100 for t in topics), 180, 0.5,
                       "writes after the leaders moved")
        except AssertionError as exc:
            grew = {w.lang: (marks[w.topic], _ends(survivors, w.topic)) for w in writers}
            said = {w.lang: w.errors or (w.proc and w.proc.poll() is not None and w.finish(5)) for w in writers}
            raise AssertionError(f"{exc}; records before/now {grew}; ended: {said}") from None
        outcomes = {w.lang: w.finish(DELIVERY_TIMEOUT_MS / 1000 + 90) for w in writers}
        print(f"\n{fault} of node {node} (leading {counts[node]} of {len(leaders)} partitions): leaders moved "
              f"after {moved_s:.1f} s; python's slowest flush {writers[0].slowest_flush_s:.1f} s")
        failures = []
        for w in writers:
            rc, out, err = outcomes[w.lang]
            if w.proc is None:
                if w.errors:
                    failures.append(f"python: {w.errors[0]}")
                    continue
                acked = w.acked
            elif rc != 0:
                gap = KNOWN_GAPS.get((w.lang, fault))
                if rc == 3 and gap:  # reported as not acknowledged, so nothing acknowledged is lost; still a gap
                    print(f"  {w.lang}: KNOWN GAP ({gap}): {err.strip()[-300:]}")
                    continue
                failures.append(f"{w.lang}: exit {rc}: {err.strip()[-2000:]}")
                continue
            else:
                assert json.loads(out) == {"sent": len(w.sent)}, (w.lang, out)
                acked = w.sent
            seqs = _read_back(survivors, w.topic)
            seen = {s for v in seqs.values() for s in v}
            missing = sorted(set(acked) - seen)
            assert missing == [], f"{w.lang}: {len(missing)} acknowledged write(s) missing, e.g. {missing[:5]}"
            for key, order in seqs.items():
                firsts = list(dict.fromkeys(order))  # a producer's own retry may repeat a record, never reorder
                assert firsts == sorted(firsts), f"{w.lang}: key {key} out of order: {order}"
            dupes = sum(len(v) for v in seqs.values()) - len(seen)
            print(f"  {w.lang}: {len(acked)} acknowledged, all read back in order per key ({dupes} duplicates)")
        assert failures == [], "\n".join(failures)
    finally:
        _stop(writers)
        _restore(kafka3)


def test_producers_report_a_dead_region_within_the_delivery_timeout(kafka3: ApacheKafka) -> None:
    writers = _writers(kafka3, f"dead{int(time.time())}")
    try:
        t_gone = time.monotonic()
        for node in kafka3.nodes:  # every broker of the region falls silent at once: nothing refuses, nothing resets
            node.proc.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
        # a few more writes while the region is gone, then the command lines' input ends (the SDK's
        # thread writes on until its flush fails)
        clis = [w for w in writers if w.proc is not None]
        marks = {w.lang: len(w.sent) for w in clis}
        wait_until(lambda: all(len(w.sent) >= marks[w.lang] + 8 or w.proc.poll() is not None for w in clis),  # type: ignore[union-attr]
                   30, 0.05, "writes after the region went")
        for w in clis:
            w.stop.set()
        bound = DELIVERY_TIMEOUT_MS / 1000 + MARGIN_S
        outcomes = {}
        for w in writers:
            left = max(1.0, bound - (time.monotonic() - t_gone))
            if w.proc is None:  # the SDK's thread ends at its first WriteNotAcknowledged
                w.thread.join(left)  # type: ignore[union-attr]
                assert not w.thread.is_alive(), "python: flush still waiting after the delivery timeout"  # type: ignore[union-attr]
                outcomes[w.lang] = w.finish(5)
            else:
                outcomes[w.lang] = w.finish(left)
                w.ended = time.monotonic() if w.proc.returncode != -9 else None  # type: ignore[union-attr]
        for w in writers:
            took = (w.ended or time.monotonic()) - t_gone
            rc, _out, err = outcomes[w.lang]
            print(f"\n{w.lang}: reported after {took:.1f} s: {(str(w.errors[0]) if w.errors else err).strip()}")
            if w.proc is None:
                assert len(w.errors) == 1 and isinstance(w.errors[0], WriteNotAcknowledged), w.errors
                exc = w.errors[0]
                assert exc.retriable and exc.region == "eu" and exc.topic == w.topic, exc
                assert exc.writes and {ev.data["seq"] for ev in exc.writes} <= set(w.sent) - set(w.acked)
                line = str(exc)
            else:
                assert rc == 3, f"{w.lang}: exit {rc} after {took:.1f} s: {err.strip()[-2000:]}"
                line = err.strip()
            assert "\n" not in line and w.topic in line and "not acknowledged" in line, (w.lang, line)
            assert took <= bound, f"{w.lang}: told after {took:.1f} s"
    finally:
        _stop(writers)
        _restore(kafka3)
