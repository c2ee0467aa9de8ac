"""Hypothesis strategies for hostile input: any JSON, mutated provider payloads, deep nesting, odd headers."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from postrelay.core.events import CanonicalEvent

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-(10**60), max_value=10**60)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30)
           | st.sampled_from(["", " ", "\ud800", "2024-05-06T14:00:00Z", "0000-00-00", "9999-12-31T23:59:59-23:59",
                              "1e999", "-1", "letter.updated", "..", "a/b?c#d", "\r\nX-Injected: 1", "NaN"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=25)


def nested(depth: int, leaf: Any = 1) -> Any:
    """`{"a": {"a": ... leaf}}` `depth` levels deep (lists every other level)."""
    value = leaf
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


@st.composite
def mutated(draw: st.DrawFn, base: Any, depth: int = 0) -> Any:
    """`base` with some values replaced by any JSON, some keys dropped, and sometimes something deep added."""
    if isinstance(base, dict):
        out = {}
        for key, value in base.items():
            choice = draw(st.integers(0, 9))
            if choice == 0:
                continue  # dropped
            out[key] = draw(JSON) if choice == 1 else draw(mutated(value, depth + 1))
        if depth == 0 and draw(st.integers(0, 5)) == 0:
            out[draw(st.sampled_from(["metadata", "meta", "extra"]))] = nested(draw(st.integers(1, 260)))
        return out
    if isinstance(base, list):
        return [draw(mutated(v, depth + 1)) for v in base]
    return draw(JSON) if draw(st.integers(0, 6)) == 0 else base


def to_bytes(value: Any) -> bytes:
    """JSON bytes, keeping lone surrogates and non-finite floats as the hostile sender would."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


BODIES = (st.binary(max_size=300) | JSON.map(to_bytes)
          | st.sampled_from([b"", b"{", b"[]", b"null", b"\xff\xfe{}", "{\"a\": \"\u00e9\"}".encode("utf-16"),
                             b"[" * 100_000, b"1" * 5000, b"1e999999", b'{"a": NaN}', b"e30.e30.e30", b"a.b.c",
                             b"eyJhbGciOiJub25lIn0.e30.", b'{"id": "\\ud800"}']))
HEADER_VALUES = st.text(alphabet=st.characters(codec="latin-1", min_codepoint=0x20, max_codepoint=0xFF,
                                               exclude_characters="\x7f"), max_size=60)


def nested_text(depth: int) -> str:
    """`nested(depth)` as JSON text, built without recursion (json.dumps would overflow the stack)."""
    opens, closes = [], []
    for i in range(depth):
        opens.append('{"a": ' if i % 2 else "[")
        closes.append("}" if i % 2 else "]")
    return "".join(reversed(opens)) + "1" + "".join(closes)


def round_trips(event: CanonicalEvent) -> None:
    """What the worker does with an accepted event: parse it back from the stream's JSON."""
    assert CanonicalEvent.model_validate_json(event.model_dump_json()).id == event.id
