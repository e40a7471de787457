"""fences.only_fences on the real broker: a held range is "only fences" exactly when it is.

The router reads with one consumer for every partition it checks, so a record
fetched for an earlier check (another partition) must never count: in the
chaos restart loop (tests/chaos/test_restart_loop.py) that kept three
partitions of a restarted router held for good. This test could not make
librdkafka hand out such a late record on demand (it passes without the
partition filter too); it pins down the function's answers on a real broker.
"""

from __future__ import annotations

from confluent_kafka import Consumer, Producer

from regionguard.core.held import H_FENCE
from regionguard.router.fences import only_fences


def _produce(bootstrap: str, topic: str, partition: int, kinds: str) -> list[int]:
    """``kinds``: one letter per record, ``f`` a fence, ``w`` a write; returns their offsets."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    offsets: list[int] = []
    for k in kinds:
        if k == "f":
            p.produce(topic, None, key=b"fence", partition=partition, headers=[(H_FENCE, b"t")],
                      on_delivery=lambda e, m: offsets.append(m.offset()))
        else:
            p.produce(topic, b'{"id": 1}', key=b"k", partition=partition,
                      on_delivery=lambda e, m: offsets.append(m.offset()))
        p.flush(10)  # one at a time: the offsets come back in order
    return offsets


def test_only_fences_reads_the_range_of_its_own_partition(rg_config, regions):
    cfg = rg_config(regions(["eu"]), partitions=2)
    topic = cfg.topic("held", "eu")
    p0 = _produce(cfg.bootstrap, topic, 0, "wwwfwwww")
    p1 = _produce(cfg.bootstrap, topic, 1, "wwfff")
    c = Consumer({"bootstrap.servers": cfg.bootstrap, "group.id": "scan-test", "enable.auto.commit": False})
    try:
        assert only_fences(c, topic, 0, p0[3], p0[3])            # a lone fence
        assert not only_fences(c, topic, 0, p0[2], p0[3])        # a write before it
        assert only_fences(c, topic, 1, p1[2], p1[4])            # after reading p0: p0's records don't count
        assert not only_fences(c, topic, 1, p1[1], p1[4])
        assert not only_fences(c, topic, 0, p0[3], p0[4])        # ends on a write
        assert only_fences(c, topic, 1, p1[4], p1[4])
    finally:
        c.close()
