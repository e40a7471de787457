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
SERVICES = ("router", "replayer", "health", "features")
#: arrows tolerated until they are removed: (module under services/, room it may import); none left
KNOWN: set[tuple[str, str]] = set()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, at module level?) of every import in ``path``."""
    rel = path.relative_to(PKG).with_suffix("")
    here = ["regionguard", *rel.parts[:-1]]  # the package a relative import starts from (also for __init__)
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
