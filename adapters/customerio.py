"""Customer.io: an event on a person (`POST /api/v1/customers/{id}/events`, Track API, Basic auth, 200 = ok).

The body `id` is a ULID derived deterministically from the trigger event id + rule, so Customer.io
dedupes a retried or re-run event.

`data.recipient` is reserved by Customer.io: a string address that overrides the recipient of the campaign
the event triggers. The canonical recipient object therefore travels as `data.mail_recipient`, and
`data.recipient` is set only when the destination's `recipient` setting asks for it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from pydantic import field_validator

from postrelay.adapters._payload import action_data, dedupe_key, default_name, event_time, scrub, ulid_for
from postrelay.adapters.base import Adapter, AdapterSettings, BaseURL, DeliveryContext, Outcome, Token, classify, path_segment
from postrelay.core.events import CanonicalEvent


class CustomerIOAdapter(Adapter):
    """Track an event (default name: the follow-up rule) on the person keyed by metadata id or email."""

    type = "customerio"

    class Settings(AdapterSettings):
        """`[destinations.NAME]` keys for type = "customerio"."""

        site_id: Token
        api_key: Token
        name: str | None = None
        customer_id_key: str | None = None
        recipient: str | None = None
        base_url: BaseURL = "https://track.customer.io"

        @field_validator("recipient")
        @classmethod
        def _recipient(cls, value: str | None) -> str | None:
            if value is None:
                return None
            value = value.strip()
            if value != "email" and "@" not in value and "{{" not in value:
                raise ValueError('must be "email" (the mail recipient\'s email), an email address or a Liquid'
                                 ' expression such as "{{customer.email}}"')
            return value

    settings: Settings

    def secrets(self) -> Iterable[str]:
        """The API key, and the Basic credential as it travels (base64)."""
        s = self.settings
        basic = base64.b64encode(f"{s.site_id}:{s.api_key}".encode()).decode()
        return [*super().secrets(), basic]

    def customer_id(self, event: CanonicalEvent) -> str | None:
        """`metadata[customer_id_key]` when configured and present, else the recipient's email."""
        key = self.settings.customer_id_key
        if key:
            value = event.metadata.get(key)
            if value not in (None, "") and not isinstance(value, dict | list | bool):
                return str(value)
        return event.recipient.email or None

    def data(self, event: CanonicalEvent, ctx: DeliveryContext) -> dict[str, Any]:
        """The payload data with the recipient object as `mail_recipient`; `recipient` (reserved: a string
        address overriding the campaign's recipient) only when the `recipient` setting asks for it."""
        data = action_data(event, ctx)
        data["mail_recipient"] = data.pop("recipient")
        wanted = self.settings.recipient
        address = event.recipient.email if wanted == "email" else wanted
        if address:
            data["recipient"] = address
        return data

    def deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        """Track the event; 2xx -> ok (remote id = the ULID); no customer id -> permanent."""
        s = self.settings
        person = self.customer_id(event)
        if not person:
            where = f"metadata[{s.customer_id_key!r}] nor " if s.customer_id_key else ""
            return Outcome.permanent(f"no Customer.io customer id: neither {where}recipient email is set")
        when = event_time(event, ctx)
        event_uid = ulid_for(dedupe_key(event, ctx), when)
        body: dict[str, Any] = {
            "name": s.name or default_name(event, ctx),
            "id": event_uid,
            "timestamp": int(when.timestamp()),
            "data": self.data(event, ctx),
        }
        url = f"{s.base_url.rstrip('/')}/api/v1/customers/{path_segment(person, safe='')}/events"
        response = self.call("POST", url, json=body, auth=(s.site_id, s.api_key))
        if isinstance(response, Outcome):
            return scrub(response, list(self.secrets()))
        return scrub(classify(response, remote_id=event_uid), list(self.secrets()))
