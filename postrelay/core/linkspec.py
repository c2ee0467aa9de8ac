"""What minting a tracking link asks for (`POST /v1/links`, batch items, CSV rows, a mailing's `link`)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PieceRef(BaseModel):
    """`mailpiece`: the piece a link belongs to, when it already exists."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=64)
    id: str = Field(min_length=1, max_length=200)


class LinkSpec(BaseModel):
    """What `POST /v1/links` (and each batch item, CSV row, mailing) asks for."""

    model_config = ConfigDict(extra="forbid")

    target_url: str
    campaign_id: str | None = Field(default=None, max_length=200)
    ref: str | None = Field(default=None, min_length=1, max_length=200)
    mailpiece: PieceRef | None = None
    expires_at: datetime | None = None
    utm: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    goal_url: str | None = None

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        return v.replace(tzinfo=UTC) if v is not None and v.tzinfo is None else v
