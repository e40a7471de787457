"""core/racks.py: which rack a consumer names, and when a stretch cluster deserves a warning (pure)."""

from __future__ import annotations

from unittest import mock

import pytest

from regionguard.core.config import ConfigError, parse_config
from regionguard.core.racks import consumer_rack, fetch_warning, span_warnings

RACKS = {1: "r0", 2: "r1", 3: "r2"}


def _cfg(**kafka):
    return parse_config({"kafka": kafka, "regions": {r: {"dsn": "postgresql://x"} for r in ("r0", "r1", "r2")},
                         "tables": {"t": {"key": ["id"]}}})


def test_one_rack_for_every_consumer():
    cfg = _cfg(client_rack="r1")
    assert [consumer_rack(cfg, r) for r in ("r0", "r1", None)] == ["r1", "r1", "r1"]


def test_a_map_gives_each_regions_consumers_its_rack():
    cfg = _cfg(client_rack={"r0": "az-r0", "r1": "az-r1"})
    assert consumer_rack(cfg, "r0") == "az-r0"
    assert consumer_rack(cfg, "r2") is None  # not mapped: fetch from leaders
    assert consumer_rack(cfg, None) is None


def test_unset_and_kafka_client_override():
    assert consumer_rack(_cfg(), "r0") is None
    assert consumer_rack(_cfg(client_rack="r0", client={"client.rack": "r2"}), "r0") == "r2"


def test_client_rack_of_the_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError):
        _cfg(client_rack=["r0"])


def test_make_consumer_passes_client_rack():
    from regionguard.core import kafka

    with mock.patch.object(kafka, "Consumer") as consumer:
        kafka.make_consumer(_cfg(client_rack={"r0": "r0"}), "g", region="r0")
        assert consumer.call_args.args[0]["client.rack"] == "r0"
        kafka.make_consumer(_cfg(), "g", region="r0")
        assert "client.rack" not in consumer.call_args.args[0]


@pytest.mark.parametrize("racks, brokers, says", [
    (["r0"], RACKS.values(), None),                       # fetches in its own region
    ([None], [None, None, None], None),                   # no racks on brokers: no stretch
    ([], [None], None),
    ([None], RACKS.values(), "kafka.client_rack is unset"),
    (["r0", None], RACKS.values(), "kafka.client_rack is unset"),
    (["eu"], RACKS.values(), "kafka.client_rack eu names no broker rack (r0, r1, r2)"),
    (["r0", "r1"], RACKS.values(), "serves regions in racks r0, r1"),
    (["r1", "r1"], RACKS.values(), None),                 # two regions served from one rack
])
def test_fetch_warning(racks, brokers, says):
    line = fetch_warning(racks, brokers, "router")
    if says is None:
        assert line is None
    else:
        assert line is not None and says in line and line.startswith("router: ") and "\n" not in line


def test_span_warnings_one_line_per_topic_whose_replicas_sit_in_one_rack():
    replicas = {"rg.writes.r0": [[1, 2, 3], [2, 3, 1]],
                "rg.held.r0": [[1, 2, 3], [1], [1]],         # two bad partitions: one line for the topic
                "rg.writes.r1": [[2]]}
    lines = span_warnings(replicas, RACKS)
    assert [line.split(":")[0] for line in lines] == ["topic rg.held.r0", "topic rg.writes.r1"]
    assert "partition 1's replicas are all in rack r0" in lines[0]


def test_span_warnings_two_brokers_in_one_rack_still_one_rack():
    assert span_warnings({"rg.writes.r0": [[1, 4]]}, {**RACKS, 4: "r0"})


def test_span_warnings_silent_without_racks():
    assert span_warnings({"rg.writes.r0": [[1]]}, {1: None, 2: None}) == []


def test_rack_report_lines_and_cross_region():
    from regionguard.core.racks import RackReport

    assert RackReport().lines() == [] and not RackReport().cross_region
    r = RackReport(fetch="router: x", spans=("topic a: y", "topic b: z"))
    assert r.cross_region and r.lines() == ["router: x", "topic a: y", "topic b: z"]
    unchecked = RackReport(unchecked="router: racks not checked")
    assert unchecked.lines() == ["router: racks not checked"] and not unchecked.cross_region
