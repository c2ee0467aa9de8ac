"""Stand-ins for the PostGrid and Lob print-mail APIs on loopback: they check each request against the
provider's documented shape, keep the pieces they "print", honour `Idempotency-Key` like the real APIs
(the same key answers the first piece again, and never makes a second), and answer list/search requests.

- PostGrid: the rules come from the API reference (`../shared/seeds/postgrid-print-mail-api.txt`: Create
  Postcard / Create Letter body variants, contact fields, mailing classes, sizes) and the `postgrid-python`
  SDK's order shapes (`{"id": "postcard_…", "object": "postcard", "status": "ready", …}`).
- Lob: every request is validated with `openapi-core` against Lob's own OpenAPI document
  (`tests/vendor/lob_mail.json`, bundled from lob/lob-openapi: method, path, query, headers, body, auth),
  plus the limits that document states only in prose, read from its text (`LobRules`): `metadata` "up to 20
  key-value pairs", `merge_variables` at most 25,000 characters and variable names without whitespace or
  the listed special characters.

A request that breaks the contract is answered 400 and recorded in `violations` (tests assert it is empty).
`script` holds replies to give instead (429, 5xx, address errors); `before_answer(piece)` runs after a
piece is stored and before its answer is written (the SIGKILL test stops the worker there).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.http_server import LocalHTTPServer, Recorded, Reply

CONTACT_FIELDS = {"addressLine1", "addressLine2", "city", "companyName", "countryCode", "description", "email",
                  "firstName", "forceVerifiedStatus", "jobTitle", "lastName", "metadata", "phoneNumber",
                  "postalOrZip", "provinceOrState", "skipVerification"}
POSTGRID_SHAPE = Path(__file__).resolve().parents[1] / "conformance" / "documented" / "postgrid.json"
# every `mailingClass` of PostGrid's reference (the enum in the documented shape the conformance suite uses)
MAILING_CLASSES = frozenset(json.loads(POSTGRID_SHAPE.read_text())["components"]["schemas"]["MailingClass"]["enum"])
POSTCARD_KEYS = {"to", "from", "frontHTML", "backHTML", "frontTemplate", "backTemplate", "pdf", "size", "description",
                 "mailingClass", "mergeVariables", "metadata", "sendDate"}
LETTER_KEYS = {"to", "from", "html", "template", "pdf", "addressPlacement", "attachedPDF", "color", "description",
               "doubleSided", "envelope", "mailingClass", "mergeVariables", "metadata", "perforatedPage",
               "plasticCard", "returnEnvelope", "sendDate", "size"}
LOB_SPEC = Path(__file__).resolve().parents[1] / "vendor" / "lob_mail.json"


class StandIn:
    """Shared machinery: pieces, idempotency, scripted replies, violations."""

    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.pieces: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.script: list[Reply] = []
        self.before_answer: Callable[[dict[str, Any]], None] | None = None
        self.creates = 0
        self._by_key: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.server = LocalHTTPServer(self.handle)

    @property
    def url(self) -> str:
        """Base URL."""
        return self.server.url

    def __enter__(self) -> StandIn:
        self.server.thread = threading.Thread(target=self.server.server.serve_forever,
                                              kwargs={"poll_interval": 0.02}, daemon=True)
        self.server.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.__exit__(*exc)

    @property
    def requests(self) -> list[Recorded]:
        """Every request received."""
        return self.server.requests

    def _refuse(self, problem: str) -> Reply:
        self.violations.append(problem)
        return Reply(400, {"error": {"type": "contract_violation", "message": problem}})

    def _create(self, req: Recorded, kind: str, body: dict[str, Any]) -> Reply:
        """Store a piece once per Idempotency-Key; answer it (again)."""
        self.creates += 1
        if self.script:
            return self.script.pop(0)
        key = req.headers.get("idempotency-key")
        with self._lock:
            if key and key in self._by_key:
                return Reply(200, self._by_key[key])
            piece = self.piece(kind, next(self._ids), body)
            self.pieces.append(piece)
            if key:
                self._by_key[key] = piece
        if self.before_answer is not None:
            self.before_answer(piece)
        return Reply(200, piece)

    def piece(self, kind: str, n: int, body: dict[str, Any]) -> dict[str, Any]:
        """The provider's answer for a new piece."""
        raise NotImplementedError

    def handle(self, req: Recorded) -> Reply:
        """Answer one request."""
        raise NotImplementedError


