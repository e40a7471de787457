"""The image's HEALTHCHECK finds the port of the service its container runs (deploy/docker/healthcheck.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from regionguard.core.metrics import SERVICE_PORT_OFFSET

PATH = Path(__file__).resolve().parents[2] / "deploy/docker/healthcheck.py"
spec = importlib.util.spec_from_file_location("rg_healthcheck", PATH)
healthcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(healthcheck)

SCRIPT = ["/opt/regionguard/bin/python3.11", "/opt/regionguard/bin/regionguard"]


def test_the_default_port_of_each_service():
    for service, offset in SERVICE_PORT_OFFSET.items():
        if service == "demo":
            continue
        assert healthcheck.livez_port([*SCRIPT, service, "--config", "/etc/c.yaml"], {}) == 9400 + offset
    assert healthcheck.OFFSETS == {s: o for s, o in SERVICE_PORT_OFFSET.items() if s != "demo"}


def test_metrics_port_and_the_override_win():
    argv = [*SCRIPT, "status", "--config", "/etc/c.yaml", "--metrics-port", "9405"]
    assert healthcheck.livez_port(argv, {}) == 9405
    assert healthcheck.livez_port([*SCRIPT, "router", "--metrics-port=9501"], {}) == 9501
    assert healthcheck.livez_port([*SCRIPT, "router"], {"REGIONGUARD_LIVEZ_PORT": "9601"}) == 9601


def test_nothing_to_check_for_a_one_shot_command():
    assert healthcheck.livez_port([*SCRIPT, "--help"], {}) is None
