"""The image's HEALTHCHECK: GET /livez on the metrics port of the service this container runs.

One image runs every service, each on its own port (``metrics.port`` plus the
service's offset, or ``--metrics-port``), so the port is read from PID 1's
command line (``regionguard router --config ... [--metrics-port N]``).
``REGIONGUARD_LIVEZ_PORT`` overrides it (needed when ``metrics.port`` is not
9400). Standard library only: it runs with the image's Python, outside the
package, and must not import regionguard (a broken install should fail the
check, not the checker). Exit 0 healthy, 1 not: Docker's contract.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

BASE_PORT = 9400
# services/core/metrics.py SERVICE_PORT_OFFSET; the status exporter has no offset (it needs --metrics-port)
OFFSETS = {"health": 0, "router": 1, "replayer": 2, "features": 3}


def livez_port(argv: list[str], env: dict[str, str]) -> int | None:
    """The port to probe: the override, else ``--metrics-port``, else the service's default."""
    if env.get("REGIONGUARD_LIVEZ_PORT"):
        return int(env["REGIONGUARD_LIVEZ_PORT"])
    for i, arg in enumerate(argv):
        if arg == "--metrics-port" and i + 1 < len(argv):
            return int(argv[i + 1])
        if arg.startswith("--metrics-port="):
            return int(arg.split("=", 1)[1])
    # argv[0] is the interpreter and argv[1] the console script: the service is the first known word
    service = next((a for a in argv if a in OFFSETS), None)
    return None if service is None else BASE_PORT + OFFSETS[service]


def main() -> int:
    try:
        with open("/proc/1/cmdline", "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
        port = livez_port(argv, dict(os.environ))
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    if port is None:
        return 0  # not a long-running service (e.g. `regionguard --help`): nothing to check
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: /livez on port {port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
