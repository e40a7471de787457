"""A router keeps its group through the loss of the broker that coordinates it (issue 26).

Three Apache Kafka nodes (racks r0, r1, r2, RF 3, ``min.insync.replicas`` 2, every broker setting at
its default: a silent broker is fenced after 9 s), started here for this module only. The router's
group is placed on a node's ``__consumer_offsets`` partition and its writes partitions are led by
the two other nodes (testkit ``embedded/coordinator.py``); that node is SIGKILLed.

Before core/groupsession.py the router's group session (6 s) ran out before the coordinator moved
(fencing, 9 s): both lanes gave up their partitions and rejoined under new member ids, and nothing
was applied for 15-17 s (bench/coordinator_loss.py). Now the session outlives the failover: writes
produced after the kill are applied while the node is still down by the *same* members (no rejoin:
the member ids the new coordinator lists are the ones from before the kill), and once the node is
back every write is applied exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from regionguard.core.kafka import ensure_topics, router_group, topic_configs
from regionguard_testkit.embedded import coordinator as co
from regionguard_testkit.embedded.config import make_config
from regionguard_testkit.embedded.kafka import ApacheKafka
from tests.integration.helpers import ev_bytes, group_members, produce_raw, wait_group, wait_until, write_event

RACKS = ["r0", "r1", "r2"]
PARTITIONS = 3
APPLIES = """
CREATE TABLE applies (id bigint NOT NULL);
CREATE FUNCTION log_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO applies VALUES (NEW.id); RETURN NULL; END $$;
CREATE TRIGGER log_apply AFTER INSERT OR UPDATE ON users FOR EACH ROW EXECUTE FUNCTION log_apply();
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    kafka = ApacheKafka(3, workdir=tmp_path_factory.mktemp("kafka-coordinator"), racks=RACKS)
    try:
        kafka.start(timeout=300)
        yield kafka
    finally:
        kafka.close()


def writes(ids: range) -> list[tuple[bytes, bytes]]:
    return [ev_bytes(write_event("r1", "users", "upsert", {"id": i}, {"name": f"u{i}", "version": 1}))
            for i in ids]


def test_a_router_keeps_applying_through_its_group_coordinators_loss(cluster, regions, services, tmp_path):
    lr = regions(["r1"])
    lr.setup_schema(APPLIES)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    nodes = [n.node_id for n in cluster.nodes]

    def config(prefix: str):
        return make_config(lr, cluster.bootstrap, tmp_path / f"{prefix}yaml", topic_prefix=prefix,
                           partitions=PARTITIONS, create_topics=False,
                           overrides={"kafka": {"replication_factor": 3, "min_insync_replicas": 2}})

    prefix, victim = co.pick_prefix(admin, lambda p: router_group(config(p).load(), "r1"), lambda n: True)
    cf = config(prefix)
    cfg = cf.load()
    group, topic = router_group(cfg, "r1"), cfg.topic("writes", "r1")
    co.create_led_away(admin, topic, PARTITIONS, nodes, victim, config=topic_configs(cfg)[topic])
    ensure_topics(cfg)

    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}
    services("router", cf.cli_args("router", "--no-health", "--metrics-port", "0"), env=env)
    before = wait_group(cluster.bootstrap, group, topic=topic, partitions=PARTITIONS, members=2, timeout=120)
    assert co.coordinator(admin, group) == victim
    produce_raw(cluster.bootstrap, topic, writes(range(0, 50)))
    wait_until(lambda: lr.count("r1", "users") == 50, timeout=60, what="the first writes applied")

    cluster.kill_node(victim)
    assert set(co.leaders(admin, topic).values()) <= set(nodes) - {victim}  # its partitions never moved
    # acks=all: confirmed once the controller fenced the dead node and it left the ISR
    produce_raw(cluster.bootstrap, topic, writes(range(50, 100)))
    wait_until(lambda: lr.count("r1", "users") == 100, timeout=90,
               what="writes produced after the kill applied while the node is down")
    assert not cluster.node(victim).running()
    after = wait_until(lambda: group_members(cluster.bootstrap, group, topic), timeout=60,
                       what="the new coordinator describes the group")
    assert co.coordinator(AdminClient({"bootstrap.servers": cluster.bootstrap}), group) != victim  # it moved
    # the same members own the same partitions: nobody gave up its partitions and rejoined
    assert after == before, (before, after)

    cluster.start_node(victim)
    produce_raw(cluster.bootstrap, topic, writes(range(100, 150)))
    wait_until(lambda: lr.count("r1", "users") == 150, timeout=90, what="every write applied after the node's return")
    assert lr.count("r1", "regionguard_applied") == 150  # one inbox claim each
    assert lr.count("r1", "applies") == 150  # each row written once: nothing applied twice
