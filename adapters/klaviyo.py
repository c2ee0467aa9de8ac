"""Klaviyo: a custom metric event on the recipient's profile (`POST /api/events`, JSON:API, 202 = accepted).

Klaviyo dedupes on `unique_id`, which is deterministic (trigger event id + rule), so a retry or re-run is
harmless. Requests use the JSON:API media type `application/vnd.api+json` for both accept and content-type,
as Klaviyo's reference does, and the mandatory dated `revision` header: by default the revision of the
OpenAPI document the conformance tests validate against. Klaviyo retires a revision two years after its
release and then answers 410 (or falls forward): a 410 is a permanent failure that names the revision.

The profile is identified by email and/or phone; a phone is sent only when it is a real E.164 number
(`phonenumbers`), so a malformed phone is left out instead of making Klaviyo reject the whole event.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from postrelay.adapters._payload import action_data, dedupe_key, default_name, e164, event_time, scrub
from postrelay.adapters.base import Adapter, AdapterSettings, BaseURL, DeliveryContext, Outcome, Token, classify, excerpt
from postrelay.core.events import CanonicalEvent

JSONAPI = "application/vnd.api+json"
DEFAULT_REVISION = "2026-07-15"  # the revision of Klaviyo's stable.json (tests/conformance/specs)


class KlaviyoAdapter(Adapter):
    """Track a metric event (default: the follow-up rule name) for the recipient's email/phone profile."""

    type = "klaviyo"

    class Settings(AdapterSettings):
        """`[destinations.NAME]` keys for type = "klaviyo"."""

        api_key: Token
        metric: str | None = None
        revision: str = Field(DEFAULT_REVISION, pattern=r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")
        base_url: BaseURL = "https://a.klaviyo.com"

    settings: Settings

    def deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        """Create the event; 202 -> ok (remote id = the unique_id); no email and no phone -> permanent."""
        s = self.settings
        profile: dict[str, Any] = {}
        if event.recipient.email:
            profile["email"] = event.recipient.email
        phone = e164(event.recipient.phone, event.recipient.country or event.mailpiece.country)
        if phone:
            profile["phone_number"] = phone
        if not profile:
            what = (f"phone {event.recipient.phone!r} is not a valid number" if event.recipient.phone
                    else "no phone number")
            return Outcome.permanent(f"recipient has no email and {what}: nothing identifies a Klaviyo profile")
        unique_id = dedupe_key(event, ctx)
        body = {"data": {"type": "event", "attributes": {
            "properties": action_data(event, ctx),
            "metric": {"data": {"type": "metric", "attributes": {"name": s.metric or default_name(event, ctx)}}},
            "profile": {"data": {"type": "profile", "attributes": profile}},
            "unique_id": unique_id,
            "time": event_time(event, ctx).isoformat(),
        }}}
        headers = {"Authorization": f"Klaviyo-API-Key {s.api_key}", "revision": s.revision,
                   "accept": JSONAPI, "content-type": JSONAPI}
        response = self.call("POST", f"{s.base_url.rstrip('/')}/api/events", json=body, headers=headers)
        if isinstance(response, Outcome):
            return scrub(response, list(self.secrets()))
        if response.status_code == 410:
            return scrub(Outcome.permanent(
                f"Klaviyo retired API revision {s.revision} (410 Gone): set `revision` of this destination to a"
                f" current one (default {DEFAULT_REVISION}); {excerpt(response)}", http_status=410),
                list(self.secrets()))
        return scrub(classify(response, remote_id=unique_id), list(self.secrets()))
