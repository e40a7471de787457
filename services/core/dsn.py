"""Keep DSN passwords out of logs, errors and events.

Everything that may print a DSN goes through :func:`redact_dsn`, and the
logging filter in :mod:`regionguard.core.log` scrubs any that slip through.
"""

from __future__ import annotations

import re

# scheme://user:password@host  and  password=... (key/value DSNs)
_URL_PASSWORD = re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<post>@)")
_KV_PASSWORD = re.compile(r"(?P<pre>\bpassword\s*=\s*)(?P<pw>'[^']*'|\S+)", re.IGNORECASE)


def redact_dsn(text: object) -> str:
    """Return ``text`` with every password replaced by ``***``."""
    s = str(text)
    s = _URL_PASSWORD.sub(lambda m: f"{m['pre']}***{m['post']}", s)
    return _KV_PASSWORD.sub(lambda m: f"{m['pre']}***", s)


def dsn_host(dsn: str) -> str:
    """``host:port`` of a URL DSN, for messages; never the credentials."""
    m = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://(?:[^@/]*@)?(?P<hp>[^/?]*)", dsn)
    return m["hp"] if m else "?"
