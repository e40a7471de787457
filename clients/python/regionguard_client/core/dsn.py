"""Keep DSN passwords out of logs, errors and events.

Everything that may print a DSN goes through :func:`redact_dsn`, and the
logging filter in :mod:`regionguard_client.core.log` scrubs any that slip through.
"""

from __future__ import annotations

import os
import re

# scheme://user:password@host; ?password=...&sslpassword=... (URL query: a value ends at & or #);
# password=... and sslpassword=... (key/value DSNs: a value ends at a blank, or is quoted)
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<post>@)")
_SECRET_KEY = r"(?:ssl)?password"
_QUERY_PASSWORD = re.compile(rf"(?P<pre>[?&]{_SECRET_KEY}=)(?P<pw>[^&#\s]*)", re.IGNORECASE)
_KV_PASSWORD = re.compile(rf"(?P<pre>(?<![?&\w]){_SECRET_KEY}\s*=\s*)(?P<pw>'[^']*'|\S+)", re.IGNORECASE)


def redact_dsn(text: object) -> str:
    """Return ``text`` with every password (``password``, ``sslpassword``) replaced by ``***``."""
    s = str(text)
    s = _URL_PASSWORD.sub(lambda m: f"{m['pre']}***{m['post']}", s)
    s = _QUERY_PASSWORD.sub(lambda m: f"{m['pre']}***", s)
    return _KV_PASSWORD.sub(lambda m: f"{m['pre']}***", s)


def dsn_host(dsn: str) -> str:
    """``host:port`` of a URL DSN, for messages; never the credentials."""
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/]*@)?(?P<hp>[^/?]*)", dsn)
    return m["hp"] if m else "?"


_URL_SSLMODE = re.compile(r"[?&]sslmode=(?P<mode>[^&#\s]*)", re.IGNORECASE)
_KV_SSLMODE = re.compile(r"(?<![?&\w])sslmode\s*=\s*'?(?P<mode>[^'\s]*)", re.IGNORECASE)


def dsn_sslmode(dsn: str) -> str | None:
    """The ``sslmode`` a DSN (URL or key/value) names, or None when it names none."""
    m = _URL_SSLMODE.search(dsn) or _KV_SSLMODE.search(dsn)
    return m["mode"] if m else None


def tls_warnings(regions, environ=None) -> list[str]:
    """One line per region DSN (primary or read replica) that leaves ``sslmode`` to asyncpg.

    Without it asyncpg uses ``prefer``: it encrypts when the server offers TLS but never verifies
    the server's certificate, and silently falls back to plain text. Any ``sslmode`` in the DSN
    (``disable`` included) or ``$PGSSLMODE`` (which asyncpg reads) says the choice was made.
    ``regions`` maps a region's name to its config (``dsn``, ``read_replicas``).
    """
    environ = os.environ if environ is None else environ
    if environ.get("PGSSLMODE"):
        return []
    lines = []
    for name, region in regions.items():
        dsns = [("dsn", region.dsn), *((f"read_replicas[{i}]", d) for i, d in enumerate(region.read_replicas))]
        for field, dsn in dsns:
            if dsn_sslmode(dsn) is None:
                lines.append(f"regions.{name}.{field} ({dsn_host(dsn)}) sets no sslmode: asyncpg then uses "
                             "'prefer', which never verifies the server and may fall back to plain text; set "
                             "sslmode=verify-full (or sslmode=disable to say plain text is meant)")
    return lines
