"""Lob: the pieces of mailings (`POST /v1/postcards`, `POST /v1/letters`), HTTP Basic (the API key as the
user name), `Idempotency-Key` = the mailing id; after a crash, `GET /v1/{kind}s?metadata[postrelay_mailing]=<id>`
finds a piece already created. Requests follow Lob's OpenAPI (tests validate them against it): US and
US-territory addresses in Lob's US form (`address_country` US, a two-letter `address_state`, ZIP or ZIP+4).

As a `[destinations.NAME]` of `type = "lob"`: `api_key` (`test_…` / `live_…`), `base_url`, and defaults for
mailings: templates (`tmpl_…` ids or HTML), `from_address`, `size`, `mailing_class`, `use_type`, `color`,
`double_sided`, `address_placement`, `merge_variables`. A follow-up whose `do` is a Lob destination becomes
a mailing too (docs/mailings.md).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from typing import Any, Literal

import pycountry

from postrelay.adapters._mailing import create_piece, find_piece, shown_request, size_pair
from postrelay.adapters.base import Adapter, AdapterSettings, BaseURL, DeliveryContext, Outcome, Token
from postrelay.core.events import CanonicalEvent
from postrelay.core.mailing import Address, MailingRequest, provider_metadata

MAIL_TYPES = {"first_class": "usps_first_class", "standard_class": "usps_standard", "standard": "usps_standard"}
POSTCARD_SIZES = frozenset({"4x6", "6x9", "6x11"})
LETTER_SIZES = frozenset({"us_letter", "us_legal"})
US_DOMESTIC = frozenset({"US", "AS", "PR", "FM", "GU", "MH", "MP", "PW", "VI"})
"""Lob's international `address_country` "Does not accept `US`, `AS`, `PR`, `FM`, `GU`, `MH`, `MP`, `PW`, or
`VI`": these are US addresses (`address_country` `US`, the territory as `address_state`)."""
NAME_FORBIDDEN = frozenset("!\"#%&'()*+,/;<=>@[\\]^`{|}~")
"""Lob's OpenAPI on `merge_variables`: "Your variable names cannot contain any whitespace or any of the following
special characters" (these)."""


