"""Test kit: a regionguard command whose router stalls inside its commit window.

::

    python -m regionguard_testkit.embedded.stall --stall-file PATH [--after failover] router --config rg.yaml ...

runs the ordinary CLI with one change: after a direct batch whose writes were
committed in the region's database (at least one not failed), the router
writes ``PATH`` (JSON: region, writes, duplicates) and sleeps, before its
offsets are committed. A test waits for the file and SIGKILLs the process
inside that window, then checks that the redelivered batch is skipped by the
inbox. With ``--after failover`` it stalls instead after failover writes were
applied in a fallback region (JSON: region, fallback, writes), before their
copies are held for home or any offset is committed. The product carries no
hook for this: the seam is patched here, in the test process only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

log = logging.getLogger("regionguard_testkit.embedded.stall")

__all__ = ["install", "install_after_failover", "main"]


def install(path: str) -> None:
    """Patch :meth:`DirectApply.apply_watched` (the batch's one transaction) to stall after it."""
    from regionguard.router.apply import DirectApply

    original = DirectApply.apply_watched

    async def apply_then_stall(self, writes, plan=None):
        res = await original(self, writes, plan)
        if len(writes) - len(res.failed) > 0:
            with open(path, "w") as fh:
                json.dump({"region": self.region, "writes": len(writes), "duplicates": res.duplicates}, fh)
            log.warning("test kit: stalling after DB commit, before offset commit")
            await asyncio.sleep(3600)
        return res

    DirectApply.apply_watched = apply_then_stall


def install_after_failover(path: str) -> None:
    """Patch :meth:`Divert._failover` (failover writes applied in a fallback) to stall after it."""
    from regionguard.router.divert import Divert

    original = Divert._failover

    async def failover_then_stall(self, fb, items):
        applied = await original(self, fb, items)
        if applied:
            with open(path, "w") as fh:
                json.dump({"region": self.region, "fallback": fb, "writes": len(applied)}, fh)
            log.warning("test kit: stalling after a failover apply, before holding it for home")
            await asyncio.sleep(3600)
        return applied

    Divert._failover = failover_then_stall


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "--stall-file":
        print("usage: python -m regionguard_testkit.embedded.stall --stall-file PATH [--after failover] "
              "<regionguard args>", file=sys.stderr)
        return 2
    path, rest = argv[1], argv[2:]
    if rest[:2] == ["--after", "failover"]:
        install_after_failover(path)
        rest = rest[2:]
    else:
        install(path)
    from regionguard.cli import main as cli_main

    return cli_main(rest)


if __name__ == "__main__":
    sys.exit(main())
