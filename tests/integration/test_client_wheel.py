"""``regionguard-client`` (clients/python) installs and works without the service (issue 27, item 5).

Builds the client's wheel, installs it into a fresh virtualenv with uv (its dependencies from uv's
cache or the package index, never the service's), and imports the producer, tokens, views, reader
and middleware there; faust, rich, prometheus-client and the service package ``regionguard`` must
not be importable in that venv. No broker, no database: what is checked is the install.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"

#: Run inside the client-only venv: one JSON object on stdout says what imported and what did not.
PROBE = r"""
import importlib.util, json, sys
from regionguard_client import (WriteProducer, WriteGroup, WriteToken, ConsistencyWatcher, RegionStates,
                                FeatureFlags, RegionalReader, RegionGuardMiddleware, requires_feature)
from regionguard_client.core.config import parse_config

cfg = parse_config({"kafka": {"bootstrap": "127.0.0.1:1"},
                    "regions": {"eu": {"dsn": "postgresql://u@127.0.0.1/eu"}},
                    "tables": {"users": {"key": ["id"]}}})
token = WriteToken.parse("eu:00000000-0000-4000-8000-000000000001", cfg)
producer = WriteProducer(cfg)
written = producer.write("eu", "users", "upsert", {"id": 1}, {"name": "a"})
producer._producer.purge()  # nothing to deliver: no broker here
absent = {name: importlib.util.find_spec(name) is None for name in ("faust", "rich", "prometheus_client", "regionguard")}
loaded = sorted({m.split(".")[0] for m in sys.modules} & {"faust", "rich", "prometheus_client", "regionguard"})
print(json.dumps({"token": str(token), "key": written.event.kafka_key().decode(), "absent": absent, "loaded": loaded}))
"""


def _uv() -> str:
    uv = ROOT / ".venv" / "bin" / "uv"
    found = str(uv) if uv.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("uv is missing: scripts/setup.sh --test-tools installs it (the test extra)")
    return found


def test_the_client_wheel_installs_and_imports_without_the_service(tmp_path):
    uv = _uv()
    env = {**os.environ, "VIRTUAL_ENV": ""}
    env.pop("PYTHONPATH", None)  # the venv must see only what was installed into it
    # built from a copy: setuptools' build/ left in the checkout could put stale modules in the wheel
    src = tmp_path / "src"
    shutil.copytree(CLIENT, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
                   check=True, env=env, cwd=tmp_path)
    wheels = list(dist.glob("regionguard_client-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, env=env, cwd=tmp_path)
    python = venv / "bin" / "python"
    subprocess.run([uv, "pip", "install", "-q", "--python", str(python), str(wheels[0])], check=True, env=env,
                   cwd=tmp_path)

    out = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["token"] == "eu:00000000-0000-4000-8000-000000000001"
    assert seen["key"] == "users/1"
    assert seen["absent"] == {"faust": True, "rich": True, "prometheus_client": True, "regionguard": True}
    assert seen["loaded"] == []
