"""Least privilege in Kafka (issue 28, item 5): every service as its own principal, with only its ACLs.

Its own Apache Kafka (module-scoped, so the rest of the suite keeps its broker):
KRaft's ``StandardAuthorizer``, a SASL_PLAINTEXT listener with PLAIN (the
``admin`` super user, defined in the listener's JAAS config) and SCRAM-SHA-512
(one user per service and one for applications, created through the
AdminClient), and the launcher's PLAINTEXT listener. The broker itself and the
controller talk over PLAINTEXT as ``User:ANONYMOUS``, which must therefore be
a super user; the test reads topics and groups there only to observe. Every
service and every application is given the SASL listener only, with its own
credentials, after ``regionguard acls --apply`` (run by the admin) granted the
table of :mod:`regionguard.ops.acls`.
"""

from __future__ import annotations

import json

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from regionguard.core.config import load_config
from regionguard.core.kafka import make_producer, topic_plan
from regionguard.ops.acls import acl_table, minimal
from regionguard_testkit.embedded.config import ConfigFile, deep_merge, write_config
from regionguard_testkit.embedded.kafka import ApacheKafka
from tests.harness import free_port, make_config
from tests.integration.helpers import (
    ev_bytes, read_json, read_topic, wait_assigned, wait_group, wait_metric, wait_until, write_event,
)

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(bool(os.environ.get("KAFKA_BOOTSTRAP")),
                                 reason="needs its own Apache Kafka with an authorizer ($KAFKA_BOOTSTRAP is set)")]

ADMIN, ADMIN_PASSWORD = "admin", "admin-secret-for-acl-test"
USERS = {name: f"{name}-secret-for-acl-test" for name in ("rg-router", "rg-replayer", "rg-health", "rg-features", "rg-operator", "rg-app")}
PLAIN_JAAS = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
              f'user_{ADMIN}="{ADMIN_PASSWORD}";')
SCRAM_JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
PY = sys.executable


class SecuredKafka:
    """One Apache Kafka node with an authorizer, SASL users, and a PLAINTEXT listener for the broker itself."""

    def __init__(self) -> None:
        self.kafka = ApacheKafka(1)
        node = self.kafka.nodes[0]
        self.plaintext = node.address
        self.sasl = f"{node.host}:{free_port(node.host)}"
        client = f"PLAINTEXT://{node.address},SASL_PLAINTEXT://{self.sasl}"
        self.kafka.broker_config.update({
            "listeners": f"{client},CONTROLLER://{node.host}:{node.controller_port}",
            "advertised.listeners": client,
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": PLAIN_JAAS,
            "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": SCRAM_JAAS,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "super.users": f"User:ANONYMOUS;User:{ADMIN}",
            "allow.everyone.if.no.acl.found": "false",
        })

    def client(self, user: str) -> dict[str, Any]:
        """``kafka.client`` of ``user`` on the SASL listener (the admin logs in with PLAIN, the others with SCRAM)."""
        if user == ADMIN:
            return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                    "sasl.username": ADMIN, "sasl.password": ADMIN_PASSWORD}
        return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": user, "sasl.password": USERS[user]}

    def start(self) -> "SecuredKafka":
        self.kafka.start()
        admin = AdminClient({"bootstrap.servers": self.sasl, **self.client(ADMIN)})
        upserts = [UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                                pw.encode()) for u, pw in USERS.items()]
        for fut in admin.alter_user_scram_credentials(upserts).values():
            fut.result(timeout=30)
        return self

    def close(self) -> None:
        self.kafka.close()


@pytest.fixture(scope="module")
def secured_kafka():
    k = SecuredKafka()
    try:
        yield k.start()
    finally:
        k.close()


def as_user(secured: SecuredKafka, watch: ConfigFile, user: str, path: Path) -> ConfigFile:
    """``watch``'s config (same topics and groups) on the SASL listener as ``user``."""
    data = deep_merge(watch.data, {"kafka": {"bootstrap": secured.sasl, "client": secured.client(user)}})
    write_config(data, path)
    return ConfigFile(path, data, watch.regions)


def regionguard(*argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}
    return subprocess.run([PY, "-m", "regionguard", *argv], capture_output=True, text=True, timeout=60, env=env)


