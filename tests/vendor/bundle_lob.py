"""Rebuild `lob_mail.json` (Lob's OpenAPI for `/v1/postcards` and `/v1/letters`, every $ref inlined) from a
checkout of github.com/lob/lob-openapi (MIT, see LICENSE.lob): `python tests/vendor/bundle_lob.py CHECKOUT`.

Only request validation needs it (tests/mailings/conftest.py); `x-codeSamples` and examples are dropped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

DROP = {"x-codeSamples", "example", "examples", "summary"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def resolve(node: Any, base: Path, depth: int = 0) -> Any:
    if depth > 60:
        raise RecursionError(base)
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            file, _, pointer = ref.partition("#")
            target = (base.parent / file).resolve() if file else base
            doc = load(target)
            for part in [p for p in pointer.split("/") if p]:
                doc = doc[part]
            merged = resolve(doc, target, depth + 1)
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return {**merged, **resolve(extra, base, depth + 1)} if extra else merged
        return {k: resolve(v, base, depth + 1) for k, v in node.items() if k not in DROP}
    if isinstance(node, list):
        return [resolve(v, base, depth + 1) for v in node]
    return node


def main(root: str) -> None:
    repo = Path(root)
    paths = {}
    for name in ("postcards", "letters"):
        path = repo / "resources" / name / f"{name}.yml"
        item = {method: op for method, op in load(path).items() if method in ("get", "post")}
        for op in item.values():
            op["responses"] = {"default": {"description": "not bundled: only requests are validated"}}
        paths[f"/v1/{name}"] = resolve(item, path)
    doc = {"openapi": "3.0.3", "info": {"title": "Lob (postcards, letters)", "version": "1.0.0"},
           "servers": [{"url": "/"}], "paths": paths,
           "components": {"securitySchemes": {"basicAuth": {"type": "http", "scheme": "basic"}}},
           "security": [{"basicAuth": []}]}
    out = Path(__file__).with_name("lob_mail.json")
    out.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
