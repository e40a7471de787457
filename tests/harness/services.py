"""Moved to :mod:`regionguard_testkit.embedded.procs`; re-exported for tests.

Tests keep the old behaviour: processes run in the repository root with it on
``PYTHONPATH``, so ``module=`` may name a module of the checkout (``tests.…``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from regionguard_testkit.embedded.procs import ServiceError
from regionguard_testkit.embedded.procs import ServiceProcess as _ServiceProcess

__all__ = ["ServiceProcess", "ServiceError"]

_REPO_ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess(_ServiceProcess):
    def __init__(self, name: str, argv: Any, env: Any = None, *, cwd: Any = None, start: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(name, argv, env, cwd=cwd or _REPO_ROOT, start=False, **kwargs)
        pypath = self.env.get("PYTHONPATH", "")
        if str(_REPO_ROOT) not in pypath.split(os.pathsep):
            self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), pypath) if p)
        if start:
            self.start()
