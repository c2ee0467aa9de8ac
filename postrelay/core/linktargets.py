"""Tracking-link targets: only `http(s)` URLs on `[links] allowed_hosts`, so `/t/` is never an open redirect.

A target is checked when a link is minted (and again before every redirect, so removing a host from the
config stops its links). What is refused, whatever its spelling: another scheme (`javascript:`, `data:`, any
case), no host (`//evil.example`, `https:/evil.example`, `https:%2F%2Fevil.example`), userinfo
(`https://allowed.example@evil.example/`), backslashes (browsers read them as `/`), control characters and
whitespace, and a host not on the list. The URL stored is the normalized one (lower-case scheme and host),
with the link's UTM and query parameters appended.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MAX_URL = 2048
UTM_KEYS = ("source", "medium", "campaign", "term", "content")
_HOST = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f\\]")


class TargetError(ValueError):
    """The URL may not be a link target; the message says why."""


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """`host` is listed, or matches a `*.example.com` entry (a subdomain of example.com, not itself)."""
    for entry in allowed:
        entry = entry.lower().rstrip(".")
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def check_url(url: object, allowed: Iterable[str] | None, what: str = "target_url") -> str:
    """The normalized URL if it is an allowed `http(s)` target (`allowed` None: any host); else TargetError."""
    if not isinstance(url, str) or not url:
        raise TargetError(f"{what} must be a non-empty string")
    if len(url) > MAX_URL:
        raise TargetError(f"{what} is longer than {MAX_URL} characters")
    if _BAD_CHARS.search(url):
        raise TargetError(f"{what} contains whitespace, a control character or a backslash")
    if not url.isascii():
        raise TargetError(f"{what} must be ASCII (percent-encode the path, use the punycode host)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise TargetError(f"{what} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetError(f"{what} must be an http or https URL")
    if "@" in parts.netloc:
        raise TargetError(f"{what} must not carry user information (user@host)")
    host = (parts.hostname or "").rstrip(".")
    if not host or not _HOST.match(host) or "%" in parts.netloc:
        raise TargetError(f"{what} has no valid host name")
    if allowed is not None and not host_allowed(host, allowed):
        raise TargetError(f"{what} host {host!r} is not in [links] allowed_hosts")
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, parts.fragment))


def with_params(url: str, utm: Mapping[str, str] | None, query: Mapping[str, str] | None) -> str:
    """`url` with `utm_<key>` and other query parameters appended (replacing parameters of the same name)."""
    extra: dict[str, str] = {}
    for key, value in (utm or {}).items():
        if key not in UTM_KEYS:
            raise TargetError(f"utm.{key}: unknown; use {', '.join(UTM_KEYS)}")
        extra[f"utm_{key}"] = str(value)
    for key, value in (query or {}).items():
        if not key:
            raise TargetError("query: a parameter name is empty")
        extra[str(key)] = str(value)
    if not extra:
        return url
    parts = urlsplit(url)
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in extra]
    params.extend(extra.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), parts.fragment))
