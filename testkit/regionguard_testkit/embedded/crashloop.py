"""Test kit: a regionguard command that dies outright when it decodes a record carrying a magic string.

::

    python -m regionguard_testkit.embedded.crashloop --magic TEXT router --config rg.yaml ...

runs the ordinary CLI with one change: decoding a write whose bytes contain
``TEXT`` ends the process with ``os._exit(70)`` -- no exception, no cleanup,
no offset commit, as a segfault in a C extension or an OOM kill would. A
test restarts the process whenever it dies (as a supervisor would) and
checks that the crash-loop guard dead-letters the record and moves on. The
product carries no hook for this: the seam is patched here, in the test
process only.
"""

from __future__ import annotations

import os
import sys

__all__ = ["EXIT_CODE", "install", "main"]

EXIT_CODE = 70


def install(magic: bytes) -> None:
    """Patch the decoder the router's and the replayer's lanes call."""
    from regionguard.replayer import worker as replayer_worker
    from regionguard.router import worker as router_worker

    for module in (router_worker, replayer_worker):
        original = module.decode_write

        def decode_or_die(value, *args, _original=original, **kwargs):
            if value is not None and magic in value:
                os._exit(EXIT_CODE)
            return _original(value, *args, **kwargs)

        module.decode_write = decode_or_die


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 2 or argv[0] != "--magic":
        print("usage: python -m regionguard_testkit.embedded.crashloop --magic TEXT <regionguard args>",
              file=sys.stderr)
        return 2
    install(argv[1].encode())
    from regionguard.cli import main as cli_main

    return cli_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main())
