"""`POST /v1/triggers/{name}`: a `[[triggers]]` rule turns an inbound JSON request into a mailing.

Authentication per trigger: its token (`Authorization: Bearer <token>` or `X-Trigger-Token`, compared in
constant time) or a Standard Webhooks signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
Then: the `where` filter on the payload, the field mapping (`{dotted.path}` placeholders, the same
templates as the follow-up actions), the idempotency key from the payload (default: `webhook-id`), the
per-recipient cooldown, and the one mailing path `Mailings.submit` (caps and dry runs act in the worker).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from postrelay.adapters._payload import render, render_fields
from postrelay.core.config import GenericSource
from postrelay.core.config_mailings import TriggerConfig
from postrelay.core.filters import matches_where
from postrelay.core.mailing import MailingRequest
from postrelay.core.stores import mailings as store
from postrelay.receiver.api.mailings import Mailings, validation_detail
from postrelay.receiver.body import receive_body
from postrelay.receiver.errors import HTTPError, bad_request, unauthorized
from postrelay.receiver.providers import generic
from postrelay.receiver.providers.base import parse_json

if TYPE_CHECKING:
    from postrelay.receiver.service import Receiver


def build(trigger: TriggerConfig, payload: dict[str, Any]) -> dict[str, Any]:
    """The mailing request a trigger's mapping (and its `link` table) renders from `payload`; empty renders
    are left out."""
    fields = {**trigger.map, **{f"link.{k}": v for k, v in trigger.link.items()}}
    try:
        rendered = render_fields(fields, payload)
    except ValueError as exc:
        raise bad_request("invalid_mapping", f"triggers.{trigger.name}.map: {exc}") from None
    return {**rendered, "provider": trigger.provider, "kind": trigger.kind}


def recipient_hash(trigger: TriggerConfig, payload: dict[str, Any], request: MailingRequest) -> str:
    """Who the cooldown counts: `cooldown_key` rendered, else the normalized postal address."""
    if trigger.cooldown_key:
        basis = render(trigger.cooldown_key, payload).strip().casefold()
    else:
        to = request.to
        basis = "|".join(" ".join((v or "").casefold().split()) for v in
                         (to.address_line1, to.address_line2, to.postal_code, to.country))
    return hashlib.sha256(basis.encode()).hexdigest()[:32]


class Triggers:
    """The trigger endpoint of one receiver."""

    def __init__(self, receiver: Receiver, mailings: Mailings) -> None:
        self.receiver = receiver
        self.mailings = mailings
        self.by_name = {t.name: t for t in receiver.config.triggers}

    def routes(self) -> list[Route]:
        """The Starlette routes."""
        return [Route("/v1/triggers/{name}", self.fire, methods=["POST"])]

    def _authenticate(self, trigger: TriggerConfig, request: Request, body: bytes) -> str | None:
        """Check the token or the signature; returns the Standard Webhooks `webhook-id` when signed."""
        if trigger.secrets and request.headers.get("webhook-signature"):
            settings = GenericSource(secrets=trigger.secrets, tolerance=trigger.tolerance)
            generic.verify(body, request.headers, settings, self.receiver.clock())
            return request.headers.get("webhook-id")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = (token if scheme.lower() == "bearer" else request.headers.get("x-trigger-token", "")).strip()
        if not trigger.all_tokens:
            raise unauthorized("missing_signature", "this trigger needs a Standard Webhooks signature "
                               "(webhook-id, webhook-timestamp, webhook-signature)")
        if not given:
            raise unauthorized("missing_token", "send Authorization: Bearer <trigger token> (or X-Trigger-Token)")
        ok = False
        for secret in trigger.all_tokens:
            ok |= hmac.compare_digest(secret.encode(), given.encode())
        if not ok:
            raise unauthorized("invalid_token", "the trigger token is not valid")
        return None

    async def fire(self, request: Request) -> JSONResponse:
        """POST /v1/triggers/{name}."""
        name = request.path_params["name"]
        trigger = self.by_name.get(name)
        if trigger is None:
            raise HTTPError(404, "unknown_trigger", f"no trigger {name!r} is configured")
        server = self.receiver.config.server
        body = await receive_body(request.receive, request.headers.get("content-length"), server.max_body_bytes,
                                  self.receiver.body_deadlines)
        webhook_id = self._authenticate(trigger, request, body)
        payload = parse_json(body)
        if not isinstance(payload, dict):
            raise bad_request("invalid_payload", "the body must be a JSON object")
        if trigger.where and not matches_where(payload, trigger.where):
            return JSONResponse({"mailing_id": None, "status": "ignored", "reason": "where"})
        key = render(trigger.idempotency_key, payload).strip() if trigger.idempotency_key else (webhook_id or "")
        if not key:
            raise bad_request("missing_idempotency_key", f"idempotency_key {trigger.idempotency_key!r} rendered "
                              "empty for this payload")
        try:
            mailing = MailingRequest.model_validate(build(trigger, payload))
        except ValidationError as exc:
            raise bad_request("invalid_mailing", f"trigger {name!r} mapping: {validation_detail(exc)}") from None
        cooldown = None
        if trigger.cooldown > 0:
            cooldown = (store.cooldown_key(name, recipient_hash(trigger, payload, mailing)), trigger.cooldown)
        return await self.mailings.submit(mailing, f"trigger:{name}", key, f"trigger:{name}", trigger=name,
                                          dry_run=trigger.dry_run, cooldown=cooldown, strict=False)
