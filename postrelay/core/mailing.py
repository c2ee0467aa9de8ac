"""A mailing: one postcard or letter postrelay creates through a provider's API (`POST /v1/mailings`, triggers,
follow-ups). The request model is shared by the receiver (validation), the store and the workers (creation).

`to`/`from` use the canonical recipient's field names (plus `address_line2` and `company`); the provider
adapters translate them (PostGrid `addressLine1`/`provinceOrState`/…, Lob `address_line1`/`address_state`/…).
`metadata` holds the caller's CRM keys; postrelay adds `postrelay_mailing` (and, for follow-ups, the links
to the first piece) and the provider echoes all of it on every event of the piece.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from postrelay.core.linkspec import LinkSpec

MAILER_TYPES = ("postgrid", "lob")
"""Destination types that can create mailings."""
KINDS = ("postcard", "letter")
STATUSES = ("queued", "created", "failed", "dry_run")
RESERVED_KEY = "postrelay_mailing"
LINK_KEY = "postrelay_link"
PROVIDER_METADATA_KEYS = 20
"""Lob's metadata: "Must be an object with up to 20 key-value pairs" (applied to both providers): the caller's
keys plus what postrelay adds (`added_keys`) must fit."""
MAX_METADATA_KEYS = PROVIDER_METADATA_KEYS - 1  # of the caller's: `postrelay_mailing` is always added
LINK_VARIABLES = {"purl": "url", "qr_url": "qr_png_url"}
"""The merge variables a mailing's link fills: `purl` = the link itself (`<base_url>/t/<token>`, to print as text
or encode in the template's own QR code), `qr_url` = a PNG image of the QR code of that link (`<img src>`)."""
Scalar = str | int | float | bool


