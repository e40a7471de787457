"""The health service on an Apache Kafka that only lets authenticated clients in (issue 14, item 4).

Its own broker: a PLAINTEXT listener for the test's checks, plus SASL_PLAINTEXT
(PLAIN and SCRAM-SHA-512) and SASL_SSL (PLAIN, broker certificate from
``tests/data/kafka_tls``) listeners. The config's ``kafka.bootstrap`` names a
SASL listener only, so ``regionguard health`` (a real process) can lead only if
faust's client authenticated with the settings core's translation made from
``kafka.client`` (librdkafka needs none of that code: it takes ``kafka.client``
as is).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from regionguard.core.models import RegionState
from regionguard_testkit.embedded.kafka import ApacheKafka
from regionguard.health.service import TopicTail
from tests.harness import free_port, make_config
from tests.integration.helpers import wait_group, wait_metric, wait_until

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(bool(os.environ.get("KAFKA_BOOTSTRAP")),
                                 reason="needs its own Apache Kafka with SASL listeners ($KAFKA_BOOTSTRAP is set)")]

TLS = Path(__file__).resolve().parents[1] / "data" / "kafka_tls"
USER, PASSWORD = "rg-health", "s3cret-for-sasl-test"
PLAIN_JAAS = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
              f'user_{USER}="{PASSWORD}";')
SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


class SaslKafka:
    """One Apache Kafka node with PLAINTEXT, SASL_PLAINTEXT and SASL_SSL listeners."""

    def __init__(self) -> None:
        self.kafka = ApacheKafka(1)
        node = self.kafka.nodes[0]
        host = node.host
        self.plaintext = node.address
        self.sasl_plaintext = f"{host}:{free_port(host)}"
        self.sasl_ssl = f"{host}:{free_port(host)}"
        client = f"PLAINTEXT://{node.address},SASL_PLAINTEXT://{self.sasl_plaintext},SASL_SSL://{self.sasl_ssl}"
        # the launcher's properties, with our listeners; it writes them when it formats the node
        self.kafka.broker_config.update({
            "listeners": f"{client},CONTROLLER://{host}:{node.controller_port}",
            "advertised.listeners": client,
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
                                              "SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": SCRAM_JAAS,
            "listener.name.sasl_ssl.plain.sasl.jaas.config": PLAIN_JAAS,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": SCRAM_JAAS,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(TLS / "broker-keystore.pem"),
        })

    def start(self) -> "SaslKafka":
        self.kafka.start()
        admin = AdminClient({"bootstrap.servers": self.plaintext})
        upsert = UserScramCredentialUpsertion(USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                              PASSWORD.encode())
        for fut in admin.alter_user_scram_credentials([upsert]).values():
            fut.result(timeout=30)
        return self

    def close(self) -> None:
        self.kafka.close()


@pytest.fixture(scope="module")
def sasl_kafka():
    k = SaslKafka()
    try:
        yield k.start()
    finally:
        k.close()


CASES = {
    "sasl_plaintext-PLAIN": ("sasl_plaintext", {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"}),
    "sasl_plaintext-SCRAM-SHA-512": ("sasl_plaintext", {"security.protocol": "SASL_PLAINTEXT",
                                                        "sasl.mechanism": "SCRAM-SHA-512"}),
    "sasl_ssl-PLAIN": ("sasl_ssl", {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
                                    "ssl.ca.location": str(TLS / "ca.pem")}),
}


def test_the_sasl_listener_refuses_unauthenticated_clients(sasl_kafka):
    """The premise: nothing gets metadata from the SASL listener without logging in."""
    from confluent_kafka import KafkaException

    admin = AdminClient({"bootstrap.servers": sasl_kafka.sasl_plaintext, "socket.timeout.ms": 2000, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    wrong = AdminClient({"bootstrap.servers": sasl_kafka.sasl_plaintext, "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": "PLAIN", "sasl.username": USER, "sasl.password": "wrong", "log_level": 0})
    with pytest.raises(KafkaException):
        wrong.list_topics(timeout=3)


@pytest.mark.parametrize("case", list(CASES))
def test_health_leads_and_publishes_over_sasl(case, sasl_kafka, regions, services, tmp_path):
    listener, security = CASES[case]
    lr = regions(["eu"], schema=None)
    client = {**security, "sasl.username": USER, "sasl.password": PASSWORD}
    cf = make_config(lr, getattr(sasl_kafka, listener), tmp_path / "sasl.yaml", partitions=1,
                     overrides={"kafka": {"client": client}, "health": {"leader_session_timeout_s": 6.0}})
    cfg = cf.load()
    seen: list[RegionState] = []
    lock = threading.Lock()

    def deliver(_p, _o, value):
        if value:
            with lock:
                seen.append(RegionState.model_validate_json(value))

    states = TopicTail(cfg, cfg.topic("region-state"), OFFSET_BEGINNING, deliver, "test-region-state").start()
    try:
        port = free_port()
        proc = services(f"health-{case}", ["health", "--config", str(cf.path), "--observer", "h1",
                                           "--metrics-port", str(port)])
        # faust's group, seen through the PLAINTEXT listener: its one member came in over SASL
        wait_group(sasl_kafka.plaintext, f"{cfg.kafka.topic_prefix}health", members=1, timeout=30,
                   what="the health instance in the leader election")
        wait_metric(port, "regionguard_health_leader", lambda v: v == 1, timeout=30, what="h1 the leader")
        wait_until(lambda: any(s.region == "eu" and s.state.value == "closed" and s.observer == "h1"
                               for s in list(seen)), timeout=20, what="eu closed, published by h1")
        # heartbeats keep coming: the leader's producer (librdkafka) and the election (faust) both stay in
        wait_until(lambda: sum(1 for s in list(seen) if s.heartbeat) >= 2, timeout=20, what="two heartbeats")
        assert proc.alive, proc.log_tail()
        assert PASSWORD not in proc.log_text()
    finally:
        states.stop()