class LobAdapter(Adapter):
    """Create Lob postcards and letters for mailings."""

    type = "lob"
    max_merge_variables_chars = 25_000  # "If you call JSON.stringify on your object, it can be no longer than 25,000"
    merge_name_rule = "no whitespace and none of " + "".join(sorted(NAME_FORBIDDEN))

    class Settings(AdapterSettings):
        """`[destinations.NAME]` keys for type = "lob"."""

        api_key: Token
        base_url: BaseURL = "https://api.lob.com"
        kind: Literal["postcard", "letter"] | None = None
        front_template: str | None = None
        back_template: str | None = None
        template: str | None = None
        from_address: str | dict[str, Any] | None = None
        size: str | None = None
        mailing_class: str | None = None
        use_type: Literal["marketing", "operational"] = "marketing"
        color: bool = False
        double_sided: bool | None = None
        address_placement: Literal["top_first_page", "insert_blank_page", "bottom_first_page_center",
                                   "bottom_first_page"] | None = None
        merge_variables: dict[str, Any] = {}
        description: str | None = None

    settings: Settings

    def secrets(self) -> Iterable[str]:
        """The API key, and the Basic credential as it travels (base64)."""
        basic = base64.b64encode(f"{self.settings.api_key}:".encode()).decode()
        return [*super().secrets(), basic]

    def deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        """Lob pieces are made through the mailing path (`create_mailing`); a relay route to Lob is a config error."""
        return Outcome.permanent(f"destination {self.name!r} (lob) only creates mailings: use it as a follow-up "
                                 "`do`, a trigger's `provider` or in POST /v1/mailings, not in [[routes]]")

    def mailing_defaults(self) -> dict[str, Any]:
        """Settings that fill a mailing request's unset fields."""
        s = self.settings
        return {"front_template": s.front_template, "back_template": s.back_template, "template": s.template,
                "from_address": s.from_address, "size": s.size, "mailing_class": s.mailing_class,
                "description": s.description, "merge_variables": s.merge_variables}

    def mailing_body(self, request: MailingRequest, mid: str) -> dict[str, Any]:
        """The create JSON for a mailing (Lob field names)."""
        s = self.settings
        body: dict[str, Any] = {"to": address(request.to), "use_type": s.use_type,
                                "description": (request.description or f"postrelay {mid}")[:255],
                                "metadata": provider_metadata(request, mid)}
        if request.merge_variables:
            body["merge_variables"] = request.merge_variables
        sender = request.from_
        if sender is not None:
            body["from"] = address(sender) if isinstance(sender, Address) else sender
        if request.kind == "postcard":
            body["front"], body["back"] = request.front_template, request.back_template
            pair = size_pair(request.size) if request.size else None
            if request.size:  # Lob writes the short side first; anything else goes as it is (Lob names the error)
                body["size"] = f"{pair[0]}x{pair[1]}" if pair else request.size
        else:
            body["file"] = request.template
            body["color"] = s.color
            if request.size in LETTER_SIZES:  # (a destination's postcard size is not the letter's)
                body["size"] = request.size
            optional = {"double_sided": s.double_sided, "address_placement": s.address_placement}
            body |= {k: v for k, v in optional.items() if v is not None}
        if request.mailing_class:
            body["mail_type"] = MAIL_TYPES.get(request.mailing_class, request.mailing_class)
        if request.send_date:
            body["send_date"] = request.send_date
        return body

    def sizes(self, kind: str) -> frozenset[str]:
        """Lob's `size` enums: postcards `4x6`/`6x9`/`6x11`, letters `us_letter`/`us_legal`."""
        return POSTCARD_SIZES if kind == "postcard" else LETTER_SIZES

    def unusable_merge_variables(self, variables: dict[str, Any]) -> list[str]:
        """Names Lob refuses: any whitespace or one of `NAME_FORBIDDEN` (a Postalytics column like `First Name`)."""
        return [name for name in variables if not name or any(c.isspace() or c in NAME_FORBIDDEN for c in name)]

    def mailing_target(self, kind: str) -> tuple[str, dict[str, Any]]:
        """`/v1/postcards` or `/v1/letters`, HTTP Basic with the API key as the user name."""
        return f"{self.settings.base_url.rstrip('/')}/v1/{kind}s", {"auth": (self.settings.api_key, "")}

    def create_mailing(self, request: MailingRequest, mid: str) -> Outcome:
        """POST the piece with `Idempotency-Key: <mailing id>`; 2xx -> ok with the `psc_…`/`ltr_…` id."""
        url, auth = self.mailing_target(request.kind)
        return create_piece(self, url, auth, self.mailing_body(request, mid), mid)

    def find_mailing(self, request: MailingRequest, mid: str) -> str | Outcome | None:
        """A piece whose `metadata.postrelay_mailing` is `mid`, else None."""
        url, auth = self.mailing_target(request.kind)
        return find_piece(self, url, auth, {"metadata[postrelay_mailing]": mid, "limit": 10}, mid)

    def shown_request(self, request: MailingRequest, mid: str) -> dict[str, Any]:
        """The create request for people to read (secrets as `***`)."""
        url, auth = self.mailing_target(request.kind)
        return shown_request(self, url, auth, self.mailing_body(request, mid), mid)


def address(a: Address) -> dict[str, Any]:
    """A Lob inline address from a canonical address (US territories and states as Lob's US form wants them)."""
    country, state, postal = a.country, a.region, a.postal_code
    if country in US_DOMESTIC:
        country, state, postal = "US", us_state(a.region, a.country), us_zip(a.postal_code)
    fields = {"name": a.name, "company": a.company, "address_line1": a.address_line1,
              "address_line2": a.address_line2, "address_city": a.city, "address_state": state,
              "address_zip": postal, "address_country": country, "email": a.email, "phone": a.phone}
    return {k: v for k, v in fields.items() if v}


def us_state(region: str | None, country: str) -> str | None:
    """Lob's US `address_state` ("2 letter state short-name code"): a two-letter region as it is, a state or
    territory name (`New York`, `Puerto Rico`) as its code, else a territory's own code (`PR`)."""
    text = (region or "").strip()
    if len(text) == 2 and text.isalpha():
        return text.upper()
    code = _US_STATES.get(" ".join(text.upper().split())) if text else None
    if code:
        return code
    return country if country != "US" else (text or None)


def us_zip(postal: str | None) -> str | None:
    """`12345`, `12345-6789`; nine digits written `123456789` or `12345 6789` get their dash (Lob's pattern)."""
    if postal is None:
        return None
    match = _ZIP9.fullmatch(postal.strip())
    return f"{match.group(1)}-{match.group(2)}" if match else postal


_ZIP9 = re.compile(r"(\d{5})[ -]?(\d{4})")
_US_STATES = {sub.name.upper(): sub.code.removeprefix("US-") for sub in pycountry.subdivisions.get(country_code="US")}