class Address(BaseModel):
    """A postal address in canonical field names."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    company: str | None = Field(default=None, max_length=200)
    address_line1: str = Field(min_length=1, max_length=200)
    address_line2: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, max_length=200)
    region: str | None = Field(default=None, max_length=200)
    postal_code: str | None = Field(default=None, max_length=40)
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")
    email: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=60)

    @field_validator("country")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @model_validator(mode="after")
    def _named(self) -> Address:
        if not (self.name or self.company):
            raise ValueError("an address needs a name or a company")
        return self


class LinkRequest(LinkSpec):
    """`link`: a tracking link minted for the piece, with the fields of `POST /v1/links` except `mailpiece`
    (the mailing's own piece is bound to it); its URLs reach the provider as merge variables `LINK_VARIABLES`."""

    @model_validator(mode="after")
    def _no_piece(self) -> LinkRequest:
        if self.mailpiece is not None:
            raise ValueError("mailpiece: not allowed here: the link is bound to the piece this mailing creates")
        return self


class MailingRequest(BaseModel):
    """The body of `POST /v1/mailings` (and what a trigger's mapping renders)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    provider: str = Field(min_length=1, max_length=64, description="a destination of type postgrid or lob")
    kind: Literal["postcard", "letter"]
    front_template: str | None = Field(default=None, max_length=100_000)
    back_template: str | None = Field(default=None, max_length=100_000)
    template: str | None = Field(default=None, max_length=100_000)
    to: Address
    # a canonical address, a provider address/contact id (`adr_…`, `contact_…`) or a provider-native object
    from_: Address | str | dict[str, Any] | None = Field(default=None, alias="from")
    merge_variables: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Scalar] = Field(default_factory=dict)
    campaign_id: str | None = Field(default=None, max_length=200)
    mailing_class: str | None = Field(default=None, max_length=64)
    send_date: str | None = Field(default=None, max_length=40)
    size: str | None = Field(default=None, max_length=20)
    description: str | None = Field(default=None, max_length=500)
    link: LinkRequest | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, Scalar], info: ValidationInfo) -> dict[str, Scalar]:
        if info.context and info.context.get("stored"):
            return v  # a stored mailing: follow-ups add their `postrelay_*` links themselves
        if len(v) > MAX_METADATA_KEYS:
            raise ValueError(f"at most {MAX_METADATA_KEYS} keys (the provider allows 20; postrelay adds one)")
        for key, value in v.items():
            if not key or len(key) > 40 or any(c in key for c in '"\\'):
                raise ValueError(f"key {key!r}: 1-40 characters without \" or \\")
            if key.startswith("postrelay"):
                raise ValueError(f"key {key!r}: keys starting with 'postrelay' are reserved")
            if len(str(value)) > 500 or any(c in str(value) for c in '"\\'):
                raise ValueError(f"value of {key!r}: at most 500 characters, without \" or \\")
        return v

    @model_validator(mode="after")
    def _room_for_added_keys(self, info: ValidationInfo) -> MailingRequest:
        stored = bool(info.context and info.context.get("stored"))
        added = added_keys(self.metadata, self.campaign_id, self.link is not None)
        if not stored and len(self.metadata) + len(added) > PROVIDER_METADATA_KEYS:
            raise ValueError(f"metadata: at most {PROVIDER_METADATA_KEYS - len(added)} keys here: the provider "
                             f"allows {PROVIDER_METADATA_KEYS} and postrelay adds {', '.join(added)}")
        return self

    def with_defaults(self, defaults: dict[str, Any]) -> MailingRequest:
        """Fill unset templates, sender, size and mailing class from the destination's settings."""
        fill: dict[str, Any] = {}
        for key in ("front_template", "back_template", "template", "size", "mailing_class", "description"):
            if getattr(self, key) is None and defaults.get(key) is not None:
                fill[key] = defaults[key]
        sender = defaults.get("from_address") or defaults.get("from_contact")
        if self.from_ is None and sender:
            fill["from_"] = Address.model_validate(sender) if isinstance(sender, dict) and "address_line1" in sender \
                else sender
        merged = {**(defaults.get("merge_variables") or {}), **self.merge_variables}
        return self.model_copy(update={**fill, "merge_variables": merged})

    def missing(self) -> str | None:
        """What this request still lacks for its kind, else None."""
        if self.kind == "postcard" and not (self.front_template and self.back_template):
            return "a postcard needs front_template and back_template (in the request or the destination)"
        if self.kind == "letter":
            if not self.template:
                return "a letter needs template (in the request or the destination)"
            if not self.from_:
                return "a letter needs from (in the request, or from_contact / from_address in the destination)"
        return None

    def as_json(self) -> dict[str, Any]:
        """The JSON stored with the mailing (`from`, not `from_`)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def fingerprint(self) -> str:
        """A stable hash of the request: a repeated Idempotency-Key with another body is a conflict."""
        return hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()[:32]


def stored_request(data: dict[str, Any]) -> MailingRequest:
    """A mailing request as stored with its record (postrelay's own `postrelay_*` metadata allowed)."""
    return MailingRequest.model_validate(data, context={"stored": True})


def mailing_id(scope: str, key: str) -> str:
    """The deterministic mailing id for an idempotency key in its scope (`api`, `trigger:<name>`, `followup`).

    The same key always names the same mailing, so a repeated request, a receiver crash mid-request or a
    worker restart can never create a second one; it is also the provider's Idempotency-Key and the
    `postrelay_mailing` metadata value the worker searches for after a crash.
    """
    return "ml_" + hashlib.sha256(f"{scope}\x00{key}".encode()).hexdigest()[:26]


def with_link(request: MailingRequest, link: dict[str, str]) -> MailingRequest:
    """The request as sent once its link is minted: `purl` and `qr_url` in the merge variables (over the
    destination's defaults), the token as `postrelay_link` in the metadata (the piece's events then name it)."""
    variables = {**request.merge_variables, **{name: link[field] for name, field in LINK_VARIABLES.items()}}
    return request.model_copy(update={"merge_variables": variables,
                                      "metadata": {**request.metadata, LINK_KEY: link["token"]}})


def added_keys(metadata: dict[str, Any], campaign_id: str | None, link: bool) -> list[str]:
    """The keys postrelay writes into a piece's provider metadata next to the caller's (`provider_metadata`):
    `campaign_id` (unless the caller's keys have one), `postrelay_link` (with a link), `postrelay_mailing`."""
    keys = ["campaign_id"] if campaign_id and "campaign_id" not in metadata else []
    if link and LINK_KEY not in metadata:
        keys.append(LINK_KEY)
    return [*keys, RESERVED_KEY]


def provider_metadata(request: MailingRequest, mid: str) -> dict[str, str]:
    """The metadata written into the piece: the caller's keys (as strings), `campaign_id` and `postrelay_mailing`."""
    data = {k: (("true" if v else "false") if isinstance(v, bool) else str(v)) for k, v in request.metadata.items()}
    if request.campaign_id and "campaign_id" not in data:
        data["campaign_id"] = request.campaign_id
    data[RESERVED_KEY] = mid
    return data
