"""The configuration reference in docs/configuration.md, generated from the pydantic models.

``python -m regionguard.ops.configref --write docs/configuration.md`` refreshes the block
between the markers; ``tests/unit/test_configref.py`` fails when it is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ..core.config import Config, FeatureConfig, RegionConfig, TableConfig

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
MAPS = {"regions": ("<region>", RegionConfig), "tables": ("<table>", TableConfig),
        "features": ("<feature>", FeatureConfig)}


def _type(ann: Any) -> str:
    s = str(ann).replace("typing.", "")
    for noise in ("<class '", "'>"):
        s = s.replace(noise, "")
    return s.replace("NoneType", "None").replace("|", "\\|")


def _default(field) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return ""
    return f"`{json.dumps(value)}`"


def _models(ann: Any) -> list[type[BaseModel]]:
    """The section models of an optional section (``X | None``) or of a tagged union (``A | B | C``)."""
    if typing.get_origin(ann) is typing.Annotated:
        ann = typing.get_args(ann)[0]
    if typing.get_origin(ann) not in (typing.Union, types.UnionType):
        return []
    return [a for a in typing.get_args(ann) if isinstance(a, type) and issubclass(a, BaseModel)]


def _variant_rows(path: str, field, variants: list[type[BaseModel]]) -> list[str]:
    """One row for the tag (``provider``), then each variant's keys, marked with the tag value they go with."""
    tag = field.discriminator
    values = [typing.get_args(v.model_fields[tag].annotation)[0] for v in variants]
    choices = " \\| ".join(f"`{v}`" for v in values)
    rows = [f"| `{path}.{tag}` | {choices} | **required** | {field.description or ''} |"]
    for value, variant in zip(values, variants):
        rows.extend(_rows(variant, f"{path}.", skip=tag, note=f"With `{tag}: {value}`: "))
    return rows


def _rows(model: type[BaseModel], prefix: str, *, skip: str | None = None, note: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if name == skip:
            continue
        path = f"{prefix}{name}"
        ann = field.annotation
        sections = _models(ann)
        if name in MAPS and model is Config:
            placeholder, sub = MAPS[name]
            req = "**required**" if field.is_required() else "`{}`"
            rows.append(f"| `{path}` | map of `{placeholder}` | {req} | {field.description or ''} |")
            rows.extend(_rows(sub, f"{path}.{placeholder}."))
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(_rows(ann, f"{path}."))
        elif field.discriminator and len(sections) > 1:
            rows.extend(_variant_rows(path, field, sections))
        elif len(sections) == 1:  # an optional section: absent by default
            rows.append(f"| `{path}` | section | {_default(field)} | {note}{field.description or ''} |")
            rows.extend(_rows(sections[0], f"{path}."))
        else:
            rows.append(f"| `{path}` | `{_type(ann)}` | {_default(field)} | {note}{field.description or ''} |")
    return rows


def render() -> str:
    lines = [START, "| key | type | default | notes |", "|---|---|---|---|", *_rows(Config, ""), END]
    return "\n".join(lines)


def refresh(text: str) -> str:
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        return head + render() + tail
    return text.replace("CONFIG_REFERENCE", render())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", type=Path, help="refresh the block in this file (docs/configuration.md)")
    args = ap.parse_args()
    if args.write:
        args.write.write_text(refresh(args.write.read_text()))
    else:
        print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
