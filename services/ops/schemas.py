"""``regionguard schemas``: write the events' JSON Schemas (generated from the models)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.models import SCHEMA_MODELS

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "schemas"  # services/ops/ -> the repo root


def render() -> dict[str, str]:
    """File name -> JSON text, deterministic so a test can compare with the repo."""
    out = {}
    for name, model in SCHEMA_MODELS.items():
        schema = model.model_json_schema()
        schema["$id"] = f"https://regionguard.dev/schemas/{name}.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=DEFAULT_DIR, help="directory (default: the repo's schemas/)")
    p.add_argument("--check", action="store_true", help="exit 1 if the files on disk are stale")
    p.add_argument("--json", action="store_true", help="one JSON object: dir, stale (file names), written, check")


def main(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    stale = []
    for fname, text in render().items():
        path = args.out / fname
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(fname)
            if not args.check:
                path.write_text(text)
    if args.json:
        print(json.dumps({"dir": str(args.out), "stale": stale, "written": 0 if args.check else len(stale),
                          "check": args.check}))
        return 1 if args.check and stale else 0
    if args.check:
        if stale:
            print(f"stale schemas: {', '.join(stale)} (run: regionguard schemas)")
            return 1
        print("schemas up to date")
        return 0
    print(f"wrote {len(stale)} changed schema file(s) to {args.out}")
    return 0
