"""The canonical mail event: one model for every provider, shared by receiver, workers and adapters.

Taxonomy and ranks follow `shared/design/events.md` §1. Ranked types move a mailpiece's stage forward;
unranked ones (`re_routed`, `purl_*`) are recorded in its timeline but never change the stage; terminal
stages stick once reached.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EventType(StrEnum):
    """Canonical mail event types."""

    CREATED = "created"
    ADDRESSED = "addressed"
    PRINTED = "printed"
    MAILED = "mailed"
    IN_TRANSIT = "in_transit"
    IN_LOCAL_AREA = "in_local_area"
    PROCESSED_FOR_DELIVERY = "processed_for_delivery"
    DELIVERED = "delivered"
    RE_ROUTED = "re_routed"
    RETURNED_TO_SENDER = "returned_to_sender"
    CANCELLED = "cancelled"
    FAILED = "failed"
    PURL_OPENED = "purl_opened"
    PURL_COMPLETED = "purl_completed"


RANK: dict[EventType, int] = {
    EventType.CREATED: 10,
    EventType.ADDRESSED: 20,
    EventType.PRINTED: 30,
    EventType.MAILED: 40,
    EventType.IN_TRANSIT: 50,
    EventType.IN_LOCAL_AREA: 60,
    EventType.PROCESSED_FOR_DELIVERY: 70,
    EventType.DELIVERED: 80,
    EventType.RETURNED_TO_SENDER: 90,
    EventType.CANCELLED: 90,
    EventType.FAILED: 90,
}
TERMINAL: frozenset[EventType] = frozenset(
    {EventType.RETURNED_TO_SENDER, EventType.CANCELLED, EventType.FAILED}
)
ENGAGEMENT: frozenset[EventType] = frozenset({EventType.PURL_OPENED, EventType.PURL_COMPLETED})
ALL_TYPES: frozenset[str] = frozenset(t.value for t in EventType)


def rank_of(event_type: str | EventType | None) -> int:
    """Lifecycle rank of a type (0 for unranked types and None)."""
    if event_type is None:
        return 0
    return RANK.get(EventType(event_type), 0)


def next_stage(current: str | None, event_type: str) -> str | None:
    """The piece's stage after `event_type`: monotonic, and a terminal stage sticks."""
    if current is not None and EventType(current) in TERMINAL:
        return current
    new_rank = rank_of(event_type)
    if new_rank > rank_of(current):
        return str(event_type)
    return current


def event_id(source: str, source_event_id: str, event_type: str) -> str:
    """Deterministic canonical id: the same provider event always yields the same id."""
    digest = hashlib.sha256(f"{source}\x1f{source_event_id}\x1f{event_type}".encode()).hexdigest()
    return f"mev_{digest[:32]}"


def utcnow() -> datetime:
    """Timezone-aware current UTC time."""
    return datetime.now(UTC)


class Mailpiece(BaseModel):
    """The physical piece an event is about."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    kind: str | None = None
    country: str | None = None
    campaign_id: str | None = None
    mailing_class: str | None = None
    tracking_number: str | None = None


class Location(BaseModel):
    """Where a scan happened (USPS facility ZIP)."""

    model_config = ConfigDict(extra="ignore")

    zip: str | None = None


class Recipient(BaseModel):
    """Who the piece is addressed to, as far as the provider tells."""

    model_config = ConfigDict(extra="ignore")

    name: str | None = None
    email: str | None = None
    phone: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = None


class CanonicalEvent(BaseModel):
    """One mail event, provider-neutral. Serialized exactly as the public JSON contract."""

    model_config = ConfigDict(extra="ignore")

    id: str
    type: EventType
    occurred_at: datetime
    received_at: datetime
    source: str
    source_event_id: str
    mailpiece: Mailpiece
    stage: EventType | None = None
    location: Location = Field(default_factory=Location)
    recipient: Recipient = Field(default_factory=Recipient)
    metadata: dict[str, Any] = Field(default_factory=dict)
    estimated: bool = False

    @classmethod
    def build(
        cls,
        *,
        source: str,
        source_event_id: str,
        type: EventType | str,
        occurred_at: datetime,
        mailpiece: Mailpiece,
        received_at: datetime | None = None,
        **fields: Any,
    ) -> CanonicalEvent:
        """Make an event with its deterministic id and a provisional stage (its own, if ranked)."""
        etype = EventType(type)
        return cls(
            id=event_id(source, source_event_id, etype.value),
            type=etype,
            occurred_at=occurred_at,
            received_at=received_at or utcnow(),
            source=source,
            source_event_id=source_event_id,
            mailpiece=mailpiece,
            stage=etype if etype in RANK else None,
            **fields,
        )

    @property
    def piece_key(self) -> tuple[str, str]:
        """(source, mailpiece id): the identity of the piece's timeline."""
        return (self.source, self.mailpiece.id)

    def field(self, dotted: str) -> Any:
        """Value at a dotted path of the serialized event (e.g. `metadata.campaign`, `country`).

        `country` is a shorthand for `mailpiece.country` (falling back to `recipient.country`).
        """
        if dotted == "country":
            return self.mailpiece.country or self.recipient.country
        value: Any = self.model_dump(mode="json")
        for part in dotted.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value
