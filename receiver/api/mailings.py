"""`POST /v1/mailings`, `GET /v1/mailings`, `GET /v1/mailings/{id}`: mail a postcard or letter, see how it went.

The request is validated and completed with the provider destination's defaults here, then stored by one
Redis script (`postrelay.core.stores.mailings.acreate`) keyed by its Idempotency-Key: the answer `202` means it is
stored and a worker will create the piece. The same key always names the same mailing (and the same
provider Idempotency-Key), so no retry, crash or restart can mail a second piece.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import redis.exceptions
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from postrelay.adapters import adapter_class
from postrelay.adapters._mailing import Mailer, size_problem
from postrelay.core.mailing import (
    LINK_VARIABLES,
    MAILER_TYPES,
    STATUSES,
    MailingRequest,
    mailing_id,
    stored_request,
    with_link,
)
from postrelay.core.redaction import MASK, redact
from postrelay.core.stores import links
from postrelay.core.stores import mailings as store
from postrelay.core.stores.catalog import BadQuery
from postrelay.core.timeline import read_piece
from postrelay.receiver.auth import bearer
from postrelay.receiver.body import receive_body
from postrelay.receiver.errors import HTTPError, bad_request
from postrelay.receiver.providers.base import parse_json

if TYPE_CHECKING:
    from postrelay.receiver.service import Receiver

_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.BusyLoadingError,
                redis.exceptions.ReadOnlyError, redis.exceptions.OutOfMemoryError, OSError)


def validation_detail(exc: ValidationError) -> str:
    """The first few pydantic errors as `field.path: message`."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"] if p not in ("function-after[_named(), Address]",))
        parts.append(f"{loc or 'body'}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


class Mailings:
    """The mailing endpoints of one receiver, and `submit`, which triggers share."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._defaults: dict[str, dict[str, Any]] = {}
        self._mailers: dict[str, Mailer] = {}

    def routes(self) -> list[Route]:
        """The Starlette routes."""
        return [Route("/v1/mailings", self.create, methods=["POST"]),
                Route("/v1/mailings", self.listing, methods=["GET"]),
                Route("/v1/mailings/{mailing_id}", self.show, methods=["GET"])]

    def provider_defaults(self, name: str) -> tuple[str, dict[str, Any]]:
        """(destination type, defaults) of a mailer destination; 400 when `name` is not one."""
        dest = self.receiver.config.destinations.get(name)
        if dest is None or dest.type not in MAILER_TYPES:
            mailers = sorted(n for n, d in self.receiver.config.destinations.items() if d.type in MAILER_TYPES)
            raise bad_request("unknown_provider", f"provider {name!r} is not a destination of type postgrid or lob; "
                              f"configured: {', '.join(mailers) or 'none'}")
        if name not in self._defaults:
            self._defaults[name] = self.mailer(name).mailing_defaults()
        return dest.type, self._defaults[name]

    def mailer(self, name: str) -> Mailer:
        """The destination's adapter (without an HTTP client: for defaults and rendering only); 400 when its
        settings are not valid."""
        if name not in self._mailers:
            dest = self.receiver.config.destinations[name]
            cls = adapter_class(dest.type)
            try:
                settings = cls.Settings.model_validate(dest.settings)
            except ValidationError as exc:
                raise HTTPError(400, "provider_misconfigured",
                                f"destinations.{name}: {validation_detail(exc)}") from None
            self._mailers[name] = cls(name, settings, None)  # type: ignore[arg-type, assignment]
        return self._mailers[name]

    def shown_request(self, view: dict[str, Any]) -> dict[str, Any] | str:
        """The provider request of a stored mailing as it is (or would be) sent, secrets as `***`; or why it
        cannot be shown."""
        name = view["provider"]
        dest = self.receiver.config.destinations.get(name)
        if dest is None or dest.type not in MAILER_TYPES:
            return f"destination {name!r} is no longer a postgrid or lob destination"
        try:
            request = stored_request(view["request"])
        except ValidationError:
            return "the mailing has no complete request (see the reason)"
        if view.get("link"):
            request = with_link(request, view["link"])
        try:
            return self.mailer(name).shown_request(request, view["mailing_id"])
        except HTTPError as exc:
            return exc.detail

    def redacted(self, view: dict[str, Any]) -> dict[str, Any]:
        """The view with the provider destination's secrets (an API key pasted into a merge variable) as `***`."""
        dest = self.receiver.config.destinations.get(view.get("provider") or "")
        if dest is None or dest.type not in MAILER_TYPES:
            return view
        try:
            secrets = list(self.mailer(view["provider"]).secrets())  # type: ignore[attr-defined]
        except HTTPError:
            return view
        return dict(json.loads(redact(json.dumps(view), secrets, mask=MASK)))

    async def view(self, mid: str) -> dict[str, Any] | None:
        """A mailing's view with its piece's stage, secrets redacted; 503 when Redis does not answer."""
        r = self.receiver
        try:
            view = await store.aget(r.redis, mid)
            if view is not None and view["piece_id"] and view["provider_type"]:
                piece = await read_piece(r.pieces, view["provider_type"], view["piece_id"])
                view["stage"] = piece.get("stage") if piece else None
        except REDIS_ERRORS as exc:
            raise r._unavailable(exc) from None
        return None if view is None else self.redacted(view)

    def complete(self, request: MailingRequest) -> tuple[str, MailingRequest]:
        """The request with the destination's defaults; 400 naming what is still missing."""
        ptype, defaults = self.provider_defaults(request.provider)
        full = request.with_defaults(defaults)
        missing = full.missing()
        if missing:
            raise bad_request("invalid_mailing", missing)
        mailer = self.mailer(request.provider)
        wrong_size = size_problem(mailer, full.kind, full.size)
        if wrong_size and request.size is None:  # the destination's default is for its other kind: not used
            full = full.model_copy(update={"size": None})
        elif wrong_size:
            raise bad_request("invalid_mailing", wrong_size)
        limit = mailer.max_merge_variables_chars
        if limit and len(json.dumps(full.merge_variables, separators=(",", ":"), ensure_ascii=False)) > limit:
            raise bad_request("invalid_mailing", f"merge_variables: at most {limit:,} characters as JSON for {ptype}")
        unusable = mailer.unusable_merge_variables(full.merge_variables)
        if unusable:
            raise bad_request("invalid_mailing", f"merge_variables.{unusable[0]}: {ptype} refuses this variable "
                              f"name ({mailer.merge_name_rule})")
        if full.link is not None:
            self.check_link(request)
        return ptype, full

    def check_link(self, request: MailingRequest) -> None:
        """400 unless the request's `link` can be minted: `[links]` configured, an allowed target, and no
        caller-given `purl`/`qr_url` merge variable (the link fills them)."""
        config = self.receiver.config.links
        if request.link is None:
            return
        if not config.enabled:
            raise bad_request("links_not_configured", "link: tracking links need [links] base_url and "
                              "allowed_hosts in the config; omit `link` or configure [links]")
        taken = sorted(set(LINK_VARIABLES) & set(request.merge_variables))
        if taken:
            raise bad_request("merge_variable_conflict", f"merge_variables.{taken[0]}: set by the mailing's link "
                              f"({', '.join(LINK_VARIABLES)}); remove it or remove `link`")
        try:
            links.prepare(config, request.link, self.receiver.clock(), "link.")
        except links.LinkError as exc:
            raise bad_request("invalid_mailing", str(exc)) from None

    async def submit(self, request: MailingRequest, scope: str, key: str, origin: str, *, trigger: str | None = None,
                     dry_run: bool = False, cooldown: tuple[str, float] | None = None,
                     source: dict[str, Any] | None = None, strict: bool = True) -> JSONResponse:
        """Store a mailing (or find the one this key already made) and answer 202 (200 when cooling down)."""
        ptype, full = self.complete(request)
        mid = mailing_id(scope, key)
        r = self.receiver
        now = r.clock()
        fields = store.new_fields(mid, full.as_json(), full.fingerprint(), origin, now, trigger=trigger,
                                  dry_run=dry_run, source=source, provider_type=ptype)
        fields["idempotency_key"] = key
        try:
            result = await store.acreate(r.redis, fields, now, r.config.mailings.retention, cooldown)
        except REDIS_ERRORS as exc:
            raise r._unavailable(exc) from None
        if result["result"] == "cooldown":
            return JSONResponse({"mailing_id": None, "status": "skipped", "reason": "cooldown",
                                 "previous_mailing_id": result["other"]})
        body: dict[str, Any] = {"mailing_id": mid, "status": "queued"}
        if result["result"] == "existing":
            if strict and result["fingerprint"] != fields["fingerprint"]:
                raise HTTPError(409, "idempotency_conflict", "this Idempotency-Key was used for another request "
                                f"(mailing {mid}); use a new key for a new mailing")
            body.update(status=result["status"], replayed=True)
        if dry_run:
            body["dry_run"] = True
        return JSONResponse(body, status_code=202)

    async def create(self, request: Request) -> JSONResponse:
        """POST /v1/mailings (operate token, Idempotency-Key required)."""
        bearer(self.receiver.config.server, request.headers, "operate")
        key = request.headers.get("idempotency-key", "").strip()
        if not key:
            raise bad_request("missing_idempotency_key", "send an Idempotency-Key header (any unique string, "
                              "reused when retrying the same mailing)")
        if not _KEY.match(key):
            raise bad_request("invalid_idempotency_key", "Idempotency-Key: 1-255 printable ASCII characters, no spaces")
        server = self.receiver.config.server
        raw = await receive_body(request.receive, request.headers.get("content-length"), server.max_body_bytes,
                                 self.receiver.body_deadlines)
        data = parse_json(raw)
        if not isinstance(data, dict):
            raise bad_request("invalid_mailing", "the body must be a JSON object")
        try:
            mailing = MailingRequest.model_validate(data)
        except ValidationError as exc:
            raise bad_request("invalid_mailing", validation_detail(exc)) from None
        return await self.submit(mailing, "api", key, "api")

    async def show(self, request: Request) -> JSONResponse:
        """GET /v1/mailings/{id}: status, the provider's piece id and reason, the piece's stage."""
        bearer(self.receiver.config.server, request.headers, "read")
        mid = request.path_params["mailing_id"]
        view = await self.view(mid)
        if view is None:
            raise HTTPError(404, "mailing_not_found", f"no mailing {mid!r}")
        return JSONResponse(view)

    async def listing(self, request: Request) -> JSONResponse:
        """GET /v1/mailings?status=&provider=&trigger=&limit=&cursor=: the newest mailings first."""
        bearer(self.receiver.config.server, request.headers, "read")
        rows, nxt = await self.page(request.query_params)
        return JSONResponse({"mailings": [self.redacted(row) for row in rows], "next_cursor": nxt})

    async def page(self, q: Any) -> tuple[list[dict[str, Any]], str | None]:
        """One page for query parameters `status`, `provider`, `trigger`, `limit` (1-500), `cursor`; 400s
        for bad values, 503 when Redis does not answer (the API and the console share it)."""
        status = q.get("status") or None
        if status is not None and status not in STATUSES:
            raise bad_request("invalid_status", f"status must be one of {', '.join(STATUSES)}")
        try:
            limit = int(q.get("limit", "50"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 500:
            raise bad_request("invalid_limit", "limit must be an integer from 1 to 500")
        try:
            return await store.apage(self.receiver.redis, q.get("cursor") or None, limit, status=status,
                                     provider=q.get("provider") or None, trigger=q.get("trigger") or None)
        except BadQuery as exc:
            raise bad_request("invalid_cursor", str(exc)) from None
        except REDIS_ERRORS as exc:
            raise self.receiver._unavailable(exc) from None
