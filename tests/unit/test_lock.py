"""requirements.lock (the image's pinned dependencies, Dockerfile) still fits pyproject.toml.

Offline, so it runs in `make test`: the lock names exactly the project's direct
dependencies as `via regionguard (pyproject.toml)`, each pinned to a version
its specifier allows, and every pin is hashed (pip --require-hashes). A full
re-resolve against the package index is `make lock-check`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\]+)")


def _lock() -> tuple[dict[str, str], set[str], set[str]]:
    """(name -> pinned version, names a pin says come from pyproject.toml, names with hashes)."""
    pins, direct, hashed, current = {}, set(), set(), None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = PIN.match(line)
        if m:
            current = canonicalize_name(m.group(1))
            pins[current] = m.group(2)
        elif current and line.strip().startswith("--hash=sha256:"):
            hashed.add(current)
        elif current and line.strip() in ("# via regionguard (pyproject.toml)", "#   regionguard (pyproject.toml)"):
            direct.add(current)
    return pins, direct, hashed


def _project() -> list[Requirement]:
    """The direct dependencies the lock pins: not those from this checkout (the client SDK, clients/python)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    local = {canonicalize_name(n) for n in data.get("tool", {}).get("uv", {}).get("sources", {})}
    return [r for r in map(Requirement, data["project"]["dependencies"]) if canonicalize_name(r.name) not in local]


def test_lock_pins_every_dependency_within_its_specifier():
    pins, direct, _ = _lock()
    wanted = {canonicalize_name(r.name): r for r in _project()}
    assert direct == set(wanted), f"requirements.lock is stale (run `make lock`): {sorted(direct ^ set(wanted))}"
    for name, req in wanted.items():
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"requirements.lock pins {name}=={pins[name]}, pyproject.toml wants {req} (run `make lock`)"


def test_every_pin_is_hashed():
    pins, _, hashed = _lock()
    assert pins and set(pins) == hashed


def test_the_image_installs_from_the_lock_only():
    text = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes --no-deps -r requirements.lock" in text
    assert "pip install --no-deps ./clients/python ." in text  # regionguard and its SDK, no resolver run
    assert "COPY clients/python ./clients/python" in text
    assert re.search(r"^USER 10001", text, re.M)  # never root
    assert "HEALTHCHECK" in text and "deploy/docker/healthcheck.py" in text
