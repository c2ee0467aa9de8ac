"""`[ui]`: the web console's settings (`docs/console.md`)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from postrelay.core.durations import parse_seconds


class UiConfig(BaseModel):
    """`[ui]`: the web console, served by the receiver under `prefix` (off with `enabled = false`)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    prefix: str = "/ui"
    session_ttl: float = 8 * 3600
    # failed sign-ins per client address within `signin_window` before further tries answer 429
    signin_attempts: int = Field(default=5, ge=1)
    signin_window: float = 15 * 60

    @field_validator("session_ttl", "signin_window", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_seconds(v)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = "/" + v.strip("/")
        if v == "/" or not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", v):
            raise ValueError("a path such as /ui or /console (not /, no spaces or query)")
        return v
