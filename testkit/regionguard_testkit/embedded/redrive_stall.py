"""Test kit: a ``regionguard dead-letters redrive`` that stalls between a batch's produce-ack and its commit.

::

    python -m regionguard_testkit.embedded.redrive_stall --stall-file PATH --batch N dead-letters redrive --config rg.yaml ...

runs the ordinary CLI with one change: the redrive's transactional producer,
when asked to add the consumer group's offsets to the transaction of commit
``N`` (0 is the run's first commit, of where it starts; 1 the first batch of
dead letters), writes ``PATH`` (JSON: batch) and hangs instead. By then that
batch's records are produced and acknowledged, but neither they nor the
group's offset are committed. A test waits for the file and SIGKILLs the
process inside that window, then checks that a rerun republishes every dead
letter exactly once. The product carries no hook for this: the seam (the
producer :func:`~regionguard.ops.deadletters.redrive.make_producer` returns)
is patched here, in the test process only, like :mod:`.stall` does for the router.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

log = logging.getLogger("regionguard_testkit.embedded.redrive_stall")

__all__ = ["StallingProducer", "install", "main"]


class StallingProducer:
    """Delegates to a confluent-kafka producer (a C type: its methods can't be patched); hangs in commit ``batch``."""

    def __init__(self, inner: Any, path: str, batch: int) -> None:
        self._inner, self._path, self._batch = inner, path, batch
        self._commits = 0  # send_offsets_to_transaction is called once per commit, in order

    def send_offsets_to_transaction(self, *args: Any, **kwargs: Any) -> Any:
        if self._commits == self._batch:
            with open(self._path, "w") as fh:
                json.dump({"batch": self._commits}, fh)
            log.warning("test kit: stalling after the batch's produce-ack, before its commit")
            while True:  # killed by the test
                time.sleep(1)
        self._commits += 1
        return self._inner.send_offsets_to_transaction(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def install(path: str, batch: int) -> None:
    """Wrap the redrive's transactional producer in a :class:`StallingProducer`."""
    from regionguard.ops.deadletters import redrive

    original = redrive.make_producer

    def make_stalling_producer(cfg: Any, **extra: Any) -> Any:
        producer = original(cfg, **extra)
        return StallingProducer(producer, path, batch) if "transactional.id" in extra else producer

    redrive.make_producer = make_stalling_producer


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 4 or argv[0] != "--stall-file" or argv[2] != "--batch" or not argv[3].isdigit():
        print("usage: python -m regionguard_testkit.embedded.redrive_stall --stall-file PATH --batch N <regionguard args>",
              file=sys.stderr)
        return 2
    install(argv[1], int(argv[3]))
    from regionguard.cli import main as cli_main

    return cli_main(argv[4:])


if __name__ == "__main__":
    sys.exit(main())
