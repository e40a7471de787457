"""Config references, in the Kafka Connect style: secrets stay out of the YAML file.

Any string value of the config may hold references, resolved once when the config is loaded:

- ``${env:NAME}``: the environment variable NAME;
- ``${file:/path}``: the whole file, without its trailing newline (a Kubernetes secret mount);
- ``${file:/path:key}``: the value of ``key`` in a Java-properties file (the path holds no ``:``);
- ``$${...}``: the literal text ``${...}``, unresolved.

A missing variable, file or key raises :class:`RefError`, one line naming the reference, never
its value. The resolved values are returned too, so that the caller can scrub them from error
messages and logs (:func:`regionguard_client.core.log.add_secret`): a value came from a reference because
it did not belong in the file.

Written by hand because the syntax is ours (as Kafka Connect's ConfigProvider, which has no
Python counterpart); parsing a properties file is left to ``javaproperties``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import javaproperties

# $${...} (escaped: kept as ${...}) or ${provider:body}; a body never holds "}" (nor "$" or "{": no
# nesting). Other text, "${" included, is kept as it is (as Kafka Connect does).
_REF = re.compile(r"\$\$\{(?P<literal>[^}]*)\}|\$\{(?P<provider>[A-Za-z]+):(?P<body>[^${}]+)\}")


class RefError(ValueError):
    """A reference that cannot be resolved (one line naming it, never a value)."""


@dataclass
class Resolved:
    """The config with its references replaced, and every value a reference produced."""

    data: Any
    secrets: set[str] = field(default_factory=set)


def _env(name: str, environ: Mapping[str, str]) -> str:
    if name not in environ:
        raise RefError(f"environment variable {name!r} is not set")
    return environ[name]


def _file(body: str, cache: dict[str, Any]) -> str:
    path, sep, key = body.partition(":")
    if not path.startswith("/"):
        raise RefError(f"file reference {body!r}: the path must be absolute")
    if path not in cache:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise RefError(f"file {path!r} cannot be read ({exc.strerror or type(exc).__name__})") from None
        except UnicodeDecodeError:
            raise RefError(f"file {path!r} is not UTF-8 text") from None
        cache[path] = text
    text = cache[path]
    if not sep:
        return text.removesuffix("\n").removesuffix("\r")
    props_key = ("props", path)
    if props_key not in cache:
        try:
            cache[props_key] = javaproperties.loads(text)
        except ValueError:
            raise RefError(f"file {path!r} is not a properties file") from None
    props = cache[props_key]
    if key not in props:
        raise RefError(f"file {path!r} has no key {key!r}")
    return props[key]


def resolve_text(text: str, *, environ: Mapping[str, str] | None = None,
                 secrets: set[str] | None = None, _cache: dict | None = None) -> str:
    """``text`` with its references replaced; raises :class:`RefError`."""
    environ = os.environ if environ is None else environ
    cache = {} if _cache is None else _cache

    def one(m: re.Match) -> str:
        if m["literal"] is not None:
            return m[0][1:]
        provider, body = m["provider"], m["body"]
        if provider == "env":
            value = _env(body, environ)
        elif provider == "file":
            value = _file(body, cache)
        else:
            raise RefError(f"reference ${{{provider}:...}}: unknown provider {provider!r} (env or file)")
        if secrets is not None:
            secrets.add(value)
        return value

    return _REF.sub(one, text)


def resolve(data: Any, *, environ: Mapping[str, str] | None = None, errors: list[str] | None = None) -> Resolved:
    """Replace the references in every string value of ``data`` (mappings and lists, walked).

    Keys are never resolved: they name config fields, regions and tables. A :class:`RefError`
    is re-raised with the path of the value it was found in (``regions.eu.dsn: ...``); with
    ``errors``, every such line is appended there instead and the value is left as it was
    (``regionguard config check`` reports them all).
    """
    out = Resolved(None)
    cache: dict = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, str):
            try:
                return resolve_text(node, environ=environ, secrets=out.secrets, _cache=cache)
            except RefError as exc:
                line = f"{path}: {exc}" if path else str(exc)
                if errors is None:
                    raise RefError(line) from None
                errors.append(line)
                return node
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(node)]
        return node

    out.data = walk(data, "")
    return out
