"""Which topics a regionguard config needs, and creating them up front.

tansu gives auto-created topics a different partition count, and held
partitions must line up with source partitions, so tests create every topic
before a service starts. The plan comes from the services'
``regionguard.core.kafka.topic_plan`` when it is importable, so tests and
services cannot drift apart; :func:`_own_plan` is the fallback with the same
shape (``name -> (partitions, compacted)``), used e.g. while that module is
being written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .broker import create_topics

__all__ = ["topic_plan", "ensure_plan_topics"]

_SINGLE = ("failover-events", "dead-letter", "control", "observations")
_COMPACTED = ("region-state", "features")


def _own_plan(cfg: Mapping[str, Any]) -> dict[str, tuple[int, bool]]:
    kafka = cfg.get("kafka", {})
    prefix = kafka.get("topic_prefix", "rg.")
    n = int(kafka.get("partitions", 12))
    plan: dict[str, tuple[int, bool]] = {}
    for region in cfg["regions"]:
        plan[f"{prefix}writes.{region}"] = (n, False)
        plan[f"{prefix}held.{region}"] = (n, False)
    for kind in _COMPACTED:
        plan[f"{prefix}{kind}"] = (1, True)
    for kind in _SINGLE:
        plan[f"{prefix}{kind}"] = (1, False)
    return plan


def topic_plan(cfg: Mapping[str, Any]) -> dict[str, tuple[int, bool]]:
    """Every topic of the config dict ``cfg``: ``{name: (partitions, compacted)}``."""
    try:
        from regionguard.core.config import parse_config
        from regionguard.core.kafka import topic_plan as services_plan
    except ImportError:
        return _own_plan(cfg)
    return dict(services_plan(parse_config(dict(cfg))))


def ensure_plan_topics(cfg: Mapping[str, Any], *, timeout: float = 30.0) -> dict[str, tuple[int, bool]]:
    """Create all topics of ``cfg`` on ``cfg["kafka"]["bootstrap"]`` (existing ones are fine); return the plan."""
    plan = topic_plan(cfg)
    try:
        from regionguard.core.config import parse_config
        from regionguard.core.kafka import ensure_topics
    except ImportError:
        kafka = cfg["kafka"]
        create_topics(kafka["bootstrap"], {n: p for n, (p, _) in plan.items()},
                      {n for n, (_, c) in plan.items() if c}, timeout=timeout,
                      client_conf=kafka.get("client") or None)
    else:
        ensure_topics(parse_config(dict(cfg)), timeout=timeout)
    return plan
