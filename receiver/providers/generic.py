"""Any other sender: a canonical event (or a list of them) signed with Standard Webhooks headers.

The scheme (key decoding and signing) comes from the `standardwebhooks` package; the timestamp check is
ours so the tolerance is configurable and the clock injectable. `webhook-id` is stable across retries and
is the default `source_event_id`, so redeliveries dedupe. The spec's alternative header names `svix-id`,
`svix-timestamp` and `svix-signature` are accepted too (used when the `webhook-*` set is absent).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from standardwebhooks.webhooks import Webhook
from starlette.datastructures import Headers

from postrelay.core.config import GenericSource
from postrelay.core.events import CanonicalEvent, EventType, Location, Mailpiece, Recipient
from postrelay.receiver.errors import bad_request, unauthorized
from postrelay.receiver.providers.base import Normalized, parse_json, to_utc, validation_detail
from postrelay.receiver.signatures import check_tolerance, timestamp_seconds

NAME = "generic"
MAX_WEBHOOK_ID = 200  # `webhook-id` becomes the events' source_event_id (stored): bounded like a body's


class GenericEventIn(BaseModel):
    """The body a generic sender posts: the canonical event without the fields postrelay assigns."""

    model_config = ConfigDict(extra="ignore")

    type: EventType
    occurred_at: datetime
    source_event_id: str | None = Field(default=None, min_length=1, max_length=200)
    mailpiece: Mailpiece
    location: Location = Field(default_factory=Location)
    recipient: Recipient = Field(default_factory=Recipient)
    metadata: dict[str, Any] = Field(default_factory=dict)
    estimated: bool = False


def verify(body: bytes, headers: Headers, settings: GenericSource, now: float) -> Any:
    """Check the Standard Webhooks signature over the raw body; return the parsed JSON and the webhook id."""
    prefix = "webhook" if "webhook-id" in headers or "svix-id" not in headers else "svix"
    msg_id = headers.get(f"{prefix}-id")
    msg_ts = headers.get(f"{prefix}-timestamp")
    msg_sig = headers.get(f"{prefix}-signature")
    if not (msg_id and msg_ts and msg_sig):
        raise unauthorized("missing_signature", "webhook-id, webhook-timestamp and webhook-signature (or svix-id, "
                                                "svix-timestamp and svix-signature) are required")
    if len(msg_id) > MAX_WEBHOOK_ID:
        raise bad_request("invalid_header", f"{prefix}-id is longer than {MAX_WEBHOOK_ID} characters")
    ts = timestamp_seconds(msg_ts, f"{prefix}-timestamp")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise bad_request("invalid_json", "the body is not valid UTF-8") from None
    passed = []
    for item in msg_sig.split():
        version, _, sig = item.partition(",")
        if version == "v1":
            try:
                passed.append(base64.b64decode(sig, validate=True))
            except (binascii.Error, ValueError):
                continue
    try:
        when = datetime.fromtimestamp(int(ts), UTC)
    except (OverflowError, OSError, ValueError):  # e.g. `1e300`: checked before the signature, so unauthenticated
        raise unauthorized("invalid_timestamp", f"{prefix}-timestamp is out of range") from None
    ok = False
    for secret in settings.secrets:
        try:
            expected = base64.b64decode(Webhook(secret).sign(msg_id, when, text).split(",", 1)[1])
        except (binascii.Error, ValueError, RuntimeError):
            continue
        for cand in passed:
            ok |= hmac.compare_digest(expected, cand)
    if not ok:
        raise unauthorized("invalid_signature", f"{prefix}-signature does not match the body for any secret")
    check_tolerance(ts, now, settings.tolerance, f"{prefix}-timestamp")
    return {"webhook_id": msg_id, "body": parse_json(body)}


def normalize(payload: Any, received_at: datetime) -> Normalized:
    """Validate the posted event(s) and assign deterministic ids."""
    body, webhook_id = payload["body"], payload["webhook_id"]
    items = body if isinstance(body, list) else [body]
    if not items:
        raise bad_request("invalid_payload", "empty list of events")
    out = Normalized()
    for i, item in enumerate(items):
        prefix = f"[{i}]." if isinstance(body, list) else ""
        try:
            incoming = GenericEventIn.model_validate(item)
        except ValidationError as err:
            raise bad_request("invalid_payload", f"{prefix}{validation_detail(err)}") from None
        default_id = webhook_id if len(items) == 1 else f"{webhook_id}#{i}"
        occurred = incoming.occurred_at if incoming.occurred_at.tzinfo else incoming.occurred_at.replace(tzinfo=UTC)
        out.events.append(CanonicalEvent.build(
            source=NAME,
            source_event_id=incoming.source_event_id or default_id,
            type=incoming.type,
            occurred_at=to_utc(occurred, f"{prefix}occurred_at"),
            received_at=received_at,
            mailpiece=incoming.mailpiece,
            location=incoming.location,
            recipient=incoming.recipient,
            metadata=incoming.metadata,
            estimated=incoming.estimated,
        ))
    return out
