"""The command line's conventions (issue 27): --version, exit codes in --help, consistent flags."""

from __future__ import annotations

import pytest

from regionguard import cli
from regionguard.core.config import UsageError, parse_config
from regionguard.core.service import parse_regions

CFG = parse_config({"regions": {r: {"dsn": "postgresql://x@h/db"} for r in ("eu", "us", "ap")},
                    "tables": {"users": {"key": ["id"]}}})


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("regionguard ")


def test_help_is_plain_text_and_lists_exit_codes():
    text = cli.build_parser().format_help()
    assert "``" not in text  # no reStructuredText markup
    for code in ("0  done", "1  a refused operation", "2  bad input"):
        assert code in text


def test_write_takes_an_ordering_key_and_documents_every_option():
    p = cli.build_parser("write")
    sub = next(a for a in p._actions if a.dest == "command").choices["write"]
    opts = {a.dest: a for a in sub._actions}
    assert "ordering_key" in opts
    undocumented = [d for d, a in opts.items() if d not in ("help",) and not a.help]
    assert not undocumented


@pytest.mark.parametrize("arg, repeated, want", [
    (None, None, ["eu", "us", "ap"]), ("eu,us", None, ["eu", "us"]), (None, ["us", "ap"], ["us", "ap"]),
    ("eu", ["ap"], ["ap", "eu"]),
])
def test_regions_repeated_or_comma_separated(arg, repeated, want):
    assert parse_regions(CFG, arg, repeated) == want


def test_an_unknown_region_is_one_line():
    with pytest.raises(UsageError, match="unknown region 'mars'"):
        parse_regions(CFG, None, ["mars"])
