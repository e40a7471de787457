"""Test kit: a regionguard command whose router lanes pace their offset commits slowly.

::

    python -m regionguard_testkit.embedded.slow_commits --commit-interval SECONDS router --config rg.yaml ...
    python -m regionguard_testkit.embedded.slow_commits --replay-commit-delay SECONDS replayer --config rg.yaml ...

runs the ordinary CLI with one change. ``--commit-interval``: a router lane
sends its paced offset commits at most once per ``SECONDS`` instead of ten
times a second (:mod:`regionguard.router.commits`). The lane's first commit
still goes at once; after it the broker's committed offsets lag what the lane
has settled for that long. ``--replay-commit-delay``: every offset commit a
replayer lane sends from its commit thread waits ``SECONDS`` before it reaches
the broker, so the commit of a batch the lane has handled stays in flight that
long. A test uses them to
make a window that is normally milliseconds wide enough to act inside it. The
product carries no hook for this: the seam is patched here, in the test
process only.
"""

from __future__ import annotations

import functools
import sys
import threading
import time

from confluent_kafka import Consumer

__all__ = ["install", "install_replay_delay", "main"]


def install(interval_s: float) -> None:
    """Make every :class:`CommitPacer` the router's lanes build pace at ``interval_s``."""
    from regionguard.router import worker
    from regionguard.router.commits import CommitPacer

    worker.CommitPacer = functools.partial(CommitPacer, interval_s)


def install_replay_delay(delay_s: float) -> None:
    """Make every replayer lane's consumer wait ``delay_s`` before each offset commit."""
    from regionguard.replayer import worker

    class SlowCommits(Consumer):
        def commit(self, *args, **kwargs):
            # only the lane's commit thread: a commit in a rebalance callback runs on the event
            # loop, and holding it would stall the whole service, not widen the window
            if threading.current_thread() is not threading.main_thread():
                time.sleep(delay_s)
            return super().commit(*args, **kwargs)

    from regionguard.core import kafka

    made = worker.make_consumer

    def make_consumer(cfg, group, **extra):
        real, kafka.Consumer = kafka.Consumer, SlowCommits  # only the lanes' consumers are built here
        try:
            return made(cfg, group, **extra)
        finally:
            kafka.Consumer = real

    worker.make_consumer = make_consumer


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    seams = {"--commit-interval": install, "--replay-commit-delay": install_replay_delay}
    if len(argv) < 2 or argv[0] not in seams:
        print("usage: python -m regionguard_testkit.embedded.slow_commits "
              "(--commit-interval | --replay-commit-delay) SECONDS <regionguard args>", file=sys.stderr)
        return 2
    seams[argv[0]](float(argv[1]))
    from regionguard.cli import main as cli_main

    return cli_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main())
