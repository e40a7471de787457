"""Test kit: a regionguard replayer whose reader is reset once, right after a batch's dead letters are delivered.

::

    python -m regionguard_testkit.embedded.reset_mid_batch replayer --config rg.yaml ...

runs the ordinary CLI with one change: the first time a replayer lane has
delivered dead letters, its read-ahead is invalidated, as a resume, a re-seek or
a record polled while serving callbacks would do at any moment. The batch in
hand then reaches its commit with the reader reset under it. In production the
window is a few milliseconds (seen once in CI, at a replayer's start); the seam
makes it certain. The product carries no hook for this: it is patched here, in
the test process only.
"""

from __future__ import annotations

import sys

__all__ = ["install", "main"]


def install() -> None:
    from regionguard.replayer import worker

    deliver = worker.ReplayWorker._dead_letters
    done = {"reset": False}

    async def _dead_letters(self, dead, gen, stop, **kw):
        await deliver(self, dead, gen, stop, **kw)
        if dead and not done["reset"]:
            done["reset"] = True
            self.reader.invalidate()

    worker.ReplayWorker._dead_letters = _dead_letters


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    install()
    from regionguard.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
