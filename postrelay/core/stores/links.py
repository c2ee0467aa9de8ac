"""Tracking links: minting, reading, revoking, and the canonical visit events they produce.

A link is one JSON string `pr:link:{token}` on the queue Redis (one bulk reply to parse on the redirect's
path; the scripts in `postrelay/core/lua/link_*.lua` update it with cjson): the target (validated, parameters appended), an
optional goal URL, campaign, the user's `ref`, expiry, revocation and — once known — the piece it is bound
to (`piece_source`, `piece_id`, with the piece's kind, country, recipient and metadata copied from the event
that bound it). Tokens are 16 URL-safe characters carrying 96 random bits.

Every function takes a Redis client: `mint`/`mint_many`/`read`/`revoke`/`bind` are synchronous (CLI,
workers, the mailings creator); the `a…` twins do the same on an asyncio client (the receiver). Binding by
events (`postrelay_link` / `ref` in a piece's metadata) happens in the worker: `postrelay.core.stores.link_binding`.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from postrelay.core import keys
from postrelay.core.events import CanonicalEvent, EventType, Location, Mailpiece, Recipient, event_id
from postrelay.core.linkconfig import LinksConfig
from postrelay.core.linkspec import LinkSpec, PieceRef  # noqa: F401  (PieceRef: re-exported as store.PieceRef)
from postrelay.core.linktargets import TargetError, check_url, with_params
from postrelay.core.scripts import lua

LINK_SOURCE = "links"
TOKEN_BYTES = 12  # 96 bits
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,43}$")


class LinkError(ValueError):
    """A link cannot be minted as asked; `field` names the offending input."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}" if field_name else message)
        self.field = field_name


@dataclass
class Link:
    """A stored link record."""

    token: str
    target: str
    goal_url: str | None = None
    campaign_id: str | None = None
    ref: str | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    piece_source: str | None = None
    piece_id: str | None = None
    piece_kind: str | None = None
    piece_country: str | None = None
    recipient: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def bound(self) -> bool:
        """True once the link belongs to a piece."""
        return bool(self.piece_source and self.piece_id)

    def status(self, now: float) -> str:
        """`active`, `expired` or `revoked`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


def new_token() -> str:
    """A fresh token: 16 URL-safe characters, 96 bits from the OS's CSPRNG."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def from_json(token: str, raw: bytes | str | None) -> Link | None:
    """The record from its stored JSON; None when there is none."""
    if not raw:
        return None
    d = orjson.loads(raw)
    target = d.get("target")
    if not isinstance(target, str) or not target:
        return None
    get = d.get
    recipient, metadata = get("recipient"), get("metadata")
    return Link(token=token, target=target, goal_url=get("goal"), campaign_id=get("campaign"), ref=get("ref"),
                created_at=get("created") or 0.0, expires_at=get("expires"), revoked_at=get("revoked"),
                piece_source=get("piece_source"), piece_id=get("piece_id"), piece_kind=get("piece_kind"),
                piece_country=get("piece_country"), recipient=orjson.loads(recipient) if recipient else {},
                metadata=orjson.loads(metadata) if metadata else {})


def redirect_fields(raw: bytes | str | None) -> tuple[str, str | None, float | None, float | None] | None:
    """(target, goal URL, expires_at, revoked_at) of a stored record, what a redirect needs (no `Link`, no
    nested JSON: the visit path's projection of `from_json`); None when there is no usable record."""
    if not raw:
        return None
    d = orjson.loads(raw)
    target = d.get("target")
    if not isinstance(target, str) or not target:
        return None
    return target, d.get("goal"), d.get("expires"), d.get("revoked")


def urls(config: LinksConfig, token: str) -> dict[str, str]:
    """`{"token", "url", "qr_svg_url", "qr_png_url"}`: what minting answers."""
    base = config.base_url or ""
    return {"token": token, "url": f"{base}/t/{token}", "qr_svg_url": f"{base}/v1/links/{token}/qr.svg",
            "qr_png_url": f"{base}/v1/links/{token}/qr.png"}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def public(config: LinksConfig, link: Link, now: float) -> dict[str, Any]:
    """The JSON view of a link (`GET /v1/links/{token}`)."""
    return {**urls(config, link.token), "target_url": link.target, "goal_url": link.goal_url,
            "goal": "redirect" if link.goal_url else "pixel", "campaign_id": link.campaign_id, "ref": link.ref,
            "mailpiece": {"source": link.piece_source, "id": link.piece_id} if link.bound else None,
            "status": link.status(now), "created_at": _iso(link.created_at), "expires_at": _iso(link.expires_at),
            "revoked_at": _iso(link.revoked_at)}


def parse_spec(data: Any, where: str = "") -> LinkSpec:
    """Validate one request item; LinkError names the field (prefixed with `where`, e.g. `links[3].`)."""
    if not isinstance(data, dict):
        raise LinkError(where.rstrip("."), "must be a JSON object")
    try:
        return LinkSpec.model_validate(data)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(p) for p in e["loc"])
        raise LinkError(f"{where}{loc}", e["msg"].removeprefix("Value error, ")) from None