def setup_topics_and_acls(secured: SecuredKafka, watch: ConfigFile, tmp_path: Path) -> dict[str, ConfigFile]:
    """Topics created and ACLs applied by the admin; a config per principal (and the admin's)."""
    admin = as_user(secured, watch, ADMIN, tmp_path / "admin.yaml")
    done = regionguard("acls", "--apply", "--create-topics", "--config", str(admin.path))
    assert done.returncode == 0, done.stderr
    topics, acls = done.stdout.splitlines()
    assert topics.startswith(f"topics: {len(topic_plan(load_config(admin.path)))} created"), done.stdout
    assert acls.startswith("acls: ") and not acls.startswith("acls: 0 added"), done.stdout
    return {"admin": admin, **{u: as_user(secured, watch, u, tmp_path / f"{u}.yaml") for u in USERS}}


def done_count(cf: ConfigFile) -> int:
    """How many ACLs the table of ``cf``'s config holds (what ``acls --apply`` reports)."""
    return len(minimal(acl_table(load_config(cf.path))))


def produce_one(cf: ConfigFile, topic: str) -> KafkaError | None:
    """Produce one record as ``cf``'s principal with regionguard's own (idempotent) producer; the delivery error."""
    producer = make_producer(load_config(cf.path), **{"message.timeout.ms": 15000})
    errors: list[KafkaError | None] = []
    producer.produce(topic, key=b"k", value=b"{}", on_delivery=lambda err, _m: errors.append(err))
    producer.flush(20)
    assert errors, f"no delivery report for {topic}"
    return errors[0]


def test_acls_apply_is_idempotent_and_refused_writes_fail_on_the_broker(secured_kafka, tmp_path):
    watch = make_config({"eu": "postgresql://nobody@127.0.0.1:1/none"}, secured_kafka.plaintext,
                        tmp_path / "watch.yaml", partitions=1, create_topics=False)
    cfs = setup_topics_and_acls(secured_kafka, watch, tmp_path)
    printed = regionguard("acls", "--config", str(cfs["admin"].path))
    assert printed.returncode == 0 and printed.stdout.count(" ALLOW ") == done_count(cfs["admin"]), printed
    as_json = regionguard("acls", "--json", "--config", str(cfs["admin"].path))
    grants = [json.loads(x) for x in as_json.stdout.splitlines()]
    assert len(grants) == done_count(cfs["admin"]) and all(g["principal"] and g["operation"] for g in grants)
    again_json = regionguard("acls", "--apply", "--json", "--config", str(cfs["admin"].path))
    assert json.loads(again_json.stdout)["added"] == 0, again_json
    usage = regionguard("acls", "--create-topics", "--config", str(cfs["admin"].path))
    assert usage.returncode == 2 and usage.stderr.strip().endswith("--create-topics needs --apply"), usage
    again = regionguard("acls", "--apply", "--config", str(cfs["admin"].path))
    assert again.returncode == 0 and again.stdout.startswith("acls: 0 added, "), (again.stdout, again.stderr)

    # a principal that may not alter ACLs: one line, exit 2, no secret
    refused = regionguard("acls", "--apply", "--config", str(cfs["rg-app"].path))
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert USERS["rg-app"] not in refused.stderr + refused.stdout

    # what each principal may write, and what the broker refuses it
    allowed = {"rg-app": ["writes"], "rg-router": ["held", "dead-letter"], "rg-replayer": ["dead-letter", "failover-events"],
               "rg-health": ["region-state", "observations"], "rg-operator": ["control", "writes"]}
    forbidden = {
        "rg-app": ["region-state", "control", "dead-letter", "held", "observations", "failover-events", "features"],
        "rg-router": ["region-state", "control", "features"],
        "rg-replayer": ["region-state", "control", "held", "features"],
        "rg-health": ["control", "dead-letter", "held", "writes"],
        "rg-features": ["region-state", "control"],
        "rg-operator": ["region-state", "held", "dead-letter"],
    }
    for user, kinds in allowed.items():
        for kind in kinds:
            topic = watch.topic(kind, "eu" if kind in ("writes", "held") else None)
            assert produce_one(cfs[user], topic) is None, (user, topic)
    for user, kinds in forbidden.items():
        for kind in kinds:
            topic = watch.topic(kind, "eu" if kind in ("writes", "held") else None)
            err = produce_one(cfs[user], topic)
            assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (user, topic, err)

    # a service whose principal cannot see every topic: one line naming a topic, exit 2 (it would create it)
    wrong = regionguard("router", "--config", str(cfs["rg-app"].path))
    assert wrong.returncode == 2, (wrong.returncode, wrong.stderr[-2000:])
    last = wrong.stderr.strip().splitlines()[-1]
    assert "Traceback" not in wrong.stderr and "may not create it (TOPIC_AUTHORIZATION_FAILED)" in last, last


