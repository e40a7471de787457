"""The package layout of ARCHITECTURE.md, checked: the arrows between rooms, and what the wheel ships.

Reads the sources (ast), imports nothing of them: a violation names the file and the import.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "services"  # installs as `regionguard`
KIT = ROOT / "testkit"
CLIENT = ROOT / "clients" / "python"  # regionguard-client, installs as `regionguard_client`
SERVICES = ("router", "replayer", "health", "features")
#: arrows tolerated until they are removed: (module under services/, room it may import); none left
KNOWN: set[tuple[str, str]] = set()


def _imports(path: Path, root: Path = PKG, name: str = "regionguard") -> list[tuple[str, bool]]:
    """(absolute module name, at module level?) of every import in ``path`` (of package ``name`` in ``root``)."""
    rel = path.relative_to(root).with_suffix("")
    here = [name, *rel.parts[:-1]]  # the package a relative import starts from (also for __init__)
    tree = ast.parse(path.read_text(), str(path))
    top = set(map(id, tree.body))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((name, id(node) in top))
    return out


def _room(module: str) -> str | None:
    """``regionguard.core.db`` -> ``core``; ``regionguard.cli`` -> ``cli``; not regionguard -> None."""
    parts = module.split(".")
    if parts[0] != "regionguard":
        return None
    return parts[1] if len(parts) > 1 else ""


def _sources(sub: str = "") -> list[Path]:
    return sorted((PKG / sub).rglob("*.py"))


@pytest.mark.parametrize("room", ["core", "client", *SERVICES])
def test_lower_rooms_import_only_core_and_themselves(room):
    wrong = []
    for path in _sources(room):
        for module, _ in _imports(path):
            target = _room(module)
            if target is None or target in ("core", room):
                continue
            if (str(path.relative_to(PKG)), target) not in KNOWN:
                wrong.append(f"{path.relative_to(ROOT)}: {module}")
    assert not wrong, "imports above core (ARCHITECTURE.md, 'Arrows allowed'):\n" + "\n".join(wrong)


def test_only_demo_and_drill_import_the_test_kit_and_only_lazily():
    wrong = []
    for path in _sources():
        for module, top in _imports(path):
            if module.split(".")[0] != "regionguard_testkit":
                continue
            where = str(path.relative_to(PKG))
            if top or where not in ("ops/demo.py", "ops/drill.py"):
                wrong.append(f"{path.relative_to(ROOT)}: {module}{' (module level)' if top else ''}")
    assert not wrong, "regionguard imports its test kit:\n" + "\n".join(wrong)


def _packages(pyproject: Path) -> set[str]:
    return set(tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["packages"])


def _dirs(root: Path, name: str) -> set[str]:
    return {".".join([name, *p.parent.relative_to(root).parts]) for p in root.rglob("__init__.py")
            if "__pycache__" not in p.parts}


def test_the_wheel_ships_every_package_of_services_and_no_test_kit():
    listed = _packages(ROOT / "pyproject.toml")
    assert listed == _dirs(PKG, "regionguard"), "pyproject.toml's packages differ from services/'s packages"
    assert not {p for p in listed if p.split(".")[-1] in ("embedded", "verify", "testing")}
    assert not list(PKG.rglob("testing.py"))


def test_the_test_kit_is_its_own_distribution():
    meta = tomllib.loads((KIT / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "regionguard-testkit"
    assert _packages(KIT / "pyproject.toml") == _dirs(KIT / "regionguard_testkit", "regionguard_testkit")
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["embedded"]
    assert extra == [f"regionguard-testkit=={meta['version']}"]


def test_the_old_producer_import_still_works():
    from regionguard.client import WriteGroup, WriteProducer
    from regionguard.producer import WriteGroup as OldGroup
    from regionguard.producer import WriteProducer as OldProducer

    assert (OldProducer, OldGroup) == (WriteProducer, WriteGroup)


def test_the_client_distribution_imports_neither_the_service_nor_its_heavy_dependencies():
    """regionguard-client must install alone (tests/integration/test_client_wheel.py installs it): no
    import of the service package anywhere in it, nor of faust, rich or prometheus-client at module level."""
    wrong = []
    for path in sorted((CLIENT / "regionguard_client").rglob("*.py")):
        for module, top in _imports(path, CLIENT / "regionguard_client", "regionguard_client"):
            first = module.split(".")[0]
            if first == "regionguard" or (top and first in ("faust", "mode", "rich", "prometheus_client")):
                wrong.append(f"{path.relative_to(ROOT)}: {module}")
    assert not wrong, "the client distribution reaches into the service:\n" + "\n".join(wrong)


def test_the_client_distribution_ships_its_packages_and_the_shared_core_is_one_copy():
    from regionguard_client.core import SHARED

    assert _packages(CLIENT / "pyproject.toml") == _dirs(CLIENT / "regionguard_client", "regionguard_client")
    shared = {p.stem for p in (CLIENT / "regionguard_client" / "core").glob("*.py") if p.stem != "__init__"}
    assert set(SHARED) == shared, "regionguard_client.core.SHARED differs from its files"
    assert not shared & {p.stem for p in (PKG / "core").glob("*.py")}, "a shared module is also in services/core"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    version = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]["version"]
    assert f"regionguard-client=={version}" in deps


def test_the_old_client_imports_are_the_client_distribution():
    import regionguard.client
    import regionguard.client.reader
    import regionguard.core.config
    import regionguard_client
    import regionguard_client.core.config
    import regionguard_client.reader

    assert regionguard.client.reader is regionguard_client.reader
    assert regionguard.core.config is regionguard_client.core.config
    assert regionguard.client.RegionGuardMiddleware is regionguard_client.RegionGuardMiddleware
