"""HubSpot: mail status on the contact's properties, and one timeline activity per event.

1. `PATCH /crm/v3/objects/contacts/{id}` (the id from `metadata[contact_id_field]`) or
   `PATCH /crm/v3/objects/contacts/{email}?idProperty=email` with the mapped properties; idempotent, and it
   answers the contact id we associate the activity with.
2. Unless `activity = "none"`: `POST /crm/v3/objects/notes` (association type 202, note to contact) or
   `POST /crm/v3/objects/postal_mail` (type 453, postal mail to contact). HubSpot has no idempotency key, so
   the created id is memoized in the delivery context: a re-run never logs a second activity.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import Field, field_validator

from postrelay.adapters import _crm
from postrelay.adapters._payload import scrub
from postrelay.adapters.base import (
    Adapter,
    AdapterSettings,
    BatchItem,
    DeliveryContext,
    Outcome,
    RateInfo,
    check_token,
    check_url,
    classify,
    path_segment,
)
from postrelay.adapters.hubspot_batch import BATCH_LIMIT, BatchWriter, activity_input
from postrelay.core.events import CanonicalEvent

DEFAULT_PROPERTIES = {
    "last_event": "postrelay_last_mail_event",
    "stage": "postrelay_mail_stage",
    "event_at": "postrelay_mail_event_at",
    "campaign": "postrelay_mail_campaign",
}
# activity setting -> (object type, body property, HUBSPOT_DEFINED association type id to contact)
ACTIVITIES = {
    "note": ("notes", "hs_note_body", 202),
    "postal_mail": ("postal_mail", "hs_postal_mail_body", 453),
}
TEN_SECONDLY_WINDOW = 10.0


class HubSpotAdapter(Adapter):
    """Update the contact's mail properties and log the event on its timeline."""

    type = "hubspot"
    batch_limit = BATCH_LIMIT
    reads_rate_headers = True

    class Settings(AdapterSettings):
        """`[destinations.NAME]` with `type = "hubspot"`."""

        token: str
        base_url: str = "https://api.hubapi.com"
        properties: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PROPERTIES))
        activity: Literal["note", "postal_mail", "none"] = "note"
        contact_id_field: str = "hubspot_contact_id"

        _token = field_validator("token")(check_token)
        _url = field_validator("base_url")(check_url)
        _mapping = field_validator("properties")(_crm.check_mapping)

    settings: Settings

    def deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        """Update the contact, then log the activity once; ok carries the activity (or contact) id."""
        return scrub(self._deliver(event, ctx), self.secrets())

    def deliver_batch(self, items: list[BatchItem]) -> list[Outcome]:
        """Contacts in one batch update/upsert, activities in one batch create (`adapters.hubspot_batch`)."""
        activity = None if self.settings.activity == "none" else ACTIVITIES[self.settings.activity]
        writer = BatchWriter(self._request, self._classify, self.settings.properties, self.settings.contact_id_field,
                             activity)
        return [scrub(outcome, self.secrets()) for outcome in writer.run(items)]

    def rate_info(self, response: httpx.Response) -> RateInfo | None:
        """`X-HubSpot-RateLimit-Max` requests per `-Interval-Milliseconds`, `-Remaining` left; the secondly
        limit (`-Secondly`, `-Secondly-Remaining`) when it is the one nearly spent."""
        headers = response.headers
        if response.status_code == 429 and _crm.dig(response, "policyName") == "TEN_SECONDLY_ROLLING":
            return RateInfo(retry_after=TEN_SECONDLY_WINDOW)  # no Retry-After: wait out the rolling window
        window = _number(headers.get("x-hubspot-ratelimit-interval-milliseconds"))
        limit = _number(headers.get("x-hubspot-ratelimit-max"))
        remaining = _number(headers.get("x-hubspot-ratelimit-remaining"))
        secondly = _number(headers.get("x-hubspot-ratelimit-secondly"))
        secondly_left = _number(headers.get("x-hubspot-ratelimit-secondly-remaining"))
        if secondly and secondly_left is not None and secondly_left <= 1:
            return RateInfo(limit=int(secondly), remaining=int(secondly_left), window=1.0)
        if not limit or not window:
            return None
        return RateInfo(limit=int(limit), remaining=None if remaining is None else int(remaining), window=window / 1000)

    def _deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        done = ctx.recall("activity")
        if done is not None:
            return Outcome.success(remote_id=done)
        contact_id = self._update_contact(event)
        if isinstance(contact_id, Outcome):
            return contact_id
        if self.settings.activity == "none":
            return Outcome.success(remote_id=contact_id)
        return self._log_activity(event, contact_id, ctx)

    def _update_contact(self, event: CanonicalEvent) -> str | Outcome:
        known_id = event.metadata.get(self.settings.contact_id_field)
        email = event.recipient.email
        if known_id:
            key, params, who = path_segment(str(known_id), safe=""), {}, f"id {known_id}"
        elif email:
            key, params, who = path_segment(email, safe="@"), {"idProperty": "email"}, f"email {email}"
        else:
            return Outcome.permanent(f"event has no recipient email and no metadata.{self.settings.contact_id_field}:"
                                     " cannot find the HubSpot contact")
        path = f"/crm/v3/objects/contacts/{key}"
        properties = _crm.mapped(self.settings.properties, event)
        if properties:
            response = self._request("PATCH", path, params=params, json={"properties": properties})
        else:
            response = self._request("GET", path, params=params)
        if isinstance(response, Outcome):
            return response
        if response.status_code == 404:
            return Outcome.permanent(f"no HubSpot contact with {who}", http_status=404)
        if not response.is_success:
            return self._classify(response)
        return _crm.dig(response, "id") or _crm.missing_id(response, "HubSpot contact")

    def _log_activity(self, event: CanonicalEvent, contact_id: str, ctx: DeliveryContext) -> Outcome:
        object_type, body_property, association_type = ACTIVITIES[self.settings.activity]
        payload = activity_input(event, contact_id, body_property, association_type)
        response = self._request("POST", f"/crm/v3/objects/{object_type}", json=payload)
        if isinstance(response, Outcome):
            return response
        if not response.is_success:
            return self._classify(response)
        activity_id = _crm.dig(response, "id")
        if activity_id is None:
            return _crm.missing_id(response, f"HubSpot {object_type}")
        ctx.remember("activity", activity_id)
        return Outcome.success(remote_id=activity_id, http_status=response.status_code)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | Outcome:
        headers = {"Authorization": f"Bearer {self.settings.token}"}
        return self.call(method, self.settings.base_url + path, headers=headers, **kwargs)

    def _classify(self, response: httpx.Response) -> Outcome:
        """Generic classification, plus: 401 names the token; a 10-second-policy 429 waits out its window."""
        outcome = classify(response)
        if response.status_code == 401:
            outcome.detail = f"HubSpot rejected the access token: {outcome.detail}"
        elif (response.status_code == 429 and outcome.retry_after is None
              and _crm.dig(response, "policyName") == "TEN_SECONDLY_ROLLING"):
            outcome.retry_after = TEN_SECONDLY_WINDOW
        return outcome


def _number(value: str | None) -> float | None:
    """A numeric header value, or None when absent or not a number."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
