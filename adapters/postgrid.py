"""PostGrid: a follow-up postcard or letter to the same recipient (`POST /print-mail/v1/postcards|letters`),
and the pieces of mailings (`POST /v1/mailings`, triggers: `create_mailing`, see docs/mailings.md).

Plain httpx rather than the `postgrid-python` SDK: the adapter contract wants the worker's shared
`httpx.Client`, no exceptions and no retries of its own (the worker owns those), and this is one JSON POST.

Order creation sends an `Idempotency-Key` header (as the official SDK does on postcards and letters),
derived from the follow-up's dedupe key (`adapters._payload.idempotency_key`): a create whose answer was lost
and is sent again gets the first order back instead of printing a second piece. Two more guards stay: the
step memo `created` (the order id) and, unless `dedupe_search = false`, a search of existing orders for the
deterministic `postrelay_dedupe` metadata value (covers a key PostGrid no longer remembers).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import model_validator

from postrelay.adapters._mailing import IDEMPOTENCY_HEADER, create_piece, find_piece, is_html, shown_request, size_pair
from postrelay.adapters._payload import dedupe_key, followup_fields, idempotency_key, scrub, split_name
from postrelay.adapters.base import (
    Adapter,
    AdapterSettings,
    BaseURL,
    DeliveryContext,
    Outcome,
    Token,
    classify,
    excerpt,
    json_object,
)
from postrelay.core.events import CanonicalEvent
from postrelay.core.mailing import Address, MailingRequest, provider_metadata

STEP = "created"
POSTCARD_SIZES = frozenset({"6x4", "9x6", "11x6"})
LETTER_SIZES = frozenset({"us_letter", "a4"})


class PostGridAdapter(Adapter):
    """Create a postcard (front/back templates) or letter (template) addressed to the event's recipient."""

    type = "postgrid"
    max_merge_variables_chars: int | None = None  # PostGrid documents no limit
    merge_name_rule = ""  # nor a rule for the names

    class Settings(AdapterSettings):
        """`[destinations.NAME]` keys for type = "postgrid"."""

        api_key: Token
        kind: Literal["postcard", "letter"] | None = None  # required for follow-ups; mailings name their kind
        template: str | None = None
        front_template: str | None = None
        back_template: str | None = None
        size: str | None = None
        mailing_class: str | None = None
        express: bool = False
        from_contact: str | dict[str, Any] | None = None
        description: str | None = None
        color: bool | None = None
        double_sided: bool | None = None
        merge_variables: dict[str, Any] = {}
        fallback_name: str = "Current Resident"
        dedupe_search: bool = True
        base_url: BaseURL = "https://api.postgrid.com"

        @model_validator(mode="after")
        def _per_kind(self) -> PostGridAdapter.Settings:
            if self.kind is None:
                if self.size is not None and self.size not in POSTCARD_SIZES | LETTER_SIZES:
                    raise ValueError(f"size must be one of {sorted(POSTCARD_SIZES | LETTER_SIZES)}")
            elif self.kind == "postcard":
                if not (self.front_template and self.back_template):
                    raise ValueError("a postcard needs front_template and back_template")
                self.size = self.size or "6x4"
                if self.size not in POSTCARD_SIZES:
                    raise ValueError(f"postcard size must be one of {sorted(POSTCARD_SIZES)}")
            else:
                if not self.template:
                    raise ValueError("a letter needs template")
                if not self.from_contact:
                    raise ValueError("a letter needs from_contact (contact id or inline contact)")
                if self.size is not None and self.size not in LETTER_SIZES:
                    raise ValueError(f"letter size must be one of {sorted(LETTER_SIZES)}")
            if self.express and self.mailing_class not in (None, "express"):
                raise ValueError("express = true conflicts with mailing_class")
            return self

    settings: Settings

    @property
    def endpoint(self) -> str:
        """The collection URL for this kind of order."""
        return f"{self.settings.base_url.rstrip('/')}/print-mail/v1/{self.settings.kind}s"

    def recipient_contact(self, event: CanonicalEvent) -> dict[str, Any] | str:
        """PostGrid `to` contact from the event's recipient, or a reason string when it cannot be mailed."""
        r = event.recipient
        country = r.country or event.mailpiece.country
        if not r.address_line1:
            return "recipient has no street address (address_line1)"
        if not country:
            return "recipient has no country"
        first, last = split_name(r.name)
        contact = {
            "firstName": first or self.settings.fallback_name,
            "lastName": last,
            "addressLine1": r.address_line1,
            "addressLine2": r.address_line2,
            "city": r.city,
            "provinceOrState": r.region,
            "postalOrZip": r.postal_code,
            "countryCode": country.upper(),
            "email": r.email,
            "phoneNumber": r.phone,
        }
        return {k: v for k, v in contact.items() if v}

    def order_body(self, event: CanonicalEvent, ctx: DeliveryContext, to: dict[str, Any]) -> dict[str, Any]:
        """The create-order JSON body."""
        s = self.settings
        extra = followup_fields(event, ctx)
        rule = extra["followup"] or ctx.destination
        body: dict[str, Any] = {
            "to": to,
            "description": s.description or f"postrelay follow-up {rule} for {event.mailpiece.id}",
            "metadata": {
                "postrelay_previous_mailpiece": event.mailpiece.id,
                "postrelay_source": event.source,
                "postrelay_followup": rule,
                "postrelay_trigger_event": event.id,
                "postrelay_dedupe": dedupe_key(event, ctx),
                "postrelay_estimated": extra["estimated"],
                "postrelay_late": extra["late"],
            },
            "mergeVariables": {**s.merge_variables, **event.metadata},
        }
        if s.kind == "postcard":
            body |= {"frontTemplate": s.front_template, "backTemplate": s.back_template, "size": s.size}
        else:
            body["template"] = s.template
            optional = {"size": s.size, "color": s.color, "doubleSided": s.double_sided}
            body |= {k: v for k, v in optional.items() if v is not None}
        if s.from_contact:
            body["from"] = s.from_contact
        mailing_class = "express" if s.express else s.mailing_class
        if mailing_class:
            body["mailingClass"] = mailing_class
        return body

    def deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        """Create the order once; 2xx -> ok with the order id; unmailable recipient -> permanent."""
        done = ctx.recall(STEP)
        if done:
            return Outcome.success(remote_id=done)
        if self.settings.kind is None:
            return Outcome.permanent(f"destination {self.name!r} has no `kind`: set kind = \"postcard\" or \"letter\"")
        to = self.recipient_contact(event)
        if isinstance(to, str):
            return Outcome.permanent(to)
        headers = {"X-API-Key": self.settings.api_key}
        key = dedupe_key(event, ctx)
        if self.settings.dedupe_search:
            found = self._find_existing(key, headers)
            if isinstance(found, Outcome):
                return scrub(found, list(self.secrets()))
            if found:
                ctx.remember(STEP, found)
                return Outcome.success(remote_id=found)
        response = self.call("POST", self.endpoint, json=self.order_body(event, ctx, to),
                             headers={**headers, IDEMPOTENCY_HEADER: idempotency_key(event, ctx)})
        if isinstance(response, Outcome):
            return scrub(response, list(self.secrets()))
        if response.is_success:
            order_id = str(json_object(response).get("id") or "")
            if not order_id:
                return scrub(Outcome.permanent(f"created but no order id in the answer: {excerpt(response)}",
                                               http_status=response.status_code), list(self.secrets()))
            ctx.remember(STEP, order_id)
            return Outcome.success(remote_id=order_id, http_status=response.status_code)
        return scrub(classify(response), list(self.secrets()))

    def _find_existing(self, key: str, headers: dict[str, str]) -> str | Outcome | None:
        """Id of an order already created for `key`; a retry/permanent Outcome when the lookup must stop us.

        Search trouble that retrying may fix (network, 429, 5xx) retries; 401/403 are permanent; any other
        answer is ignored (the search is a best-effort guard, not a precondition).
        """
        response = self.call("GET", self.endpoint, params={"search": f'"{key}"', "limit": 10}, headers=headers)
        if isinstance(response, Outcome):
            return response
        if not response.is_success:
            outcome = classify(response)
            if outcome.status == "retry" or response.status_code in (401, 403):
                outcome.detail = f"order lookup failed: {outcome.detail}"
                return outcome
            return None
        for order in json_object(response).get("data") or []:
            metadata = order.get("metadata") if isinstance(order, dict) else None
            if isinstance(metadata, dict) and metadata.get("postrelay_dedupe") == key and order.get("id"):
                return str(order["id"])
        return None



    # -- mailings ---------------------------------------------------------------------------------------------

    def mailing_defaults(self) -> dict[str, Any]:
        """Settings that fill a mailing request's unset fields."""
        s = self.settings
        return {"front_template": s.front_template, "back_template": s.back_template, "template": s.template,
                "from_contact": s.from_contact, "size": s.size, "mailing_class": "express" if s.express
                else s.mailing_class, "description": s.description, "merge_variables": s.merge_variables}

    def mailing_body(self, request: MailingRequest, mid: str) -> dict[str, Any]:
        """The create-order JSON for a mailing (PostGrid field names)."""
        s = self.settings
        body: dict[str, Any] = {"to": contact(request.to), "description": request.description or f"postrelay {mid}",
                                "mergeVariables": request.merge_variables,
                                "metadata": provider_metadata(request, mid)}
        sender = request.from_
        if sender is not None:
            body["from"] = contact(sender) if isinstance(sender, Address) else sender
        if request.kind == "postcard":
            front, back = request.front_template or "", request.back_template or ""
            body["frontHTML" if is_html(front) else "frontTemplate"] = front
            body["backHTML" if is_html(back) else "backTemplate"] = back
            pair = size_pair(request.size or "6x4")
            body["size"] = f"{pair[1]}x{pair[0]}" if pair else request.size
        else:
            letter = request.template or ""
            body["html" if is_html(letter) else "template"] = letter
            optional = {"size": request.size, "color": s.color, "doubleSided": s.double_sided}
            body |= {k: v for k, v in optional.items() if v is not None}
        if request.mailing_class:
            body["mailingClass"] = request.mailing_class
        if request.send_date:
            body["sendDate"] = request.send_date
        return body

    def sizes(self, kind: str) -> frozenset[str]:
        """PostGrid's `PostcardSize` (`6x4`, `9x6`, `11x6`) and `LetterSize` (`us_letter`, `a4`)."""
        return POSTCARD_SIZES if kind == "postcard" else LETTER_SIZES

    def unusable_merge_variables(self, variables: dict[str, Any]) -> list[str]:
        """None: PostGrid documents no rule for `mergeVariables` names (they must match the template's)."""
        return []

    def mailing_target(self, kind: str) -> tuple[str, dict[str, Any]]:
        """`/print-mail/v1/postcards` or `…/letters`, the API key as `X-API-Key`."""
        return (f"{self.settings.base_url.rstrip('/')}/print-mail/v1/{kind}s",
                {"headers": {"X-API-Key": self.settings.api_key}})

    def create_mailing(self, request: MailingRequest, mid: str) -> Outcome:
        """POST the order with `Idempotency-Key: <mailing id>`; 2xx -> ok with the order id."""
        url, auth = self.mailing_target(request.kind)
        return create_piece(self, url, auth, self.mailing_body(request, mid), mid)

    def find_mailing(self, request: MailingRequest, mid: str) -> str | Outcome | None:
        """An order whose `metadata.postrelay_mailing` is `mid` (search `"<mid>"`), else None."""
        url, auth = self.mailing_target(request.kind)
        return find_piece(self, url, auth, {"search": f'"{mid}"', "limit": 10}, mid)

    def shown_request(self, request: MailingRequest, mid: str) -> dict[str, Any]:
        """The create request for people to read (secrets as `***`)."""
        url, auth = self.mailing_target(request.kind)
        return shown_request(self, url, auth, self.mailing_body(request, mid), mid)


def contact(address: Address) -> dict[str, Any]:
    """A PostGrid inline contact from a canonical address (a company-only address has no first name)."""
    first, last = split_name(address.name)
    fields = {"firstName": first, "lastName": last, "companyName": address.company,
              "addressLine1": address.address_line1, "addressLine2": address.address_line2, "city": address.city,
              "provinceOrState": address.region, "postalOrZip": address.postal_code, "countryCode": address.country,
              "email": address.email, "phoneNumber": address.phone}
    return {k: v for k, v in fields.items() if v}
