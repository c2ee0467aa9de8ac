"""Twilio: one SMS per follow-up (`POST /2010-04-01/Accounts/{Sid}/Messages.json`, form-encoded, Basic auth).

Twilio has no idempotency key: the step memo `sent` (the message SID) stops a re-run from texting twice.
Twilio error codes refine the HTTP status: 20429 (too many requests) is retried; 21211 (invalid To),
21610 (recipient unsubscribed) and other 4xx are permanent.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

import httpx
from pydantic import field_validator, model_validator

from postrelay.adapters._payload import action_data, e164, render, scrub
from postrelay.adapters.base import (
    Adapter,
    AdapterSettings,
    BaseURL,
    DeliveryContext,
    Outcome,
    Token,
    classify,
    json_object,
    retry_after_seconds,
)
from postrelay.core.events import CanonicalEvent

STEP = "sent"
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
RETRY_CODES = frozenset({20429})
KNOWN_CODES = {
    20429: "too many requests",
    21211: "invalid 'To' phone number",
    21408: "region not enabled for this account",
    21610: "recipient has unsubscribed (replied STOP)",
    21612: "cannot route to this number",
    21614: "'To' number is not a mobile number",
}


class TwilioAdapter(Adapter):
    """Text the recipient (or a fixed number) a message rendered from the event."""

    type = "twilio"

    class Settings(AdapterSettings):
        """`[destinations.NAME]` keys for type = "twilio"."""

        account_sid: Token
        auth_token: Token
        body: str
        from_number: str | None = None
        messaging_service_sid: Token | None = None
        to: str = "recipient"
        base_url: BaseURL = "https://api.twilio.com"

        @field_validator("to")
        @classmethod
        def _to(cls, value: str) -> str:
            value = value.strip()
            if value != "recipient" and not E164.match(value):
                raise ValueError('to must be "recipient" or an E.164 number such as +15551234567')
            return value

        @model_validator(mode="after")
        def _sender(self) -> TwilioAdapter.Settings:
            if not (self.from_number or self.messaging_service_sid):
                raise ValueError("set from_number or messaging_service_sid")
            return self

    settings: Settings

    def secrets(self) -> Iterable[str]:
        """The auth token, and the Basic credential as it travels (base64)."""
        s = self.settings
        basic = base64.b64encode(f"{s.account_sid}:{s.auth_token}".encode()).decode()
        return [*super().secrets(), basic]

    def deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        """Send once; 201 -> ok with the message SID."""
        done = ctx.recall(STEP)
        if done:
            return Outcome.success(remote_id=done)
        s = self.settings
        if s.to == "recipient":
            to = e164(event.recipient.phone, event.recipient.country or event.mailpiece.country)
            if not to:
                reason = "has no phone number" if not event.recipient.phone else "phone is not a valid number"
                return Outcome.permanent(f"recipient {reason} (twilio to = \"recipient\")")
        else:
            to = s.to
        text = render(s.body, action_data(event, ctx)).strip()
        if not text:
            return Outcome.permanent("rendered SMS body is empty")
        form: dict[str, str] = {"To": to, "Body": text}
        if s.messaging_service_sid:
            form["MessagingServiceSid"] = s.messaging_service_sid
        if s.from_number:
            form["From"] = s.from_number
        url = f"{s.base_url.rstrip('/')}/2010-04-01/Accounts/{s.account_sid}/Messages.json"
        response = self.call("POST", url, data=form, auth=(s.account_sid, s.auth_token))
        if isinstance(response, Outcome):
            return scrub(response, list(self.secrets()))
        if response.is_success:
            sid = str(json_object(response).get("sid") or f"accepted:{event.id}")
            ctx.remember(STEP, sid)
            return Outcome.success(remote_id=sid, http_status=response.status_code)
        return scrub(_classify(response), list(self.secrets()))


def _classify(response: httpx.Response) -> Outcome:
    """HTTP classification refined by Twilio's error `code`."""
    body = json_object(response)
    code = body.get("code")
    outcome = classify(response)
    if isinstance(code, int):
        meaning = KNOWN_CODES.get(code)
        outcome.detail = f"twilio error {code}{f' ({meaning})' if meaning else ''}; {outcome.detail}"
        if code in RETRY_CODES and outcome.status != "retry":
            return Outcome.retry(outcome.detail, retry_after=retry_after_seconds(response),
                                 http_status=response.status_code)
    return outcome
