"""The rack check a router or replayer runs at start (docs/topology.md), with its gauge.

The decisions live in :mod:`regionguard.core.racks` (in the client distribution, whose consumers
name their ``client.rack`` from it); this service half logs them and sets
``regionguard_cross_region_fetch``, a service metric the client must not carry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import metrics
from .config import Config
from .racks import RackReport, startup_rack_report


def report_at_start(cfg: Config, service: str, regions: Sequence[str], log: Any) -> RackReport:
    """Blocking: the check a router or replayer runs at start: its lines logged as warnings (one
    each), ``regionguard_cross_region_fetch{region, service}`` set for every region it serves."""
    report = startup_rack_report(cfg, service=service, regions=regions)
    for line in report.lines():
        log.warning(line)
    for region in regions:
        metrics.CROSS_REGION_FETCH.labels(region=region, service=service).set(1 if report.cross_region else 0)
    return report