def _users(lr, region):
    return {r["id"]: r["version"] for r in lr.fetch(region, "SELECT id, version FROM users")}


def test_each_service_works_as_its_own_principal(secured_kafka, regions, services, tmp_path):
    lr = regions(["eu", "us"])
    watch = make_config(lr, secured_kafka.plaintext, tmp_path / "watch.yaml", partitions=2, create_topics=False,
                        overrides={"health": {"leader_session_timeout_s": 6.0, "timeout_s": 1.0},
                                   "features": {"search": {"off_when": ["open"]}},
                                   # a refused connection opens eu at once; slow probes on a loaded machine must not
                                   "breaker": {"slow_call_s": 1.0}})
    cfs = setup_topics_and_acls(secured_kafka, watch, tmp_path)
    cfg = watch.load()
    hport, rport = free_port(), free_port()
    health = services("health", cfs["rg-health"].cli_args("health", "--observer", "h1", "--metrics-port", str(hport)))
    wait_metric(hport, "regionguard_health_leader", lambda v: v == 1, timeout=60, what="h1 leads")
    router = services("router", cfs["rg-router"].cli_args("router", "--metrics-port", str(rport)))
    replayer = services("replayer", cfs["rg-replayer"].cli_args("replayer"))
    features = services("features", cfs["rg-features"].cli_args("features"))
    wait_assigned(watch, "router", "eu", timeout=60)
    wait_assigned(watch, "replayer", "eu", timeout=60)
    wait_group(watch.bootstrap, f"{cfg.kafka.topic_prefix}health", members=1, timeout=30, what="faust's group")

    def publish(version: int, ids: range) -> None:
        producer = make_producer(cfs["rg-app"].load())
        errors: list = []
        for i in ids:
            key, value = ev_bytes(write_event("eu", "users", "upsert", {"id": i}, {"name": f"v{version}",
                                                                               "version": version}))
            producer.produce(cfg.topic("writes", "eu"), key=key, value=value,
                             on_delivery=lambda err, _m: errors.append(err) if err else None)
        assert producer.flush(30) == 0 and not errors, errors

    # direct: the application's writes applied by the router
    publish(1, range(10))
    wait_until(lambda: _users(lr, "eu") == {i: 1 for i in range(10)}, timeout=30, what="direct applies")

    # outage: health (its own principal) opens eu, the router holds
    lr.proxy("eu").set_mode("refuse")
    lr.proxy("eu").reset_all()
    wait_metric(rport, "regionguard_held_partitions", lambda n: n == 2, region="eu", timeout=60,
                what="eu held by the router")
    publish(2, range(5))
    # the features service (its own principal) turned search off in eu: flags and an event published
    wait_until(lambda: [e for e in read_json(watch.bootstrap, cfg.topic("failover-events"), idle=0.3)
                        if e.get("service") == "features" and e["kind"] == "features_changed" and e["region"] == "eu"],
               timeout=30, what="features_changed for eu, from the features service")
    assert any(f["region"] == "eu" and "search" in f["disabled"]
               for f in read_json(watch.bootstrap, cfg.topic("features"), idle=0.3))
    wait_until(lambda: len(read_topic(watch.bootstrap, cfg.topic("held", "eu"), idle=0.3)) >= 5, timeout=30,
               what="writes held")

    # recovery: health closes eu, the replayer replays, the router switches back
    lr.proxy("eu").set_mode("pass")
    wait_until(lambda: _users(lr, "eu") == {**{i: 1 for i in range(10)}, **{i: 2 for i in range(5)}}, timeout=90,
               what="held writes replayed")
    wait_metric(rport, "regionguard_held_partitions", lambda n: n == 0, region="eu", timeout=60,
                what="eu back in direct mode")
    publish(3, range(10))
    wait_until(lambda: _users(lr, "eu") == {i: 3 for i in range(10)}, timeout=30, what="direct after replay")
    for proc in (health, router, replayer, features):
        assert proc.alive, proc.log_tail()
        for pw in USERS.values():
            assert pw not in proc.log_text()
