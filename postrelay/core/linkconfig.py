"""`[links]`: first-party tracking links (`/t/{token}`), their allowed targets, collapsing and fallbacks."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from postrelay.core.durations import parse_seconds
from postrelay.core.linktargets import TargetError, check_url


class LinksConfig(BaseModel):
    """`[links]`. Minting needs `base_url` and at least one `allowed_hosts` entry.

    - `base_url`: the public origin the links are printed with (`https://go.example.com` → `…/t/<token>`);
    - `allowed_hosts`: hosts a target may point to (`example.com`, or `*.example.com` for its subdomains);
    - `collapse_window`: a repeat visit from the same client within this time is not a new event (0: never);
    - `fallback_url`: where expired or revoked links (and unknown links while Redis is down) redirect
      instead of showing a small page;
    - `visitor_key_rotation`: how often the random key hashing visitors (for collapsing only) is replaced;
    - `cache_ttl`: how long a receiver process reuses a link record it read (revocations reach other
      processes within this time; a record in the cache still redirects while Redis is down);
    - `retention`: how long a link record is kept after its expiry (or after minting, without one).
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    allowed_hosts: list[str] = Field(default_factory=list)
    collapse_window: float = 1800.0
    fallback_url: str | None = None
    visitor_key_rotation: float = 86400.0
    cache_ttl: float = 5.0
    retention: float = 400 * 86400.0
    max_batch: int = Field(default=10_000, ge=1, le=10_000)

    _dur = field_validator("collapse_window", "visitor_key_rotation", "cache_ttl", "retention",
                           mode="before")(lambda v: parse_seconds(v))

    @field_validator("base_url")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            url = check_url(v, None, "base_url")
        except TargetError as exc:
            raise ValueError(str(exc)) from None
        if "?" in url or "#" in url:
            raise ValueError("base_url: no query or fragment (links are <base_url>/t/<token>)")
        return url.rstrip("/")

    @field_validator("fallback_url")
    @classmethod
    def _fallback(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return check_url(v, None, "fallback_url")
        except TargetError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[Any]) -> list[str]:
        out = []
        for entry in v:
            host = str(entry).strip().lower().rstrip(".")
            bare = host[2:] if host.startswith("*.") else host
            if not bare or "/" in bare or ":" in bare or "@" in bare or "*" in bare:
                raise ValueError(f"{entry!r}: a host name, or *.domain for its subdomains (no scheme, port or path)")
            out.append(host)
        return out

    @field_validator("visitor_key_rotation")
    @classmethod
    def _rotation(cls, v: float) -> float:
        if v < 60:
            raise ValueError("at least 60 seconds")
        return v

    @property
    def enabled(self) -> bool:
        """True when links can be minted (a public base URL and at least one allowed host)."""
        return bool(self.base_url and self.allowed_hosts)
