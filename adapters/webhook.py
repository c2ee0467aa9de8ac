"""Outbound webhook (Zapier / Make / n8n catch hooks, your own endpoint): the canonical event, signed.

The body is the canonical event JSON unchanged. Headers follow Standard Webhooks: `webhook-id` is the
canonical event id (stable across retries, so receivers dedupe on it), `webhook-timestamp` is the send
time in seconds and, when a `secret` is set, `webhook-signature` is `v1,<base64 HMAC-SHA256>`.

A follow-up delivered here is a message of its own: its `webhook-id` is derived from the follow-up's dedupe
key (`fup_…`, stable across its retries, distinct from the trigger event's id, which a deduplicating
receiver has already seen) and its body is the trigger event plus a `followup` object saying so.

As Standard Webhooks recommends, 2xx is success, 410 means "disable this endpoint" (permanent) and every
other answer is a failure to retry on the schedule. Keys must decode to 24 to 64 bytes. The timeout is the
destination's `timeout`, else the worker's `[delivery].timeout` (15 s by default, as Standard Webhooks asks).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import Field, field_validator
from standardwebhooks.webhooks import Webhook

from postrelay.adapters._payload import dedupe_key, followup_fields, scrub
from postrelay.adapters.base import Adapter, AdapterSettings, DeliveryContext, Outcome, check_url, excerpt, retry_after_seconds
from postrelay.core.events import CanonicalEvent

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
KEY_BYTES = (24, 64)
RESERVED_HEADERS = frozenset({"webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                              "content-length", "host", "transfer-encoding"})


class WebhookAdapter(Adapter):
    """POST each event to `url` with Standard Webhooks headers."""

    type = "webhook"

    class Settings(AdapterSettings):
        """`[destinations.NAME]` with `type = "webhook"`."""

        url: str
        secret: str | None = None
        headers: dict[str, str] = Field(default_factory=dict)
        timeout: float | None = Field(default=None, gt=0)  # None: the worker's [delivery].timeout (15 s)

        _url = field_validator("url")(check_url)

        @field_validator("secret")
        @classmethod
        def _secret_is_key(cls, value: str | None) -> str | None:
            if value is None:
                return value
            key = value.removeprefix("whsec_")
            try:
                decoded = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
            except binascii.Error:
                decoded = b""
            if not decoded:
                raise ValueError("must be a Standard Webhooks key: whsec_<base64>")
            low, high = KEY_BYTES
            if not low <= len(decoded) <= high:
                raise ValueError(f"must be a Standard Webhooks key of {low} to {high} bytes (whsec_ + base64);"
                                 f" this one has {len(decoded)}")
            return value

        @field_validator("headers")
        @classmethod
        def _safe_headers(cls, value: dict[str, str]) -> dict[str, str]:
            for name, header_value in value.items():
                if not _TOKEN.match(name):
                    raise ValueError(f"header name {name!r} is not a valid HTTP header name")
                if name.lower() in RESERVED_HEADERS:
                    raise ValueError(f"header {name!r} is set by postrelay")
                if any(char in header_value for char in "\r\n\0"):
                    raise ValueError(f"header {name!r}: value must not contain CR, LF or NUL")
                if not header_value.isascii():
                    raise ValueError(f"header {name!r}: value must be ASCII")
            return value

    settings: Settings

    def secrets(self) -> Iterable[str]:
        """The signing key and every static header value (API keys travel there)."""
        return [*super().secrets(), *self.settings.headers.values()]

    def deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        """POST the event; 2xx ok, 410 permanent (endpoint disabled), anything else retry."""
        return scrub(self._post(event, ctx), self.secrets())

    def message(self, event: CanonicalEvent, ctx: DeliveryContext) -> tuple[str, str]:
        """(`webhook-id`, body): the event's own id and JSON, or for a follow-up its own id and the event
        with a `followup` object (rule, trigger_event_id, estimated, late, scheduled_for, fired_at)."""
        if not ctx.extra.get("followup"):
            return event.id, event.model_dump_json()
        facts = followup_fields(event, ctx)
        followup = {"rule": facts.pop("followup"), **facts}
        body = json.dumps({**event.model_dump(mode="json"), "followup": followup}, separators=(",", ":"))
        return "fup_" + hashlib.sha256(dedupe_key(event, ctx).encode()).hexdigest()[:32], body

    def _post(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        message_id, body = self.message(event, ctx)
        now = datetime.now(UTC).replace(microsecond=0)
        headers = {
            **self.settings.headers,
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if self.settings.secret:
            headers["webhook-signature"] = Webhook(self.settings.secret).sign(message_id, now, body)
        options = {"timeout": self.settings.timeout} if self.settings.timeout else {}
        response = self.call("POST", self.settings.url, content=body.encode(), headers=headers, **options)
        if isinstance(response, Outcome):
            return response
        code = response.status_code
        if 200 <= code < 300:
            return Outcome.success(http_status=code)
        if code == 410:
            return Outcome.permanent(f"receiver disabled this endpoint (410 Gone): {excerpt(response)}",
                                     http_status=410)
        return Outcome.retry(excerpt(response), retry_after=retry_after_seconds(response), http_status=code)
