"""The configuration reference in docs/configuration.md, generated from the pydantic models.

``python -m regionguard.ops.configref --write docs/configuration.md`` refreshes the block
between the markers; ``tests/unit/test_configref.py`` fails when it is stale.
"""

from __future__ import annotations

import argparse
import json
import sys
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


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = field.annotation
        if name in MAPS and model is Config:
            placeholder, sub = MAPS[name]
            req = "**required**" if field.is_required() else "`{}`"
            rows.append(f"| `{path}` | map of `{placeholder}` | {req} | {field.description or ''} |")
            rows.extend(_rows(sub, f"{path}.{placeholder}."))
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(_rows(ann, f"{path}."))
        else:
            rows.append(f"| `{path}` | `{_type(ann)}` | {_default(field)} | {field.description or ''} |")
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
