"""Logging set-up shared by every service: one line per record, secrets scrubbed; librdkafka's logger."""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback

from .dsn import redact_dsn


#: Values that config references resolved to (core/refs.py): secrets kept out of the YAML file,
#: so kept out of every log line too. Shorter values are not scrubbed: they would blank ordinary
#: words, and a secret that short is no secret.
_SECRETS: set[str] = set()
SECRET_MIN_LEN = 4


def add_secrets(values) -> None:
    """Scrub these values (as ``***``) from every log line from now on."""
    _SECRETS.update(v for v in values if len(v) >= SECRET_MIN_LEN)


def scrub(text: object) -> str:
    """``text`` without DSN passwords nor values from config references."""
    s = redact_dsn(text)
    for secret in sorted(_SECRETS, key=len, reverse=True):  # a longer one may hold a shorter one
        s = s.replace(secret, "***")
    return s


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = scrub(msg)
        if record.exc_info and record.exc_info[1] is not None:
            if record.levelno <= logging.DEBUG:
                # DEBUG keeps the traceback (redacted: it could quote a DSN)
                clean = f"{clean}\n{scrub(''.join(traceback.format_exception(*record.exc_info)).rstrip())}"
            else:
                # every other level: one redacted line (core/supervise.py logs the traceback at DEBUG)
                clean = f"{clean}: {scrub(repr(record.exc_info[1]))}"
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = clean, ()
        return True


class _RateLimit(logging.Filter):
    """librdkafka repeats connection errors every reconnect; keep one per ``every`` seconds."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__()
        self.every = every
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = str(record.msg)[:40]
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.every:
            return False
        self._last[key] = now
        return True


# The logger every confluent-kafka client of ours hands to librdkafka (``"logger": rdkafka_log``).
rdkafka_log = logging.getLogger("regionguard.rdkafka")
rdkafka_log.addFilter(_RateLimit())


#: Fields a log call may pass in ``extra=`` that the JSON format puts in their own keys.
CONTEXT_FIELDS = ("region", "partition", "write_id")


def _json_formatter(service: str) -> logging.Formatter:
    """One JSON object per line, by python-json-logger (a well-kept library, not our own encoder)."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                         static_fields={"service": service}, timestamp=False)


def setup_logging(service: str, level: str | None = None, fmt: str = "text") -> logging.Logger:
    """Log to stderr: ``fmt`` is ``text`` (one line per record) or ``json`` (config ``log.format``).

    Called again once the config is loaded, to take its format; secrets are scrubbed either way.
    """
    level = level or os.environ.get("REGIONGUARD_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_json_formatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "faust", "mode", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return logging.getLogger(f"regionguard.{service}")