def prepare(config: LinksConfig, spec: LinkSpec, now: float, where: str = "") -> tuple[str, dict[str, Any], int]:
    """(token, record fields, TTL seconds) for a new link; LinkError when the spec is not allowed."""
    if not config.enabled:
        raise LinkError("", "links are not configured: set [links] base_url and allowed_hosts")
    try:
        target = with_params(check_url(spec.target_url, config.allowed_hosts), spec.utm, spec.query)
        check_url(target, config.allowed_hosts)
    except TargetError as exc:
        name = "utm" if str(exc).startswith("utm") else "query" if str(exc).startswith("query") else "target_url"
        raise LinkError(f"{where}{name}", str(exc).removeprefix("target_url ").removeprefix(f"{name}: ")) from None
    goal = None
    if spec.goal_url is not None:
        try:
            goal = check_url(spec.goal_url, config.allowed_hosts, "goal_url")
        except TargetError as exc:
            raise LinkError(f"{where}goal_url", str(exc).removeprefix("goal_url ")) from None
    expires = spec.expires_at.timestamp() if spec.expires_at is not None else None
    if expires is not None and expires <= now:
        raise LinkError(f"{where}expires_at", "is in the past")
    fields: dict[str, Any] = {"target": target, "created": now}
    if goal:
        fields["goal"] = goal
    if spec.campaign_id:
        fields["campaign"] = spec.campaign_id
    if spec.ref:
        fields["ref"] = spec.ref
    if expires is not None:
        fields["expires"] = expires
    if spec.mailpiece is not None:
        fields.update(piece_source=spec.mailpiece.source, piece_id=spec.mailpiece.id, bound_at=now, bound_by="mint")
    ttl = int((expires or now) - now + config.retention)
    return new_token(), fields, max(1, ttl)


def stage(pipe: Any, token: str, fields: dict[str, Any], ttl: int) -> None:
    """Queue the writes of one prepared link (`prepare`) on a pipeline or transaction."""
    pipe.set(keys.link(token), json.dumps(fields, separators=(",", ":")), ex=ttl)
    if "ref" in fields and "piece_id" not in fields:
        pipe.sadd(keys.link_ref(fields["ref"]), token)
        pipe.expire(keys.link_ref(fields["ref"]), ttl, gt=True)
        pipe.expire(keys.link_ref(fields["ref"]), ttl, nx=True)


def _prepare_all(config: LinksConfig, specs: Sequence[LinkSpec], now: float,
                 where: str) -> list[tuple[str, dict[str, Any], int]]:
    return [prepare(config, spec, now, f"{where}[{i}]." if where else "") for i, spec in enumerate(specs)]


def mint_many(redis: Any, config: LinksConfig, specs: Sequence[LinkSpec], now: float,
              where: str = "links") -> list[dict[str, str]]:
    """Store new links (all or none are valid: LinkError names the first bad item); their URLs, in order."""
    made = _prepare_all(config, specs, now, where)
    pipe = redis.pipeline(transaction=True)
    for token, fields, ttl in made:
        stage(pipe, token, fields, ttl)
    pipe.execute()
    return [urls(config, token) for token, _, _ in made]


async def amint_many(redis: Any, config: LinksConfig, specs: Sequence[LinkSpec], now: float,
                     where: str = "links") -> list[dict[str, str]]:
    """`mint_many` on an asyncio client."""
    made = _prepare_all(config, specs, now, where)
    pipe = redis.pipeline(transaction=True)
    for token, fields, ttl in made:
        stage(pipe, token, fields, ttl)
    await pipe.execute()
    return [urls(config, token) for token, _, _ in made]


def mint(redis: Any, config: LinksConfig, now: float, *, target_url: str, campaign_id: str | None = None,
         ref: str | None = None, mailpiece: dict[str, str] | None = None, expires_at: datetime | None = None,
         utm: dict[str, str] | None = None, query: dict[str, str] | None = None,
         goal_url: str | None = None) -> dict[str, str]:
    """Mint one link (sync; for the CLI, workers and mailings): `{"token", "url", "qr_svg_url", "qr_png_url"}`.

    LinkError (a ValueError) names the field that is not allowed.
    """
    spec = parse_spec({"target_url": target_url, "campaign_id": campaign_id, "ref": ref, "mailpiece": mailpiece,
                       "expires_at": expires_at, "utm": utm or {}, "query": query or {}, "goal_url": goal_url})
    return mint_many(redis, config, [spec], now, where="")[0]


def read(redis: Any, token: str) -> Link | None:
    """The link with this token, or None (unknown, malformed or expired from Redis)."""
    return from_json(token, redis.get(keys.link(token))) if TOKEN_RE.match(token) else None


