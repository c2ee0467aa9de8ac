"""Redis replies as the types the call asked for.

redis-py types a reply as the union over every option of its command (`ZRANGE` with or without scores,
`LPOP` with or without a count, `str` for clients with `decode_responses`), so code that knows which form it
asked for says so here, once, instead of narrowing at every call. postrelay's clients never decode responses:
members and values arrive as bytes.
"""

from __future__ import annotations

from typing import Any, overload


@overload
def text(value: bytes | str) -> str: ...
@overload
def text(value: bytes | str | None) -> str | None: ...
def text(value: bytes | str | None) -> str | None:
    """A reply value as str (None stays None)."""
    return value.decode() if isinstance(value, bytes) else value


def value(reply: Any) -> str | None:
    """A single-value reply (`GET`, `HGET`, `LPOP` without a count) as str; None for nil."""
    return text(reply)


def members(reply: Any) -> list[str]:
    """A list reply of members or elements (`ZRANGE` without scores, `SMEMBERS`, `LRANGE`, `HKEYS`)."""
    return [text(m) for m in reply]


def scored(reply: Any) -> list[tuple[str, float]]:
    """A `ZRANGE … WITHSCORES` reply: (member, score) pairs."""
    return [(text(m), float(s)) for m, s in reply]


def text_map(reply: Any) -> dict[str, str]:
    """An `HGETALL` reply with str keys and values."""
    return {text(k): text(v) for k, v in reply.items()}


StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]


def stream_entries(reply: Any) -> StreamEntries:
    """The entries of an `XREADGROUP` reply for one stream ([] when it timed out empty)."""
    return list(reply[0][1]) if reply else []
