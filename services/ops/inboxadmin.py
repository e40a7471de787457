"""``regionguard inbox prune``: prune (or count, with ``--dry-run``) old inbox rows and tombstones.

The router does this in the background (``inbox.prune``); this is the
operator's way to see what it would delete, or to prune with the router off.
Prints one line per region; a bad region name or an unreachable database is a
one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import asyncpg

from ..core.config import UsageError, load_config, statement_cache_size
from ..core.dsn import dsn_host
from ..core.inbox import count_old, describe_age, prune, retention_s
from .regionargs import chosen_regions


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="inbox_command", metavar="ACTION")
    sub.required = True
    pr = sub.add_parser("prune", help="delete inbox rows and tombstones older than inbox.retention_s",
                        description="Delete (or count, with --dry-run) rows of regionguard_applied and "
                                    "regionguard_tombstones older than the inbox retention, per region.")
    # also after the action: `regionguard inbox prune --config F`
    pr.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                    help="YAML config (default: $REGIONGUARD_CONFIG)")
    pr.add_argument("--region", action="append", metavar="R",
                    help="only this region (repeatable; default: every configured region)")
    pr.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    pr.add_argument("--json", action="store_true", help="one JSON object per region: region, inbox, "
                                                        "tombstones, older_than_s, dry_run")


async def _one(cfg, region: str, *, dry_run: bool, as_json: bool = False) -> str:
    dsn = cfg.regions[region].dsn
    age = retention_s(cfg)
    try:
        conn = await asyncpg.connect(dsn, timeout=max(5.0, cfg.health.timeout_s * 10), command_timeout=300,
                                     statement_cache_size=statement_cache_size(cfg, region))
    except Exception as exc:  # noqa: BLE001 - reported as one line
        raise UsageError(f"region {region}: cannot connect to {dsn_host(dsn)}: {_why(exc)}") from None
    try:
        if dry_run:
            n = await count_old(conn, age)
            verb = "would be deleted (dry run)"
        else:
            n = await prune(conn, age, batch=cfg.inbox.prune_batch, region=region)
            verb = "deleted"
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"region {region}: {_why(exc)}") from None
    finally:
        try:
            await conn.close(timeout=2)
        except Exception:  # noqa: BLE001 - closing a broken connection; the result is already known
            conn.terminate()
    if as_json:
        return json.dumps({"region": region, "inbox": n.inbox, "tombstones": n.tombstones, "older_than_s": age,
                           "dry_run": dry_run})
    return (f"{region}: {n.inbox} inbox rows and {n.tombstones} tombstones older than "
            f"{describe_age(age)} {verb}")


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    regions = chosen_regions(cfg, args.region)

    async def run() -> int:
        rc = 0
        for region in regions:
            try:
                print(await _one(cfg, region, dry_run=args.dry_run, as_json=args.json), flush=True)
            except UsageError as exc:
                print(f"regionguard inbox: {exc}", file=sys.stderr, flush=True)
                rc = 2
        return rc

    return asyncio.run(run())
