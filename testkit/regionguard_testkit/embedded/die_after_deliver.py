"""Test kit: a regionguard router that dies right after a batch's held copies or dead letters are delivered.

::

    python -m regionguard_testkit.embedded.die_after_deliver --when held router --config rg.yaml ...
    python -m regionguard_testkit.embedded.die_after_deliver --when dead router --config rg.yaml ...

runs the ordinary CLI with one change: the first time a router lane's
deliver stage has Kafka's acknowledgement for a held copy (``--when held``)
or a dead letter (``--when dead``), the process ends with ``os._exit(70)`` --
no exception, no cleanup, no offset commit, as a SIGKILL or an OOM kill
between the deliver and the commit stages would. The batch's records are then
in the held or dead-letter topic while their source offsets are not
committed: the next owner reads them again. In production the window is the
few milliseconds before the commit pacer sends the commit; the seam makes it
certain. The product carries no hook for this: it is patched here, in the
test process only.
"""

from __future__ import annotations

import os
import sys

__all__ = ["EXIT_CODE", "install", "main"]

EXIT_CODE = 70
WHEN = ("held", "dead")


def install(when: str) -> None:
    """Patch the deliver stage the router's lanes call (``regionguard.router.worker.deliver``)."""
    from regionguard.router import worker

    original = worker.deliver

    async def deliver_then_die(producer, out, **kwargs):
        offsets = await original(producer, out, **kwargs)
        if when == "dead" and any(it.dead is not None for it in out.items):
            os._exit(EXIT_CODE)
        if when == "held" and any(it.dead is None and it.value is not None for it in out.items):
            os._exit(EXIT_CODE)
        return offsets

    worker.deliver = deliver_then_die


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "--when" or argv[1] not in WHEN:
        print("usage: python -m regionguard_testkit.embedded.die_after_deliver --when (held|dead) <regionguard args>",
              file=sys.stderr)
        return 2
    install(argv[1])
    from regionguard.cli import main as cli_main

    return cli_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main())