class PostGridStandIn(StandIn):
    """`/print-mail/v1/postcards` and `/print-mail/v1/letters`: create (POST) and search (GET)."""

    def piece(self, kind: str, n: int, body: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"{kind}_{n:06d}pg", "object": kind, "live": self.api_key.startswith("live_"),
                "status": "ready", "to": {"id": f"contact_{n}", **body["to"]}, "metadata": body.get("metadata") or {},
                "mergeVariables": body.get("mergeVariables") or {}, "createdAt": "2026-12-01T09:00:00.000Z",
                "sendDate": body.get("sendDate") or "2026-12-01T09:00:00.000Z",
                "mailingClass": body.get("mailingClass", "first_class")}

    def handle(self, req: Recorded) -> Reply:
        kind = {"/print-mail/v1/postcards": "postcard", "/print-mail/v1/letters": "letter"}.get(req.path)
        if kind is None:
            return self._refuse(f"unknown path {req.method} {req.path}")
        if req.headers.get("x-api-key") != self.api_key:
            return Reply(401, {"error": {"type": "invalid_api_key_error", "message": "Invalid API key."}})
        if req.method == "GET":
            needle = (req.query.get("search") or [""])[0].strip('"')
            found = [p for p in self.pieces if p["object"] == kind and needle and needle in json.dumps(p)]
            return Reply(200, {"object": "list", "limit": 10, "skip": 0, "totalCount": len(found), "data": found})
        if req.method != "POST":
            return self._refuse(f"unexpected method {req.method}")
        if not req.headers.get("content-type", "").startswith("application/json"):
            return self._refuse("Content-Type must be application/json")
        try:
            body = req.json()
        except ValueError:
            return self._refuse("body is not JSON")
        problem = self.check(kind, body)
        return self._refuse(problem) if problem else self._create(req, kind, body)

    @staticmethod
    def check_contact(name: str, contact: Any) -> str | None:
        """A contact object or id as the reference documents it."""
        if isinstance(contact, str):
            return None if contact.startswith("contact_") else f"{name}: a string must be a contact id"
        if not isinstance(contact, dict):
            return f"{name}: must be a contact object or id"
        extra = set(contact) - CONTACT_FIELDS
        if extra:
            return f"{name}: unknown contact fields {sorted(extra)}"
        if not (contact.get("addressLine1") and contact.get("countryCode")):
            return f"{name}: addressLine1 and countryCode are required"
        if not (contact.get("firstName") or contact.get("companyName")):
            return f"{name}: firstName or companyName is required"
        return None

    def check(self, kind: str, body: Any) -> str | None:
        """The documented Create Postcard / Create Letter body rules; None when the body follows them."""
        if not isinstance(body, dict):
            return "body must be an object"
        allowed = POSTCARD_KEYS if kind == "postcard" else LETTER_KEYS
        extra = set(body) - allowed
        if extra:
            return f"unknown {kind} fields {sorted(extra)}"
        problem = self.check_contact("to", body.get("to"))
        if problem or ("from" in body and (problem := self.check_contact("from", body["from"]))):
            return problem
        for key in ("mergeVariables", "metadata"):
            if key in body and not isinstance(body[key], dict):
                return f"{key} must be an object"
        if "mailingClass" in body and body["mailingClass"] not in MAILING_CLASSES:
            return f"mailingClass {body['mailingClass']!r} is not documented"
        if kind == "postcard":
            html = "frontHTML" in body or "backHTML" in body
            tmpl = "frontTemplate" in body or "backTemplate" in body
            if html == tmpl:
                return "a postcard needs frontHTML+backHTML or frontTemplate+backTemplate (not both, not neither)"
            pair = ("frontHTML", "backHTML") if html else ("frontTemplate", "backTemplate")
            if not all(isinstance(body.get(k), str) and body[k] for k in pair):
                return f"{pair[0]} and {pair[1]} are both required"
            if html and "size" not in body:
                return "size is required with HTML"
            if "size" in body and body["size"] not in ("6x4", "9x6", "11x6"):
                return f"postcard size {body['size']!r} is not 6x4, 9x6 or 11x6"
        else:
            if ("html" in body) == ("template" in body):
                return "a letter needs html or template (not both)"
            if "from" not in body:
                return "a letter needs from"
            if "size" in body and body["size"] not in ("us_letter", "a4"):
                return f"letter size {body['size']!r} is not us_letter or a4"
        return None


