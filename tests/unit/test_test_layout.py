"""Two test files with one basename in folders that are not packages stop pytest at collection
("import file mismatch"), and with it the whole suite: a merge of two branches did exactly that."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_modules_outside_packages_have_unique_basenames():
    loose = [p for p in TESTS.rglob("test_*.py") if not (p.parent / "__init__.py").exists()]
    dupes = [name for name, n in Counter(p.name for p in loose).items() if n > 1]
    assert not dupes, f"rename one of each: {sorted(dupes)}"
