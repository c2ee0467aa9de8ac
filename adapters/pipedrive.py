"""Pipedrive: one done activity (or one note) on the recipient's person per event.

1. The person id comes from `metadata[person_id_field]`, else `GET /api/v2/persons/search?term=<email>
   &fields=email&exact_match=true`; none or several matches are permanent failures (never guess a person).
2. `mode = "activity"`: `POST /api/v2/activities` with the person as primary participant (API v2 makes
   `person_id` read-only); `mode = "note"`: `POST /v1/notes` (notes have no v2 endpoint yet).
Pipedrive has no idempotency key: the created id is memoized in the delivery context, so a re-run never
creates a second one. Auth is the `x-api-token` header on every call.
Pipedrive has no batch API: deliveries stay one per event, paced by its `x-ratelimit-*` headers (`rate_info`).
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
    DeliveryContext,
    Outcome,
    RateInfo,
    check_token,
    check_url,
    classify,
)
from postrelay.core.events import CanonicalEvent

BURST_WINDOW = 2.0  # seconds: Pipedrive's x-ratelimit-limit counts requests per rolling 2-second window


class PipedriveAdapter(Adapter):
    """Log each mail event on the matching Pipedrive person."""

    type = "pipedrive"
    reads_rate_headers = True

    class Settings(AdapterSettings):
        """`[destinations.NAME]` with `type = "pipedrive"`."""

        token: str
        base_url: str = "https://api.pipedrive.com"
        mode: Literal["activity", "note"] = "activity"
        activity_type: str = Field(default="task", min_length=1)
        person_id_field: str = "pipedrive_person_id"

        _token = field_validator("token")(check_token)
        _url = field_validator("base_url")(check_url)

    settings: Settings

    def deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        """Find the person, then create the activity or note once; ok carries its id."""
        return scrub(self._deliver(event, ctx), self.secrets())

    def _deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        step = self.settings.mode
        done = ctx.recall(step)
        if done is not None:
            return Outcome.success(remote_id=done)
        person_id = self._person_id(event)
        if isinstance(person_id, Outcome):
            return person_id
        if step == "activity":
            path, payload = "/api/v2/activities", self._activity(event, person_id)
        else:
            path, payload = "/v1/notes", {"content": _crm.html_text(event), "person_id": person_id}
        response = self._request("POST", path, json=payload)
        if isinstance(response, Outcome):
            return response
        if not response.is_success:
            return self._classify(response)
        remote_id = _crm.dig(response, "data", "id")
        if remote_id is None:
            return _crm.missing_id(response, f"Pipedrive {step}")
        ctx.remember(step, remote_id)
        return Outcome.success(remote_id=remote_id, http_status=response.status_code)

    def _person_id(self, event: CanonicalEvent) -> int | Outcome:
        field = self.settings.person_id_field
        known = event.metadata.get(field)
        if known is not None:
            try:
                return int(known)
            except (TypeError, ValueError):
                return Outcome.permanent(f"metadata.{field} is not a Pipedrive person id: {known!r}")
        email = event.recipient.email
        if not email:
            return Outcome.permanent(f"event has no recipient email and no metadata.{field}:"
                                     " cannot find the Pipedrive person")
        params = {"term": email, "fields": "email", "exact_match": "true", "limit": 2}
        response = self._request("GET", "/api/v2/persons/search", params=params)
        if isinstance(response, Outcome):
            return response
        if not response.is_success:
            return self._classify(response)
        ids = _person_ids(response)
        if not ids:
            return Outcome.permanent(f"no Pipedrive person with email {email}")
        if len(ids) > 1:
            return Outcome.permanent(f"several Pipedrive persons have email {email}: merge them or set"
                                     f" metadata.{field}")
        return ids.pop()

    def _activity(self, event: CanonicalEvent, person_id: int) -> dict[str, Any]:
        occurred = _crm.timestamp(event.occurred_at)
        return {
            "subject": _crm.summary(event),
            "type": self.settings.activity_type,
            "done": True,
            "due_date": occurred[:10],
            "due_time": occurred[11:16],
            "participants": [{"person_id": person_id, "primary": True}],
            "note": _crm.html_text(event),
        }

    def rate_info(self, response: httpx.Response) -> RateInfo | None:
        """`x-ratelimit-limit` requests per `BURST_WINDOW` (Pipedrive's burst limit), `x-ratelimit-remaining` left,
        `x-ratelimit-reset` seconds until the window refills."""
        limit, remaining = _int(response.headers.get("x-ratelimit-limit")), _int(response.headers.get("x-ratelimit-remaining"))
        if not limit:
            return None
        return RateInfo(limit=limit, remaining=remaining, window=BURST_WINDOW,
                        reset=_int(response.headers.get("x-ratelimit-reset")))

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | Outcome:
        headers = {"x-api-token": self.settings.token}
        return self.call(method, self.settings.base_url + path, headers=headers, **kwargs)

    def _classify(self, response: httpx.Response) -> Outcome:
        """Generic classification, plus: 401 names the token; a 429 without Retry-After waits for the reset."""
        outcome = classify(response)
        reset = response.headers.get("x-ratelimit-reset", "")
        if response.status_code == 401:
            outcome.detail = f"Pipedrive rejected the API token: {outcome.detail}"
        elif response.status_code == 429 and outcome.retry_after is None and reset.isdigit():
            outcome.retry_after = float(reset)
        return outcome


def _int(value: str | None) -> int | None:
    """A whole-number header value, or None."""
    return int(value) if value is not None and value.strip().isdigit() else None


def _person_ids(response: httpx.Response) -> set[int]:
    """Person ids of a v2 search answer (`data.items[].item.id`), tolerating an empty or odd body."""
    try:
        items = response.json()["data"]["items"]
    except (ValueError, KeyError, TypeError):
        return set()
    if not isinstance(items, list):
        return set()
    hits = [i.get("item") for i in items if isinstance(i, dict)]
    return {hit["id"] for hit in hits if isinstance(hit, dict) and isinstance(hit.get("id"), int)}
