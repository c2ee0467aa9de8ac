"""Is a `/t/` request a person? HEAD requests, prefetches and known scanners are redirected without an event.

The scanner list is a data file (`receiver/link_scanners.txt`: User-Agent substrings, case-insensitive) so it
can be kept up to date without touching code. Prefetches are announced by `Sec-Purpose: prefetch` (Chrome),
`Purpose: prefetch`, `X-Purpose: preview` (Safari) and `X-Moz: prefetch` (Firefox).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

_PREFETCH_HEADERS = (b"sec-purpose", b"purpose", b"x-purpose", b"x-moz")


def load_scanners(text: str | None = None) -> list[str]:
    """The User-Agent substrings of the data file (or of `text`)."""
    if text is None:
        text = resources.files("postrelay.receiver").joinpath("link_scanners.txt").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append(entry)
    return out


_WORD = re.compile(r"[a-z0-9]+")


def _index(entries: list[str]) -> dict[str, list[str]]:
    """Lower-cased entries by their first word (a User-Agent is only searched for entries one of its words starts)."""
    index: dict[str, list[str]] = {}
    for entry in entries:
        low = entry.lower()
        first = _WORD.search(low)
        if first is not None:
            index.setdefault(first.group(0), []).append(low)
    return index


_SCANNERS = _index(load_scanners())


@lru_cache(maxsize=4096)
def is_scanner(user_agent: str) -> bool:
    """True when the User-Agent contains a listed entry (case-insensitive) starting at one of its words.

    One regex pass splits the User-Agent into words; only entries whose first word is one of them are looked
    for: a few microseconds per User-Agent however long the list grows (one big alternation took ~80).
    """
    low = user_agent.lower()
    for word in set(_WORD.findall(low)):
        for entry in _SCANNERS.get(word, ()):
            if entry in low:
                return True
    return False


def inspect(headers: list[tuple[bytes, bytes]]) -> tuple[str | None, bool, bool]:
    """(User-Agent, the client takes HTML, the request is a prefetch) from raw ASGI headers, in one pass."""
    agent: str | None = None
    html = prefetch = False
    for name, value in headers:
        if name == b"user-agent":
            agent = value.decode("latin-1")
        elif name == b"accept":
            html = b"text/html" in value
        elif name in _PREFETCH_HEADERS:
            low = value.lower()
            prefetch = prefetch or b"prefetch" in low or b"preview" in low or b"prerender" in low
    return agent, html, prefetch
