"""The committed JSON Schemas in schemas/ match the models (run `regionguard schemas` to refresh)."""

from __future__ import annotations

from pathlib import Path

from regionguard.ops.schemas import render

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_committed_schemas_are_fresh():
    expected = render()
    stale = [name for name, text in expected.items()
             if not (SCHEMAS / name).exists() or (SCHEMAS / name).read_text() != text]
    assert not stale, f"stale JSON Schemas {stale}: run `regionguard schemas` and commit"
    extra = {p.name for p in SCHEMAS.glob("*.schema.json")} - set(expected)
    assert not extra, f"schemas without a model: {extra}"
