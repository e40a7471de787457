"""The regionguard command: one entry point, one subcommand per job.

Each subcommand lives in its own module, which provides
``add_arguments(parser)`` and ``main(args) -> int``; they are imported only
when chosen, so ``regionguard write`` doesn't pay for faust. Expected
problems (bad config, bad arguments, unreachable broker) print one line to
stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

from .core.config import ConfigError, UsageError  # noqa: F401 - UsageError is re-exported
from .core.startup import KafkaUnreachable

COMMANDS: dict[str, tuple[str, str]] = {
    "health": ("regionguard.health.service", "probe regions, run breakers, publish region state"),
    "router": ("regionguard.router.service", "apply writes to healthy regions, hold the rest"),
    "replayer": ("regionguard.replayer.service", "replay held writes into recovered regions"),
    "features": ("regionguard.features.service", "publish feature flags from region states"),
    "status": ("regionguard.ops.status", "live view of regions, backlogs and events"),
    "write": ("regionguard.client.producer", "publish one write event"),
    "breaker": ("regionguard.health.admin", "force-open, disable or release a region's breaker"),
    "schemas": ("regionguard.ops.schemas", "write JSON Schemas of the events to schemas/"),
    "inbox": ("regionguard.ops.inboxadmin", "prune old inbox rows and delete tombstones (inbox prune [--dry-run])"),
    "demo": ("regionguard.ops.demo", "run the embedded failover drill (no config needed)"),
    "drill": ("regionguard.ops.drill", "inject a fault into a running local setup"),
    "config": ("regionguard.ops.configcheck", "check a config offline, or against Kafka and every region (config check [--connect])"),
    "grants": ("regionguard.ops.grants", "print the PostgreSQL roles and grants of each service, per region"),
    "acls": ("regionguard.ops.acls", "print (or --apply) the least Kafka ACLs of each principal"),
    "dead-letters": ("regionguard.ops.deadletters", "list dead letters, redrive them once fixed (list | redrive --reason R)"),
}


EPILOG = """exit codes:
  0  done
  1  a refused operation (a redrive past its loop guard, say)
  2  bad input (config, arguments) or an unreachable dependency
  130 interrupted

Every command takes --config FILE (default: $REGIONGUARD_CONFIG); "regionguard COMMAND --help"
lists its options. Docs: docs/contract.md and docs/operations.md in the repository."""


def _version() -> str:
    try:
        return importlib.metadata.version("regionguard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """All subcommands; only ``chosen`` gets its module imported for its options."""
    parser = argparse.ArgumentParser(prog="regionguard", description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"regionguard {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", metavar="FILE", help="YAML config (default: $REGIONGUARD_CONFIG)")
        p.set_defaults(_module=module)
        if name != chosen:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("regionguard"):
                raise
            p.set_defaults(_missing=True)
            continue
        add = getattr(mod, "add_arguments", None)
        if add:
            add(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen is None and argv and argv[0] in ("--version", "-V"):
        print(f"regionguard {_version()}")
        return 0
    args = build_parser(chosen).parse_args(argv)
    if getattr(args, "_missing", False):
        print(f"regionguard: {args.command} is not available in this build", file=sys.stderr)
        return 2
    mod = importlib.import_module(args._module)
    try:
        return int(mod.main(args) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"regionguard {args.command}: {exc}", file=sys.stderr)
        return 2
    except KafkaUnreachable as exc:
        print(f"regionguard {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
