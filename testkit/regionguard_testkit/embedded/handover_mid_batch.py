"""Test kit: a regionguard replayer whose lane gives its partitions up right after a batch's dead letters are delivered.

::

    python -m regionguard_testkit.embedded.handover_mid_batch --fired PATH replayer --config rg.yaml ...
    python -m regionguard_testkit.embedded.handover_mid_batch --fired PATH --before replayer --config rg.yaml ...

runs the ordinary CLI with one change: the first time a replayer lane has
delivered dead letters, it leaves its consumer group and joins it again before
the batch's commit, so its partitions are revoked and move to another lane of
the process (a real rebalance on the broker, as when a second lane joins at
start-up or a replayer stops). The batch in hand was handled for good; the
new owner must not read it again and publish its dead letters a second time.
In production the window is the few milliseconds between the dead letters'
acknowledgement and the commit (seen once under load); the seam makes it
certain. With ``--before`` the lane leaves after the batch's writes are applied
and before its dead letters are produced: the new owner dead-letters the batch,
so the old one must not. Once the lane has left, ``PATH`` is written, so a test can tell the
handover happened. The product carries no hook for this: it is patched here,
in the test process only.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

__all__ = ["install", "main"]

LEAVE_TIMEOUT_S = 30.0


def install(fired: Path, *, before: bool = False) -> None:
    from regionguard.replayer import worker

    deliver = worker.ReplayWorker._dead_letters
    done = {"left": False}

    async def _dead_letters(self, dead, gen, stop, **kw):
        if not before:
            await deliver(self, dead, gen, stop, **kw)
        if dead and not done["left"]:
            done["left"] = True
            _leave_and_rejoin(self)
            fired.write_text(f"lane {self.lane}\n")
        if before:
            await deliver(self, dead, gen, stop, **kw)

    worker.ReplayWorker._dead_letters = _dead_letters


def _leave_and_rejoin(lane) -> None:
    """Unsubscribe and serve the revocation (blocking this loop, as a rebalance callback does), then subscribe again."""
    lane.consumer.unsubscribe()
    deadline = time.monotonic() + LEAVE_TIMEOUT_S
    while lane.assigned and time.monotonic() < deadline:
        lane.consumer.poll(0.1)  # serves the revoke callback; nothing is fetched once unsubscribed
    if lane.assigned:
        raise RuntimeError("the seam's lane was not revoked in time")
    lane.consumer.subscribe([lane.topic], on_assign=lane._on_assign, on_revoke=lane._on_revoke,
                            on_lost=lane._on_revoke)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "--fired":
        print("usage: python -m regionguard_testkit.embedded.handover_mid_batch --fired PATH [--before] "
              "<regionguard args>", file=sys.stderr)
        return 2
    fired, rest = Path(argv[1]), argv[2:]
    before = rest[:1] == ["--before"]
    install(fired, before=before)
    from regionguard.cli import main as cli_main

    return cli_main(rest[1:] if before else rest)


if __name__ == "__main__":
    sys.exit(main())
