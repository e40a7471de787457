"""Test kit: a regionguard command whose router lanes pace their offset commits slowly.

::

    python -m regionguard_testkit.embedded.slow_commits --commit-interval SECONDS router --config rg.yaml ...

runs the ordinary CLI with one change: a lane sends its paced offset commits at
most once per ``SECONDS`` instead of ten times a second
(:mod:`regionguard.router.commits`). The lane's first commit still goes at once;
after it the broker's committed offsets lag what the lane has settled for that
long. A test uses it to make the pacer's window (normally 0.1 s) wide enough to
act inside it. The product carries no hook for this: the seam is patched here,
in the test process only.
"""

from __future__ import annotations

import functools
import sys

__all__ = ["install", "main"]


def install(interval_s: float) -> None:
    """Make every :class:`CommitPacer` the router's lanes build pace at ``interval_s``."""
    from regionguard.router import worker
    from regionguard.router.commits import CommitPacer

    worker.CommitPacer = functools.partial(CommitPacer, interval_s)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "--commit-interval":
        print("usage: python -m regionguard_testkit.embedded.slow_commits --commit-interval SECONDS "
              "<regionguard args>", file=sys.stderr)
        return 2
    install(float(argv[1]))
    from regionguard.cli import main as cli_main

    return cli_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main())
