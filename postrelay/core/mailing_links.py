"""The tracking link of a mailing: minted once per mailing before its piece is created, then bound to the piece.

The link is tied to the mailing id: `ensure` mints it and records it in the mailing's record (field `link`) in
one Redis transaction (WATCH on the record), so a worker killed after minting, a retry or a second worker whose
lease overlapped always finds the same link and never mints a second one. The link record carries the mailing
id (`mailing`), the piece's kind and country, the recipient and the metadata the piece is created with, so a
visit after `bind` is the piece's event with the mailing's CRM keys even before the provider sends a webhook.
"""

from __future__ import annotations

import json
from typing import Any

from redis import Redis
from redis.client import Pipeline

from postrelay.core import keys
from postrelay.core.linkconfig import LinksConfig
from postrelay.core.mailing import MailingRequest, provider_metadata, with_link
from postrelay.core.stores import link_binding
from postrelay.core.stores import links as store


class MailingGone(LookupError):
    """The mailing's record no longer exists (expired): nothing is minted for it."""


def recorded(client: Redis, mid: str) -> dict[str, str] | None:
    """The link already minted for mailing `mid` (`{"token", "url", "qr_svg_url", "qr_png_url"}`), or None."""
    raw = client.hget(keys.mailing(mid), "link")
    return json.loads(raw) if raw else None


def ensure(client: Redis, config: LinksConfig, mid: str, request: MailingRequest, now: float) -> dict[str, str]:
    """The mailing's link: the one recorded with the mailing, else a new one minted and recorded atomically.

    Raises `store.LinkError` (naming `link.<field>`) when the link is not allowed (or `[links]` is not
    configured), `MailingGone` when the record expired."""
    found = recorded(client, mid)
    if found is not None or request.link is None:
        return found or {}
    spec = request.link
    if spec.campaign_id is None and request.campaign_id:
        spec = spec.model_copy(update={"campaign_id": request.campaign_id})
    token, fields, ttl = store.prepare(config, spec, now, "link.")
    view = store.urls(config, token)
    to = request.to
    recipient = {"name": to.name or to.company, "email": to.email, "phone": to.phone,
                 "address_line1": to.address_line1, "address_line2": to.address_line2, "city": to.city,
                 "region": to.region, "postal_code": to.postal_code, "country": to.country}
    fields.update(mailing=mid, piece_kind=request.kind, piece_country=to.country,
                  recipient=json.dumps({k: v for k, v in recipient.items() if v}, separators=(",", ":")),
                  metadata=json.dumps(provider_metadata(with_link(request, view), mid), separators=(",", ":")))
    record = keys.mailing(mid)

    def mint(pipe: Pipeline) -> Any:
        current = pipe.hget(record, "link")
        if current:
            return current
        if not pipe.exists(record):
            raise MailingGone(mid)
        pipe.multi()
        store.stage(pipe, token, fields, ttl)
        pipe.hset(record, "link", json.dumps(view))
        return json.dumps(view)

    raw = client.transaction(mint, record, value_from_callable=True)
    return dict(json.loads(str(raw.decode() if isinstance(raw, bytes) else raw)))


def bind(client: Redis, link: dict[str, str], source: str, piece_id: str, now: float) -> bool:
    """Bind the mailing's link to the piece the provider created (idempotent); False when the link is gone or
    bound to another piece."""
    return link_binding.bind(client, link["token"], source, piece_id, now)
