"""Hiding secrets in what postrelay writes: log lines, config errors, delivery details and dead-letter reasons.

One mechanism, used everywhere:
- which values are secret: `secret_values` (a raw config document or a settings dict: every value whose key
  names a credential (`SECRET_KEY`), header values, URL passwords and secret query parameters) and
  `url_secrets` (one URL); the logs add the configured source secrets (`postrelay.core.logs.config_secrets`),
  an adapter its own settings (`Adapter.secrets`);
- hiding them: `Redactor(secrets)` replaces each value, as written and as it appears inside a JSON string (and
  the body of a `whsec_` signing secret), longest first, with `[REDACTED]` (or another `mask`: delivery
  details say `***`); `redact(text, secrets)` is the same for one text;
- what is never logged whole: `mask_url` (a URL fit to print: password and secret query values `***`) and
  `redact_path` (a request path without its token segment: `/webhooks/postalytics/<token>`, `/t/<token>`).

Values shorter than `min_len` are left alone (default 4; the logs, which redact every line, use 6): a short
value would mangle unrelated text.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

REDACTED = "[REDACTED]"
MASK = "***"  # delivery details, dead-letter reasons and printed URLs
MIN_SECRET = 4
# Keys whose values are credentials (config keys, settings, header names, query parameters).
SECRET_KEY = re.compile(r"(secret|token|key|password|passwd|auth|credential|sid)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:@/\s]*:)([^@/\s]+)@", re.IGNORECASE)
_QUERY_PARAM = re.compile(r"([?&;]([^=&#;\s]*)=)([^&#;\s]*)")
_WHSEC = "whsec_"
# Request paths whose rest is a credential (a Postalytics path token, a tracking link), and the endings kept.
TOKEN_PATHS: dict[str, tuple[str, ...]] = {"/webhooks/postalytics/": (), "/t/": ("/goal",)}


def url_secrets(url: str) -> list[str]:
    """The secrets written in a URL: userinfo passwords and the values of query parameters named like a
    credential (`?api_key=…`, `&token=…`), as written and percent-decoded."""
    found = [m.group(2) for m in _URL_PASSWORD.finditer(url)]
    if "://" in url:
        found += [m.group(3) for m in _QUERY_PARAM.finditer(url) if SECRET_KEY.search(m.group(2)) and m.group(3)]
    return list(dict.fromkeys(v for s in found for v in (s, unquote(s))))


def mask_url(url: str | None) -> str:
    """The URL with its password and secret query values replaced by `***`, fit to print."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", url or "")
    return _QUERY_PARAM.sub(lambda m: f"{m.group(1)}{MASK}" if SECRET_KEY.search(m.group(2)) and m.group(3)
                            else m.group(0), text)


def secret_values(data: Any, key: str = "", under_headers: bool = False, headers: bool = True) -> list[str]:
    """Every string in a config document or settings dict whose key looks secret, every URL's secrets and
    (`headers`) every value of a `headers` table; at least `MIN_SECRET` long."""
    if isinstance(data, dict):
        return [s for k, v in data.items()
                for s in secret_values(v, str(k), under_headers or (headers and str(k).lower() == "headers"),
                                       headers)]
    if isinstance(data, list):
        return [s for v in data for s in secret_values(v, key, under_headers, headers)]
    if not isinstance(data, str):
        return []
    found = [data] if under_headers or SECRET_KEY.search(key) else []
    found += url_secrets(data)
    return [s for s in dict.fromkeys(found) if len(s) >= MIN_SECRET]


def clean(values: Iterable[str], min_len: int = MIN_SECRET) -> list[str]:
    """The distinct values at least `min_len` long (a `whsec_` secret also as its body), longest first."""
    out: set[str] = set()
    for v in values:
        if v and len(v) >= min_len:
            out.add(v)
            if v.startswith(_WHSEC) and len(v) > len(_WHSEC) + min_len:
                out.add(v[len(_WHSEC):])
    return sorted(out, key=lambda s: (-len(s), s))  # longest first: a secret containing another goes whole


class Redactor:
    """Replaces each secret (as written, and as it appears inside a JSON string) with `mask`."""

    def __init__(self, secrets: Iterable[str] = (), mask: str = REDACTED, min_len: int = MIN_SECRET) -> None:
        variants: set[str] = set()
        for s in clean(secrets, min_len):
            variants.add(s)
            variants.add(json.dumps(s)[1:-1])
            variants.add(json.dumps(s, ensure_ascii=False)[1:-1])
        ordered = sorted((v for v in variants if v), key=lambda s: (-len(s), s))
        self.mask = mask
        self._pattern = re.compile("|".join(re.escape(v) for v in ordered)) if ordered else None
        self._needles = tuple(ordered)

    def __call__(self, text: str) -> str:
        """`text` with every secret replaced."""
        if self._pattern is None:
            return text
        for needle in self._needles:  # substring tests are far cheaper than the regex on a line with no secret
            if needle in text:
                return self._pattern.sub(self.mask, text)
        return text

    @property
    def active(self) -> bool:
        """True when there is something to redact."""
        return self._pattern is not None


@functools.lru_cache(maxsize=256)
def _redactor(secrets: tuple[str, ...], mask: str, min_len: int) -> Redactor:
    return Redactor(secrets, mask, min_len)


def redact(text: str, secrets: Iterable[str], mask: str = REDACTED, min_len: int = MIN_SECRET) -> str:
    """`text` with every secret value replaced by `mask` (see `Redactor`)."""
    if not text:
        return text
    return _redactor(tuple(sorted(set(secrets))), mask, min_len)(text)


def redact_path(path: str) -> str:
    """A request path safe to log: the token of `/webhooks/postalytics/<token>` and `/t/<token>[/goal]` is
    replaced (everything after the prefix, but a known ending)."""
    for prefix, endings in TOKEN_PATHS.items():
        if path.startswith(prefix) and len(path) > len(prefix):
            kept = next((e for e in endings if path.endswith(e) and len(path) > len(prefix) + len(e)), "")
            return prefix + REDACTED + kept
    return path
