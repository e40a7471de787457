"""Test kit: a regionguard command whose event loop can be wedged from outside.

::

    python -m regionguard_testkit.embedded.wedge router --config rg.yaml ...

runs the ordinary CLI with one change: SIGUSR1 blocks the main thread (where the
service's event loop runs) for an hour, as a deadlock or a blocking call on the
loop would. The process stays alive and its metrics thread keeps answering, so a
test can watch ``/livez`` turn 503. The product carries no hook for this: the
handler is installed here, in the test process only.
"""

from __future__ import annotations

import signal
import sys
import time

__all__ = ["main"]


def _wedge(_signum, _frame) -> None:
    # A Python signal handler runs on the main thread between bytecodes: inside the event loop.
    time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGUSR1, _wedge)
    from regionguard.cli import main as cli_main

    return cli_main(list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
