"""log.format json (issue 27): one JSON object per line, secrets scrubbed, context fields kept."""

from __future__ import annotations

import io
import json
import logging

import pytest

from regionguard.core import log as rglog
from regionguard.core.config import ConfigError, parse_config


@pytest.fixture
def captured():
    buf = io.StringIO()
    yield buf
    logging.getLogger().handlers[:] = []


def _setup(buf, **kw):
    rglog.setup_logging("router", **kw)
    logging.getLogger().handlers[0].setStream(buf)


def test_json_lines_with_service_level_and_context(captured):
    _setup(captured, fmt="json")
    logging.getLogger("regionguard.test").warning(
        "region %s down: postgresql://app:s3cret@db/app", "eu", extra={"region": "eu", "partition": 3})
    (line,) = captured.getvalue().splitlines()
    rec = json.loads(line)
    assert rec["service"] == "router" and rec["level"] == "WARNING" and rec["logger"] == "regionguard.test"
    assert rec["region"] == "eu" and rec["partition"] == 3 and "time" in rec
    assert "s3cret" not in line and rec["message"].startswith("region eu down")


def test_text_stays_one_line(captured):
    _setup(captured)
    logging.getLogger("regionguard.test").info("hello")
    (line,) = captured.getvalue().splitlines()
    assert line.endswith("router INFO regionguard.test: hello")


def test_the_format_is_checked_in_config():
    base = {"regions": {"eu": {"dsn": "postgresql://x@h/db"}}, "tables": {"t": {"key": ["id"]}}}
    assert parse_config({**base, "log": {"format": "json"}}).log.format == "json"
    with pytest.raises(ConfigError, match="log.format"):
        parse_config({**base, "log": {"format": "xml"}})
