"""Make the small spec copies in this folder from the vendors' full OpenAPI documents (../shared/vendor-specs).

Each copy keeps, unchanged, the operations postrelay's adapters call and everything they reference
(`$ref`s followed transitively), plus the document's `openapi`, `info`, `servers`, `security` and security
schemes: the validator sees exactly what the vendor wrote for those operations, in a file of a few KB
instead of MBs. Regenerate with `python -m tests.conformance.specs.prune [/path/to/vendor-specs]`;
`tests/conformance/test_specs.py` checks the copies still match their sources when those are present.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).parent
VENDOR_SPECS = HERE.parents[3] / "shared" / "vendor-specs"

# copy -> (source file under vendor-specs, [(path, method), ...])
MANIFEST: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "hubspot/contacts.json": ("hubspot/contacts.json", [("/crm/v3/objects/contacts/{contactId}", "patch"),
                                                        ("/crm/v3/objects/contacts/{contactId}", "get"),
                                                        ("/crm/v3/objects/contacts/batch/update", "post"),
                                                        ("/crm/v3/objects/contacts/batch/upsert", "post")]),
    "hubspot/notes.json": ("hubspot/notes.json", [("/crm/v3/objects/notes", "post"),
                                                  ("/crm/v3/objects/notes/batch/create", "post")]),
    "hubspot/postalMail.json": ("hubspot/postalMail.json", [("/crm/v3/objects/postal_mail", "post"),
                                                            ("/crm/v3/objects/postal_mail/batch/create", "post")]),
    "pipedrive/pipedrive_openapi-v2.json": ("pipedrive/pipedrive_openapi-v2.yaml",
                                            [("/persons/search", "get"), ("/activities", "post")]),
    "sendgrid/tsg_mail_v3.json": ("sendgrid/tsg_mail_v3.json", [("/v3/mail/send", "post")]),
    "twilio/twilio_api_v2010.json": ("twilio/twilio_api_v2010.json",
                                     [("/2010-04-01/Accounts/{AccountSid}/Messages.json", "post")]),
    "klaviyo/stable.json": ("klaviyo/stable.json", [("/api/events", "post")]),
    "customerio/track-api-openapi.json": ("customerio/track-api-openapi.json",
                                          [("/api/v1/customers/{identifier}/events", "post")]),
}


def _refs(node: Any) -> set[str]:
    """Every local `$ref` target inside `node`."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/"):
                found.add(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _pointer(ref: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in ref[2:].split("/")]


def prune(spec: dict[str, Any], operations: list[tuple[str, str]]) -> dict[str, Any]:
    """`spec` with only `operations` (path, method) and what they reference."""
    out: dict[str, Any] = {key: spec[key] for key in ("openapi", "info", "servers", "security") if key in spec}
    paths: dict[str, Any] = {}
    for path, method in operations:
        item = spec["paths"][path]
        kept = paths.setdefault(path, {k: v for k, v in item.items()
                                       if k not in {"get", "put", "post", "delete", "options", "head", "patch",
                                                    "trace"}})
        kept[method] = item[method]
    out["paths"] = paths
    components: dict[str, Any] = {}
    if "securitySchemes" in spec.get("components", {}):
        components["securitySchemes"] = spec["components"]["securitySchemes"]
    todo, done = _refs(paths) | _refs(components), set()
    while todo:
        ref = todo.pop()
        done.add(ref)
        parts = _pointer(ref)
        value: Any = spec
        for part in parts:
            value = value[part]
        target = components
        for part in parts[1:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
        todo |= _refs(value) - done
    out["components"] = {kind: dict(sorted(items.items())) for kind, items in sorted(components.items())}
    return out


def load(path: Path) -> dict[str, Any]:
    """A JSON or YAML OpenAPI document."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 10x faster
    return json.loads(text)


def render(copy: str, source_dir: Path = VENDOR_SPECS) -> str:
    """The text of one copy, made from its source."""
    source, operations = MANIFEST[copy]
    return json.dumps(prune(load(source_dir / source), operations), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    source_dir = Path(argv[0]) if argv else VENDOR_SPECS
    for copy in MANIFEST:
        target = HERE / copy
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(copy, source_dir))
        print(f"{copy}: {target.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