def _descriptions(node: Any, name: str) -> list[str]:
    """The `description` of every property schema called `name` in a (bundled) OpenAPI document."""
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            props = item.get("properties")
            if isinstance(props, dict) and isinstance(props.get(name), dict) and "description" in props[name]:
                found.append(props[name]["description"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class LobRules:
    """The request limits Lob's OpenAPI document states in its field descriptions (JSON Schema cannot say
    them: `maxLength` on an object is ignored), parsed from the document's own words."""

    def __init__(self, spec: dict[str, Any]) -> None:
        [metadata] = set(_descriptions(spec, "metadata"))
        [variables] = set(_descriptions(spec, "merge_variables"))
        self.metadata_text, self.variables_text = metadata, variables
        self.max_metadata_pairs = int(re.search(r"up to (\d+) key-value pairs", metadata).group(1))  # type: ignore[union-attr]
        size = re.search(r"can be no longer than ([\d,]+) characters", variables)
        self.max_variables_chars = int(size.group(1).replace(",", ""))  # type: ignore[union-attr]
        listed = variables.split("special characters:", 1)[1].split(". ", 1)[0]
        self.forbidden = {a or b for a, b in re.findall(r"`` (`) ``|`(.)`", listed)}
        assert "cannot contain any whitespace" in variables and len(self.forbidden) > 20

    def problem(self, body: Any) -> str | None:
        """Why `body` breaks a prose-stated limit, else None."""
        if not isinstance(body, dict):
            return None
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and len(metadata) > self.max_metadata_pairs:
            return (f"metadata has {len(metadata)} key-value pairs; Lob: \"Must be an object with up to "
                    f"{self.max_metadata_pairs} key-value pairs\"")
        variables = body.get("merge_variables")
        if isinstance(variables, dict):
            if len(json.dumps(variables, separators=(",", ":"), ensure_ascii=False)) > self.max_variables_chars:
                return f"merge_variables is longer than {self.max_variables_chars} characters as JSON"
            for name in variables:
                if any(c.isspace() or c in self.forbidden for c in name):
                    return (f"merge variable name {name!r}: Lob: \"Your variable names cannot contain any "
                            "whitespace or any of the following special characters\"")
        return None


class LobStandIn(StandIn):
    """`/v1/postcards` and `/v1/letters`: create (POST) and list (GET, `metadata[...]` filter), each request
    validated against Lob's OpenAPI document."""

    def __init__(self, api_key: str) -> None:
        super().__init__(api_key)
        from openapi_core import OpenAPI

        spec = json.loads(LOB_SPEC.read_text())
        self.api = OpenAPI.from_dict(spec)
        self.rules = LobRules(spec)

    def piece(self, kind: str, n: int, body: dict[str, Any]) -> dict[str, Any]:
        prefix = {"postcard": "psc", "letter": "ltr"}[kind]
        return {"id": f"{prefix}_{n:016x}", "object": kind, "to": {"id": f"adr_{n:014x}", **body["to"]},
                "metadata": body.get("metadata") or {}, "merge_variables": body.get("merge_variables"),
                "date_created": "2026-12-01T09:00:00.000Z", "send_date": body.get("send_date"),
                "use_type": body.get("use_type"), "mail_type": body.get("mail_type", "usps_first_class")}

    def validate(self, req: Recorded) -> str | None:
        """openapi-core's verdict on the request, None when valid."""
        from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest
        from werkzeug.test import EnvironBuilder
        from werkzeug.wrappers import Request

        query = "&".join(f"{k}={v}" for k, vs in req.query.items() for v in vs)
        env = EnvironBuilder(path=req.path, method=req.method, base_url="http://127.0.0.1/", query_string=query,
                             data=req.body or None, headers=dict(req.headers)).get_environ()
        try:
            self.api.validate_request(WerkzeugOpenAPIRequest(Request(env)))
        except Exception as exc:  # openapi-core's validation errors (with the schema error as the cause)
            return f"{type(exc).__name__}: {exc} {exc.__cause__ or ''}"[:1500]
        if req.method == "POST":
            try:
                return self.rules.problem(req.json())
            except ValueError:
                return None
        return None

    def handle(self, req: Recorded) -> Reply:
        kind = {"/v1/postcards": "postcard", "/v1/letters": "letter"}.get(req.path)
        if kind is None:
            return self._refuse(f"unknown path {req.method} {req.path}")
        expected = "Basic " + base64.b64encode(f"{self.api_key}:".encode()).decode()
        if req.headers.get("authorization") != expected:
            return Reply(401, {"error": {"message": "Your API key is not valid.", "status_code": 401,
                                         "code": "unauthorized"}})
        problem = self.validate(req)
        if problem:
            return self._refuse(problem)
        if req.method == "GET":
            wanted = {k[len("metadata["):-1]: v[0] for k, v in req.query.items() if k.startswith("metadata[")}
            found = [p for p in self.pieces if p["object"] == kind
                     and all(p["metadata"].get(k) == v for k, v in wanted.items())]
            return Reply(200, {"object": "list", "data": found, "count": len(found)})
        return self._create(req, kind, req.json())


def address_error(provider: str) -> Reply:
    """What each provider answers for an address it cannot mail."""
    if provider == "lob":
        return Reply(422, {"error": {"message": "address_line1 is not a deliverable address", "status_code": 422,
                                     "code": "invalid_address"}})
    return Reply(400, {"error": {"type": "invalid_address_error",
                                 "message": "The address provided for 'to' could not be verified."}})
