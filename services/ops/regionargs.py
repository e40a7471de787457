"""The regions an operator's command works on: ``--region R`` (repeatable) or every configured one."""

from __future__ import annotations

from ..core.config import Config, UsageError


def chosen_regions(cfg: Config, names: list[str] | None) -> list[str]:
    """``names`` checked against the config, or all its regions; an unknown one is a :class:`UsageError`."""
    regions = names or list(cfg.regions)
    unknown = [r for r in regions if r not in cfg.regions]
    if unknown:
        raise UsageError(f"--region: unknown region {unknown[0]!r} (configured: {', '.join(cfg.regions)})")
    return regions
