"""The canonical mail event: one model for every provider, shared by receiver, workers and adapters.

Taxonomy and ranks follow `shared/design/events.md` §1. Ranked types move a mailpiece's stage forward;
unranked ones (`re_routed`, `purl_*`, `informed_delivery_*`) are recorded in its timeline but never change the
stage; terminal stages stick once reached.

`FILTER_FIELDS` lists what a route's or follow-up's `where` may name; `CanonicalEvent.field` reads them, taking
piece attributes from the piece (`piece_attrs`, set by the timeline writer) when the event itself lacks them.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator


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
    INFORMED_DELIVERY_SENT = "informed_delivery_sent"
    INFORMED_DELIVERY_OPENED = "informed_delivery_opened"
    INFORMED_DELIVERY_CLICKED = "informed_delivery_clicked"


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
ENGAGEMENT: frozenset[EventType] = frozenset({
    EventType.PURL_OPENED, EventType.PURL_COMPLETED, EventType.INFORMED_DELIVERY_SENT,
    EventType.INFORMED_DELIVERY_OPENED, EventType.INFORMED_DELIVERY_CLICKED})
"""Unranked engagement: the recipient looked at the mail (pURL / QR visits, USPS Informed Delivery emails)."""
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


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, line/paragraph separators


class Mailpiece(BaseModel):
    """The physical piece an event is about."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=200)
    kind: str | None = None
    country: str | None = None
    campaign_id: str | None = None
    mailing_class: str | None = None
    tracking_number: str | None = None

    @field_validator("id")
    @classmethod
    def _printable_id(cls, v: str) -> str:
        # The id is part of the read API's URL and of Redis keys: a newline or other control character could be
        # stored but never read back (`GET /v1/mailpieces/{source}/{id}`), so it is refused at ingest.
        if _CONTROL.search(v):
            raise ValueError("must not contain control characters (newline, tab, NUL, U+2028, ...)")
        return v


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

    _piece: dict[str, str] = PrivateAttr(default_factory=dict)

    def with_piece(self, attrs: dict[str, str]) -> CanonicalEvent:
        """This event carrying its piece's stored values (`PIECE_ATTRS` paths) of attributes it lacks: `field`
        falls back to them."""
        self._piece = attrs
        return self

    @property
    def piece_attrs(self) -> dict[str, str]:
        """The piece's stored values of the attributes this event lacks, as far as the timeline writer attached
        them (else empty)."""
        return self._piece

    @property
    def piece_key(self) -> tuple[str, str]:
        """(source, mailpiece id): the identity of the piece's timeline.

        A tracking-link visit (source `links`) bound to a provider's piece names that piece's source in
        `metadata.postrelay.piece_source`: its timeline, follow-ups and delivery order are that piece's.
        """
        if self.source == "links":
            detail = self.metadata.get("postrelay")
            piece_source = detail.get("piece_source") if isinstance(detail, dict) else None
            if isinstance(piece_source, str) and piece_source:
                return (piece_source, self.mailpiece.id)
        return (self.source, self.mailpiece.id)

    def field(self, dotted: str) -> Any:
        """Value at a dotted path (one of `FILTER_FIELDS`, e.g. `metadata.campaign`, `recipient.email`, `country`).

        Piece attributes (`mailpiece.*`, `recipient.*`, `country`) the event lacks come from its piece.
        `country` is a shorthand for `mailpiece.country`, falling back to `recipient.country`.
        """
        if dotted == "country":
            return (self.mailpiece.country or self.recipient.country or self._piece.get("mailpiece.country")
                    or self._piece.get("recipient.country"))
        head, _, rest = dotted.partition(".")
        if head in ("mailpiece", "recipient", "location") and rest and "." not in rest:
            value = getattr(getattr(self, head), rest, None)
            if value is None and head != "location":
                return self._piece.get(dotted)
            return value
        tree: Any = self.model_dump(mode="json")
        for part in dotted.split("."):
            if not isinstance(tree, dict) or part not in tree:
                return None
            tree = tree[part]
        return tree


PIECE_ATTRS: tuple[str, ...] = (
    *(f"mailpiece.{name}" for name in Mailpiece.model_fields if name != "id"),
    *(f"recipient.{name}" for name in Recipient.model_fields),
)
"""Piece attributes the timeline store keeps per piece (last value an event sent wins) and filters fall back to."""
FILTER_FIELDS: tuple[str, ...] = (
    "country", "type", "source", "stage", "estimated", "mailpiece.id", *PIECE_ATTRS, "location.zip", "metadata.<key>")
"""What a `where` filter may name; `metadata.` may be followed by any dotted key path (e.g. `metadata.postrelay.issue`)."""


def filter_field_error(path: str) -> str | None:
    """Why `path` cannot be a filter field (None when it can)."""
    if path in FILTER_FIELDS and path != "metadata.<key>":
        return None
    if path.startswith("metadata.") and all(path.split(".")[1:]):
        return None
    return f"unknown filter field {path!r}; a filter may name: {', '.join(FILTER_FIELDS)}"
