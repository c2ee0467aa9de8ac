"""`[sources.*]`: the webhook sources and their credentials (part of `postrelay.core.config`, which re-exports them),
and the strict base every config table uses (an unknown key is an error)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from postrelay.core.durations import parse_seconds


class Strict(BaseModel):
    """A config table: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def duration(value: Any) -> float:
    """Field validator: a duration (`30s`, `8h`, a number of seconds) as seconds."""
    return parse_seconds(value)


class SignedSource(Strict):
    """A source verified by HMAC secrets (several, for rotation) within a timestamp tolerance."""

    secrets: list[str] = Field(min_length=1)
    tolerance: float = 300.0

    _dur = field_validator("tolerance", mode="before")(duration)

    @field_validator("secrets")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if any(not s for s in v):
            raise ValueError("a secret is empty (is its ${ENV_VAR} set?)")
        return v


class PostGridSource(SignedSource):
    """PostGrid retries after 1 h, 2 h and 4 h: a signature made at the first attempt must still pass.

    `api_key` (optional) is only used by `postrelay backfill postgrid` (the events list API).
    """

    tolerance: float = 8 * 3600
    api_key: str | None = None
    api_base: str = "https://api.postgrid.com"


class LobSource(SignedSource):
    """Lob webhooks; `api_key` (optional) is only used by `postrelay backfill lob` (the events list API)."""

    api_key: str | None = None
    api_base: str = "https://api.lob.com"


class GenericSource(SignedSource):
    """Standard Webhooks: secrets look like `whsec_<base64>`."""


class PostalyticsSource(Strict):
    """Postalytics has no signatures: an unguessable token in the URL path (several, for rotation)."""

    token: str | None = None
    tokens: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_token(self) -> PostalyticsSource:
        all_tokens = self.all_tokens
        if not all_tokens:
            raise ValueError("set `token` (or `tokens`)")
        if any(len(t) < 16 for t in all_tokens):
            raise ValueError("a token must be at least 16 characters (it is the only authentication)")
        return self

    @property
    def all_tokens(self) -> list[str]:
        """Every accepted token."""
        return ([self.token] if self.token else []) + list(self.tokens)


class SourcesConfig(Strict):
    """`[sources.*]`: a source that is not configured answers 404."""

    postgrid: PostGridSource | None = None
    lob: LobSource | None = None
    postalytics: PostalyticsSource | None = None
    generic: GenericSource | None = None