async def aread(redis: Any, token: str) -> Link | None:
    """`read` on an asyncio client."""
    return from_json(token, await redis.get(keys.link(token))) if TOKEN_RE.match(token) else None


async def arevoke(redis: Any, token: str, now: float) -> Link | None:
    """Revoke a link (idempotent: the first revocation time stays); the record, or None if unknown."""
    if not TOKEN_RE.match(token):
        return None
    return from_json(token, await lua("link_revoke").register(redis)(keys=[keys.link(token)], args=[now]))



_RECIPIENT = tuple(Recipient.model_fields)  # the JSON keys of the models, however they grow
_PIECE = dict.fromkeys(Mailpiece.model_fields)
_LOCATION = dict.fromkeys(Location.model_fields)


def piece_fields(link: Link, token: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """The `mailpiece`, `recipient` and `metadata` (JSON values) of a visit event for `link`, bound or not;
    `metadata` is the visit's own `metadata.postrelay` (kept, with `piece_source` added when bound)."""
    meta: dict[str, Any] = {k: v for k, v in link.metadata.items() if k != "postrelay"}
    meta["postrelay_link"] = token
    if link.ref:
        meta["ref"] = link.ref
    detail = {**metadata, "link": token}
    if link.bound:
        detail["piece_source"] = link.piece_source
        piece = {"id": link.piece_id or token, "kind": link.piece_kind, "country": link.piece_country,
                 "campaign_id": link.campaign_id or link.metadata.get("campaign_id")}
    else:
        piece = {"id": token, "kind": "link", "country": None, "campaign_id": link.campaign_id}
    piece = {**_PIECE, **piece}
    meta["postrelay"] = detail
    recipient = {name: link.recipient.get(name) for name in _RECIPIENT}
    return {"mailpiece": piece, "recipient": recipient, "metadata": meta}


def _iso_z(moment: datetime) -> str:
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


class VisitJSON:
    """A visit event already serialized, for `IngestQueue.enqueue` (which needs only `id` and the JSON)."""

    __slots__ = ("id", "json")

    def __init__(self, event_id_: str, json_text: str) -> None:
        self.id = event_id_
        self.json = json_text

    def model_dump_json(self) -> str:
        """The event's canonical JSON."""
        return self.json


def visit_json(link: Link, etype: EventType, occurred_at: datetime, visit_id: str,
               detail: dict[str, Any] | None = None) -> VisitJSON:
    """The canonical `purl_opened` / `purl_completed` event of one visit (source `links`), serialized.

    Built as plain JSON (no model on the redirect's path); `visit_event` is the same event as a model."""
    when = _iso_z(occurred_at)
    eid = event_id(LINK_SOURCE, visit_id, etype.value)
    body = {"id": eid, "type": etype.value, "occurred_at": when, "received_at": when, "source": LINK_SOURCE,
            "source_event_id": visit_id, **piece_fields(link, link.token, {"visit": visit_id, **(detail or {})}),
            "stage": None, "location": dict(_LOCATION), "estimated": False}
    return VisitJSON(eid, orjson.dumps(body, default=str).decode())


_T, _V, _W = "tokenQ0placeholder", "visitQ0placeholder", datetime(1999, 1, 2, 3, 4, 5, 678901, UTC)


def _unbound_template(etype: EventType) -> str:
    """`visit_json` of a link known only by its token, as a %-format string (the same bytes, filled in)."""
    text = visit_json(Link(token=_T, target=""), etype, _W, _V).json.replace("%", "%%")
    for value, name in ((event_id(LINK_SOURCE, _V, etype.value), "e"), (_V, "v"), (_T, "t"), (_iso_z(_W), "w")):
        assert text.count(value) >= 1, value
        text = text.replace(value, f"%({name})s")
    return text


_UNBOUND = {etype: _unbound_template(etype) for etype in (EventType.PURL_OPENED, EventType.PURL_COMPLETED)}


def unbound_visit_json(token: str, etype: EventType, occurred_at: datetime, visit_id: str) -> VisitJSON:
    """`visit_json(Link(token=token, target=""), etype, occurred_at, visit_id)` from a template filled in with
    `%` (a few µs instead of building and serializing the dicts): what the redirect queues for a link it has
    not read, the worker completing the event from the link. `token` and `visit_id` are JSON-safe as they
    are (`TOKEN_RE` characters and dots)."""
    eid = event_id(LINK_SOURCE, visit_id, etype.value)
    return VisitJSON(eid, _UNBOUND[etype] % {"e": eid, "v": visit_id, "t": token, "w": _iso_z(occurred_at)})


def visit_event(link: Link, etype: EventType, occurred_at: datetime, visit_id: str,
                detail: dict[str, Any] | None = None) -> CanonicalEvent:
    """`visit_json` as a validated `CanonicalEvent`."""
    return CanonicalEvent.model_validate_json(visit_json(link, etype, occurred_at, visit_id, detail).json)
