"""``regionguard dead-letters list|redrive``: see what was dead-lettered, and send it again once the cause is fixed.

``list [--reason R] [--since T] [--json]`` prints the dead letters (one line, or
one JSON object, each). ``redrive --reason R [--since T] [--dry-run]``
republishes the exact original bytes of each dead letter of reason R to its
writes topic (same key, same partition) with the header ``rg-redrive-count``,
refuses and reports those already redriven ``dead_letters.max_redrives`` times,
and keeps its progress in the consumer group ``<prefix>redrive.<R>``, so a
rerun resumes and never republishes a dead letter twice (:mod:`.redrive`).

Bad input (an unknown reason, a malformed --since, an unreachable broker) is a
one-line error and exit code 2, with nothing republished or committed.
Exit code 1: the redrive finished but refused some dead letters.
"""

from __future__ import annotations

import argparse

from ...core.config import UsageError, load_config
from .plan import REASONS, parse_reason, parse_since

__all__ = ["add_arguments", "main"]

SINCE_HELP = "only dead letters written at or after T: ISO 8601 (2026-11-26T10:00:00Z; no zone = UTC) or an age (90s, 15m, 2h, 3d, 1w)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="dl_command", metavar="ACTION")
    sub.required = True
    ls = sub.add_parser("list", help="print the dead letters", description="Print the dead letters, oldest first.")
    rd = sub.add_parser("redrive", help="republish dead letters of one reason to their writes topic",
                        description="Republish the exact original bytes of the dead letters of one reason to "
                                    "their writes topic, at most dead_letters.max_redrives times per write, "
                                    "exactly once per dead letter.")
    for sp in (ls, rd):
        # also after the action: `regionguard dead-letters list --config F`
        sp.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="YAML config (default: $REGIONGUARD_CONFIG)")
        sp.add_argument("--since", metavar="T", help=SINCE_HELP)
    ls.add_argument("--reason", metavar="R", help=f"only this reason ({', '.join(REASONS)})")
    ls.add_argument("--json", action="store_true", help="one JSON object per line (the DeadLetter fields and "
                                                        "dead_letter_partition, dead_letter_offset, redrive)")
    rd.add_argument("--reason", metavar="R", help=f"the reason to redrive (required: {', '.join(REASONS)})")
    rd.add_argument("--dry-run", action="store_true", help="print what would be redriven and refused; "
                                                           "republish and commit nothing")
    rd.add_argument("--json", action="store_true", help="one JSON object per refused (or, with --dry-run, "
                                                        "would-be-redriven) dead letter, then a summary object")
    rd.add_argument("--batch-size", type=int, default=500, metavar="N",
                    help="dead letters per transaction (default 500)")


def main(args: argparse.Namespace) -> int:
    # arguments first: a bad one fails before any broker is contacted
    since = parse_since(args.since)
    if args.dl_command == "list":
        reason = parse_reason(args.reason)
    else:
        reason = parse_reason(args.reason, required=True)
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
    cfg = load_config(args.config)
    from .redrive import run_list, run_redrive

    if args.dl_command == "list":
        return run_list(cfg, reason=reason, since=since, as_json=args.json)
    return run_redrive(cfg, reason=reason, since=since, dry_run=args.dry_run, batch=args.batch_size,
                       as_json=args.json)
