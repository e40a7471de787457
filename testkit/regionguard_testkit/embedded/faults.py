"""Test kit: a regionguard command whose router or replayer fails on a marked record.

::

    python -m regionguard_testkit.embedded.faults --marker TEXT router --config rg.yaml ...

runs the ordinary CLI with one change: a stage that no error of a record should
reach (the router's sort stage, the replayer's dead-end check) raises
``RuntimeError`` whenever the batch in hand holds a record whose value contains
``TEXT``. It stands for the error nobody foresaw: the rule for the unknown
(issue 25) must isolate that record as a ``poison`` dead letter and keep the
service and its partitions moving. The product carries no hook for this: the
seam is patched here, in the test process only (as :mod:`.stall` does).
"""

from __future__ import annotations

import sys

__all__ = ["install", "main"]


def install(marker: bytes) -> None:
    from regionguard.replayer import worker as replayer_worker
    from regionguard.router import worker as router_worker

    original_sort = router_worker.sort_batch

    def sort_or_fail(batch, decoded, *args, **kwargs):
        if any(rec.value and marker in rec.value for rec in batch):
            raise RuntimeError("test kit: a stage failed on a marked record")
        return original_sort(batch, decoded, *args, **kwargs)

    router_worker.sort_batch = sort_or_fail

    cls = replayer_worker.ReplayWorker
    original_dead_end = cls._dead_end

    def dead_end_or_fail(self, rec, w, now):
        if w.meta and w.meta.get("rg_test") == marker.decode():
            raise RuntimeError("test kit: the replayer failed on a marked record")
        return original_dead_end(self, rec, w, now)

    cls._dead_end = dead_end_or_fail


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "--marker":
        print("usage: python -m regionguard_testkit.embedded.faults --marker TEXT <regionguard args>", file=sys.stderr)
        return 2
    install(argv[1].encode())
    from regionguard.cli import main as cli_main

    return cli_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main())
