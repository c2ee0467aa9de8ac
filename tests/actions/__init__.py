"""Follow-up action adapters against loopback servers that behave like each vendor's API."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import httpx

from postrelay.adapters.base import Adapter, DeliveryContext
from postrelay.core.events import CanonicalEvent, Mailpiece, Recipient

FIRED_AT = "2025-03-10T14:00:00+00:00"


def make_event(*, recipient: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
               country: str = "US", estimated: bool = False) -> CanonicalEvent:
    """A delivered event for a US letter with a fully known recipient (override pieces as needed)."""
    who = {"name": "Jane Q Public", "email": "jane@example.com", "phone": "(617) 555-0123",
           "address_line1": "1 Main St", "city": "Boston", "region": "MA", "postal_code": "02110",
           "country": country}
    if recipient is not None:
        who = recipient
    return CanonicalEvent.build(
        source="postgrid", source_event_id="evt_1", type="delivered",
        occurred_at=datetime(2025, 3, 7, 15, 0, tzinfo=UTC),
        mailpiece=Mailpiece(id="letter_abc", kind="letter", country=country, campaign_id="spring"),
        recipient=Recipient(**who),
        metadata={"crm_id": "C-42", "offer": "10OFF"} if metadata is None else metadata,
        estimated=estimated,
    )


def make_ctx(rule: str | None = "second_touch", *, estimated: bool = True, late: bool = False,
             attempt: int = 1, memo: dict[str, str] | None = None) -> DeliveryContext:
    """The context the follow-up scheduler hands an action (`extra` as documented in adapters.base)."""
    extra: dict[str, Any] = {}
    if rule is not None:
        extra = {"followup": rule, "trigger_event_id": None, "estimated": estimated, "late": late,
                 "scheduled_for": "2025-03-10T13:59:00+00:00", "fired_at": FIRED_AT}
    ctx = DeliveryContext(destination="action_dest", attempt=attempt, extra=extra)
    if memo:
        ctx._memo.update(memo)
    return ctx


def build(cls: type[Adapter], client: httpx.Client, **settings: Any) -> Any:
    """An adapter instance the way the worker builds one from a `[destinations.NAME]` table."""
    return cls("action_dest", cls.Settings(**settings), client)


def dead_url() -> str:
    """A loopback URL nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
