"""Outbound webhook (Zapier / Make / n8n catch hooks, your own endpoint): the canonical event, signed.

The body is the canonical event JSON unchanged. Headers follow Standard Webhooks: `webhook-id` is the
canonical event id (stable across retries, so receivers dedupe on it), `webhook-timestamp` is the send
time in seconds and, when a `secret` is set, `webhook-signature` is `v1,<base64 HMAC-SHA256>`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import Field, field_validator
from standardwebhooks.webhooks import Webhook

from adapters import _crm
from adapters.base import Adapter, AdapterSettings, DeliveryContext, Outcome, check_url, classify, excerpt
from postrelay.events import CanonicalEvent

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
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
        timeout: float | None = Field(default=None, gt=0)

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
        """POST the event; 2xx ok, 410 permanent (endpoint disabled), 408/425/429/5xx retry."""
        return _crm.redacted(self._post(event), self.secrets())

    def _post(self, event: CanonicalEvent) -> Outcome:
        body = event.model_dump_json()
        now = datetime.now(UTC).replace(microsecond=0)
        headers = {
            **self.settings.headers,
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if self.settings.secret:
            headers["webhook-signature"] = Webhook(self.settings.secret).sign(event.id, now, body)
        options = {"timeout": self.settings.timeout} if self.settings.timeout else {}
        response = self.call("POST", self.settings.url, content=body.encode(), headers=headers, **options)
        if isinstance(response, Outcome):
            return response
        if response.status_code == 410:
            return Outcome.permanent(f"receiver disabled this endpoint (410 Gone): {excerpt(response)}",
                                     http_status=410)
        return classify(response)
