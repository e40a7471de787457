"""Where consumers fetch from and where replicas live, on a Kafka cluster stretched over regions.

docs/topology.md recommends one Kafka cluster over three regions, a broker (or more) per region
with ``broker.rack`` = region, and consumers with ``client.rack`` so they fetch from the replica
in their own region (KIP-392). This module decides, from the config and the cluster's brokers,
which rack a consumer names and when to warn: a router or replayer that would fetch across
regions, a writes or held topic whose replicas all sit in one rack (losing that region loses the
partition). The decisions are pure; :func:`rack_report` only gathers what they need.
Ours by hand: no library knows regionguard's topics or its region -> rack map.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .config import Config


def consumer_rack(cfg: Config, region: str | None = None) -> str | None:
    """The ``client.rack`` of a consumer of ``region``'s topics (None: fetch from leaders)."""
    user = cfg.kafka.client.get("client.rack")  # kafka.client wins over everything but guarantees
    if user not in (None, ""):
        return str(user)
    rack = cfg.kafka.client_rack
    if isinstance(rack, Mapping):
        return rack.get(region) if region is not None else None
    return rack or None


def fetch_warning(racks: Sequence[str | None], broker_racks: Iterable[str | None], service: str) -> str | None:
    """One line when a service's consumers (one rack each, None = unset) will fetch across regions.

    ``broker_racks``: the ``broker.rack`` of every broker; none set means no stretch, no warning.
    """
    known = sorted({r for r in broker_racks if r})
    if not known:
        return None
    if not racks or any(r is None for r in racks):
        return (f"{service}: kafka.client_rack is unset while the brokers have racks ({', '.join(known)}): "
                "its consumers fetch from partition leaders in any region (docs/topology.md)")
    unknown = sorted({r for r in racks if r not in known})
    if unknown:
        return (f"{service}: kafka.client_rack {', '.join(unknown)} names no broker rack ({', '.join(known)}): "
                "its consumers fetch from partition leaders in any region (docs/topology.md)")
    if len(set(racks)) > 1:
        return (f"{service}: serves regions in racks {', '.join(sorted(set(racks)))}: the consumers of all "
                "but one fetch across regions (run one per region, docs/topology.md)")
    return None


def span_warnings(replicas: Mapping[str, Sequence[Sequence[int]]],
                  broker_racks: Mapping[int, str | None]) -> list[str]:
    """One line per topic with a partition whose replicas are not in at least two racks.

    ``replicas``: topic -> each partition's replica broker ids. No rack on any broker: nothing to say.
    """
    if not any(broker_racks.values()):
        return []
    out = []
    for topic in sorted(replicas):
        for part, ids in enumerate(replicas[topic]):
            racks = {broker_racks.get(i) or "?" for i in ids}
            if len(racks) < 2:
                out.append(f"topic {topic}: partition {part}'s replicas are all in rack {', '.join(sorted(racks))}: "
                           "losing that region loses the partition (replicas must span at least two racks)")
                break
    return out


def broker_racks(admin: Any, timeout: float) -> dict[int, str | None]:
    """Broker id -> ``broker.rack`` (None when unset), from DescribeCluster."""
    desc = admin.describe_cluster(request_timeout=timeout).result(timeout=timeout)
    return {n.id: (n.rack or None) for n in desc.nodes}


@dataclass(frozen=True)
class RackReport:
    """What the start-up check found: the cross-region fetch line (None: fetches stay in the
    region), the one-rack topic lines, and a line when the cluster could not be asked."""

    fetch: str | None = None
    spans: tuple[str, ...] = ()
    unchecked: str | None = None

    @property
    def cross_region(self) -> bool:
        return self.fetch is not None

    def lines(self) -> list[str]:
        return [line for line in (self.unchecked, self.fetch, *self.spans) if line]


def rack_report(cfg: Config, admin: Any, metadata: Any, *, service: str, regions: Sequence[str] | None,
                timeout: float) -> RackReport:
    """The start-up check: cross-region fetches of ``service`` (serving ``regions``; None: no
    consumer to check) and writes/held topics whose replicas do not span two racks."""
    racks = broker_racks(admin, timeout)
    fetch = None
    if regions is not None:
        fetch = fetch_warning([consumer_rack(cfg, r) for r in regions], racks.values(), service)
    names = [cfg.topic(kind, r) for r in cfg.regions for kind in ("writes", "held")]
    md = metadata.topics
    replicas = {n: [md[n].partitions[p].replicas for p in sorted(md[n].partitions)]
                for n in names if n in md and md[n].error is None and md[n].partitions}
    return RackReport(fetch=fetch, spans=tuple(span_warnings(replicas, racks)))


def startup_rack_report(cfg: Config, *, service: str, regions: Sequence[str] | None,
                        timeout: float = 30.0) -> RackReport:
    """Blocking: :func:`rack_report` against ``kafka.bootstrap``; a cluster that does not answer
    DescribeCluster (ACLs, an old broker) gives one line saying the rack checks did not run."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(cfg.kafka_client_conf())
    try:
        return rack_report(cfg, admin, admin.list_topics(timeout=timeout), service=service, regions=regions,
                           timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - a warning about warnings must not stop a service
        return RackReport(unchecked=f"{service}: racks not checked: cannot describe the cluster "
                                    f"({type(exc).__name__})")


__all__ = ["RackReport", "broker_racks", "consumer_rack", "fetch_warning", "rack_report",
           "span_warnings", "startup_rack_report"]
