"""Every command that prints data takes ``--json`` (issue 27: CLI conventions). Parser only, no I/O."""

from __future__ import annotations

import pytest

from regionguard.cli import build_parser

#: command line (without --json) -> what it prints; services print logs, not data
DATA_COMMANDS = [
    ["status", "--once"],
    ["write", "--region", "eu", "--table", "t", "--op", "upsert", "--key", "id=1"],
    ["breaker", "release", "eu"],
    ["schemas", "--check"],
    ["inbox", "prune"],
    ["dead-letters", "list"],
    ["dead-letters", "redrive", "--reason", "schema"],
    ["drill", "--region", "eu", "--fault", "refuse"],
    ["config", "check"],
    ["grants"],
    ["acls"],
]


@pytest.mark.parametrize("argv", DATA_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_data_command_takes_json(argv):
    args = build_parser(argv[0]).parse_args([*argv, "--json"])
    assert args.json is True
