"""The spec copies in `specs/` are the vendors' documents cut down by `prune.py`, nothing else."""

from __future__ import annotations

import json

import pytest

from tests.conformance.specs import prune

pytestmark = pytest.mark.skipif(not prune.VENDOR_SPECS.is_dir(), reason="the shared vendor-specs folder is absent")


@pytest.mark.parametrize("copy", sorted(prune.MANIFEST))
def test_copy_is_the_cut_of_the_vendor_document_with_operations_verbatim(copy: str) -> None:
    source, operations = prune.MANIFEST[copy]
    full = prune.load(prune.VENDOR_SPECS / source)
    text = (prune.HERE / copy).read_text()
    assert text == json.dumps(prune.prune(full, operations), indent=1, ensure_ascii=False) + "\n"
    cut = json.loads(text)
    for path, method in operations:
        assert cut["paths"][path][method] == full["paths"][path][method]
    for kind, items in cut["components"].items():
        for name, value in items.items():
            assert value == full["components"][kind][name]
