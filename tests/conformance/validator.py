"""Validate requests captured on a loopback server against a vendor's OpenAPI document, with `openapi-core`.

A captured request (`tests.support.http_server.Recorded`) is replayed to the validator as if it had been
sent to the vendor's own server (`host`), so the document's paths, parameters, headers, security schemes
and request-body schemas all apply. `problems()` lists what the document rejects ([] = conforms).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from openapi_core import Config, OpenAPI
from openapi_core.templating.paths.exceptions import PathNotFound, ServerNotFound
from openapi_core.testing import MockRequest

from tests.support.http_server import Recorded

HERE = Path(__file__).parent


@cache
def _openapi(path: str, check_spec: bool) -> OpenAPI:
    spec = json.loads((HERE / path).read_text())
    config = Config() if check_spec else Config(spec_validator_cls=None)
    return OpenAPI.from_dict(spec, config=config)


@dataclass(frozen=True)
class Vendor:
    """One vendor's documents (`specs/...` copies or `documented/...` shapes) and the host they describe.

    `check_spec=False` skips validating the document itself (Klaviyo's is not strictly valid: a `default`
    matches both branches of a `oneOf`, as vendor-specs/SOURCES.md notes); requests are still validated.
    `defects` are error texts caused by a defect of the document itself, not of the request, ignored (each
    one is shown to reject every value by `test_requests.py::test_tolerated_defects_reject_any_value`).
    """

    name: str
    host: str
    documents: tuple[str, ...]
    check_spec: bool = True
    official: bool = True
    defects: tuple[str, ...] = ()


    def problems(self, request: Recorded) -> list[str]:
        """Why the vendor's document rejects `request` (empty when it conforms)."""
        mock = MockRequest(self.host, request.method.lower(), request.path, args=request.query,
                           headers=request.headers, data=request.body or None,
                           content_type=request.headers.get("content-type", "application/json"))
        unmatched: list[str] = []
        for document in self.documents:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Unsupported scheme type")  # oauth2: checked by the test
                result = _openapi(document, self.check_spec).unmarshal_request(mock)
            errors = list(result.errors)
            if errors and all(isinstance(e, PathNotFound | ServerNotFound) for e in errors):
                unmatched.append(f"{document}: {errors[0]}")
                continue
            return [text for text in map(describe, errors) if not any(d in text for d in self.defects)]
        return [f"{request.method} {request.path} is in none of {self.name}'s documents: {unmatched}"]


def describe(error: BaseException) -> str:
    """The error with its schema details (openapi-core keeps them in `schema_errors` / the cause)."""
    parts = [f"{type(error).__name__}: {error}"]
    cause: Any = error.__cause__
    while cause is not None:
        details = getattr(cause, "schema_errors", None)
        parts.append("; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in details)
                     if details else f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__
    return " <- ".join(parts)


HUBSPOT = Vendor("HubSpot", "https://api.hubapi.com",
                 ("specs/hubspot/contacts.json", "specs/hubspot/notes.json", "specs/hubspot/postalMail.json"))
PIPEDRIVE = Vendor("Pipedrive", "https://api.pipedrive.com",
                   ("specs/pipedrive/pipedrive_openapi-v2.json", "documented/pipedrive_v1_notes.json"))
SENDGRID = Vendor("SendGrid", "https://api.sendgrid.com", ("specs/sendgrid/tsg_mail_v3.json",))
TWILIO = Vendor("Twilio", "https://api.twilio.com", ("specs/twilio/twilio_api_v2010.json",))
KLAVIYO = Vendor("Klaviyo", "https://a.klaviyo.com", ("specs/klaviyo/stable.json",), check_spec=False)
# Customer.io describes the person identifier as `oneOf` three plain strings (id, email, cio_id): every value
# is "valid under each of" them, so `oneOf` can never pass. Any string is what the document means.
CUSTOMERIO_IDENTIFIER = "Invalid path parameter: identifier <- : "
CUSTOMERIO = Vendor("Customer.io", "https://track.customer.io", ("specs/customerio/track-api-openapi.json",),
                    defects=(CUSTOMERIO_IDENTIFIER,))
POSTGRID = Vendor("PostGrid", "https://api.postgrid.com", ("documented/postgrid.json",), official=False)
SALESFORCE = Vendor("Salesforce", "https://acme.my.salesforce.com", ("documented/salesforce.json",), official=False)
