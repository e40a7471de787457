"""Build regionguard config files for tests, benchmarks and the demo.

A unique topic prefix per config isolates tests that share one broker; the
consumer group ids derive from it, so concurrent tests never join each
other's groups. :class:`ConfigFile` bundles the written YAML with the helpers
a test needs next (topic names, ``--config`` argv, creating the topics).
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

if TYPE_CHECKING:
    from regionguard.core.config import Config

__all__ = ["DEFAULT_TABLES", "ConfigFile", "deep_merge", "make_config", "regions_config", "write_config"]

DEFAULT_TABLES: dict[str, dict[str, Any]] = {"users": {"key": ["id"], "version": "version"},
                                             "orders": {"key": ["id"]}}


class HasDsns(Protocol):
    def dsns(self) -> dict[str, str]: ...


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``extra`` merged in, recursing into nested mappings."""
    out = copy.deepcopy(dict(base))
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def regions_config(regions: HasDsns | Mapping[str, str], bootstrap: str, path: str | Path | None = None, *,
                   topic_prefix: str | None = None, partitions: int = 3,
                   tables: Mapping[str, Any] | None = None, fallbacks: bool = True,
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A regionguard config dict (``Config`` shape); also written as YAML to ``path`` if given.

    ``regions`` is a :class:`~regionguard_testkit.embedded.regions.LocalRegions` (its proxied
    DSNs are used) or ``{region: dsn}``. Each region's fallbacks are all other
    regions in ring order (eu -> [us, ap], us -> [ap, eu], ...). Metrics use
    port 0 (free port). ``overrides`` is deep-merged last.
    """
    dsns = dict(regions) if isinstance(regions, Mapping) else regions.dsns()
    names = list(dsns)
    prefix = topic_prefix or f"rgt{uuid.uuid4().hex[:10]}."
    data: dict[str, Any] = {
        "kafka": {"bootstrap": bootstrap, "topic_prefix": prefix, "partitions": partitions},
        "regions": {
            r: {"dsn": dsns[r],
                "fallbacks": [names[(i + j) % len(names)] for j in range(1, len(names))] if fallbacks else []}
            for i, r in enumerate(names)
        },
        "tables": copy.deepcopy(dict(tables or DEFAULT_TABLES)),
        "router": {"group_id": f"{prefix}router"},
        "replay": {"group_id": f"{prefix}replayer"},
        "metrics": {"port": 0},
    }
    if overrides:
        data = deep_merge(data, overrides)
    if path is not None:
        write_config(data, path)
    return data


def write_config(data: Mapping[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return p


@dataclass
class ConfigFile:
    """A written config: ``path`` and the ``data`` it holds."""

    path: Path
    data: dict[str, Any]
    regions: Any = field(default=None, repr=False)  # the LocalRegions it was built from, if any

    @property
    def prefix(self) -> str:
        return str(self.data["kafka"]["topic_prefix"])

    @property
    def bootstrap(self) -> str:
        return str(self.data["kafka"]["bootstrap"])

    @property
    def region_names(self) -> list[str]:
        return list(self.data["regions"])

    def topic(self, kind: str, region: str | None = None) -> str:
        """Same naming as ``Config.topic``: ``topic("writes", "eu")`` -> ``<prefix>writes.eu``."""
        return f"{self.prefix}{kind}.{region}" if region else f"{self.prefix}{kind}"

    def cli_args(self, *args: str) -> list[str]:
        """``[*args, "--config", path]`` for :class:`~regionguard_testkit.embedded.procs.ServiceProcess`."""
        return [*args, "--config", str(self.path)]

    def load(self) -> Config:
        """The validated ``regionguard`` Config (``$KAFKA_BOOTSTRAP`` override applied)."""
        from regionguard.core.config import load_config

        return load_config(self.path)

    def update(self, overrides: Mapping[str, Any]) -> ConfigFile:
        """Deep-merge ``overrides`` and rewrite the file."""
        self.data = deep_merge(self.data, overrides)
        write_config(self.data, self.path)
        return self

    def ensure_topics(self, timeout: float = 30.0) -> dict[str, tuple[int, bool]]:
        """Create every topic the config needs (existing ones are fine); return the plan."""
        from regionguard.core.config import parse_config
        from regionguard.core.kafka import ensure_topics, topic_plan

        cfg = parse_config(dict(self.data))
        ensure_topics(cfg, timeout=timeout)
        return dict(topic_plan(cfg))


def make_config(regions: HasDsns | Mapping[str, str], bootstrap: str, path: str | Path, *,
                create_topics: bool = True, **kwargs: Any) -> ConfigFile:
    """:func:`regions_config` written to ``path``, topics created (unless told not to)."""
    data = regions_config(regions, bootstrap, path, **kwargs)
    cf = ConfigFile(Path(path), data, regions if not isinstance(regions, Mapping) else None)
    if create_topics:
        cf.ensure_topics()
    return cf
