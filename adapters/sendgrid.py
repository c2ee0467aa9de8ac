"""SendGrid: a dynamic-template email per follow-up (`POST /v3/mail/send`, Bearer auth, 202 = accepted).

SendGrid has no idempotency key, so the step memo `sent` (the `X-Message-Id`) is what stops a re-run from
mailing twice.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import field_validator

from postrelay.adapters._payload import action_data, scrub
from postrelay.adapters.base import Adapter, AdapterSettings, BaseURL, DeliveryContext, Outcome, Token, classify
from postrelay.core.events import CanonicalEvent

STEP = "sent"


class SendGridAdapter(Adapter):
    """Send a SendGrid dynamic template to the recipient (or a fixed address) with the event as data."""

    type = "sendgrid"

    class Settings(AdapterSettings):
        """`[destinations.NAME]` keys for type = "sendgrid"."""

        api_key: Token
        template_id: str
        from_email: str
        from_name: str | None = None
        to: str = "recipient"
        base_url: BaseURL = "https://api.sendgrid.com"

        @field_validator("to")
        @classmethod
        def _to(cls, value: str) -> str:
            value = value.strip()
            if value != "recipient" and "@" not in value:
                raise ValueError('to must be "recipient" or an email address')
            return value

        @field_validator("template_id")
        @classmethod
        def _dynamic(cls, value: str) -> str:
            # SendGrid: dynamic_template_data "should be used in combination with a Dynamic Template, which can
            # be identified by a `template_id` starting with `d-`": a legacy template would go out unfilled.
            value = value.strip()
            if not value.startswith("d-") or len(value) < 3:
                raise ValueError("must be a dynamic template id (d-…): the event reaches the email as "
                                 "dynamic_template_data, which only dynamic templates use")
            return value

    settings: Settings

    def deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        """Send once; 202 -> ok with the message id; no recipient email -> permanent."""
        done = ctx.recall(STEP)
        if done:
            return Outcome.success(remote_id=done)
        s = self.settings
        if s.to == "recipient":
            if not event.recipient.email:
                return Outcome.permanent("recipient has no email address (sendgrid to = \"recipient\")")
            to: dict[str, str] = {"email": event.recipient.email}
            if event.recipient.name:
                to["name"] = event.recipient.name
        else:
            to = {"email": s.to}
        sender = {"email": s.from_email} | ({"name": s.from_name} if s.from_name else {})
        data = action_data(event, ctx)
        body: dict[str, Any] = {
            "personalizations": [{
                "to": [to],
                "dynamic_template_data": data,
                "custom_args": {"postrelay_event_id": event.id,
                                "postrelay_followup": str(data["followup"] or ctx.destination)},
            }],
            "from": sender,
            "template_id": s.template_id,
        }
        response = self.call("POST", f"{s.base_url.rstrip('/')}/v3/mail/send", json=body,
                             headers={"Authorization": f"Bearer {s.api_key}"})
        if isinstance(response, Outcome):
            return scrub(response, list(self.secrets()))
        if response.is_success:
            remote_id = response.headers.get("x-message-id") or f"accepted:{event.id}"
            ctx.remember(STEP, remote_id)
            return Outcome.success(remote_id=remote_id, http_status=response.status_code)
        outcome = classify(response)
        if outcome.status == "retry" and outcome.retry_after is None:
            outcome.retry_after = _rate_limit_reset(response)
        return scrub(outcome, list(self.secrets()))


def _rate_limit_reset(response: httpx.Response) -> float | None:
    """Seconds until SendGrid's `X-RateLimit-Reset` (a Unix time), when a 429 has no Retry-After."""
    value = response.headers.get("x-ratelimit-reset", "").strip()
    if response.status_code != 429 or not value.isdigit():
        return None
    return max(0.0, float(value) - time.time())
