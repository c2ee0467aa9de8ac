"""PostGrid follow-up mail against a server that checks requests the way the Print & Mail API does."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from postrelay.adapters import adapter_class
from postrelay.adapters._payload import idempotency_key
from postrelay.adapters.postgrid import PostGridAdapter
from tests.actions import build, dead_url, make_ctx, make_event
from tests.support.http_server import Recorded, Reply

KEY = "test_sk_postgrid_secret_1"
FROM = {"companyName": "Brand", "addressLine1": "9 Sender Rd", "city": "Toronto", "provinceOrState": "ON",
        "postalOrZip": "M5V 1A1", "countryCode": "CA"}


def error(status: int, kind: str, message: str) -> Reply:
    return Reply(status, {"object": "error", "error": {"type": kind, "message": message}})


def contact_problem(contact: Any, role: str) -> str | None:
    """What PostGrid would reject about an inline contact (or None when it is acceptable)."""
    if isinstance(contact, str):
        return None if contact.startswith("contact_") else f"{role} must be a contact id or object"
    if not isinstance(contact, dict):
        return f"{role} is required"
    for field in ("addressLine1", "countryCode"):
        if not contact.get(field):
            return f"{role}.{field} is required"
    if not (contact.get("firstName") or contact.get("companyName")):
        return f"{role} needs firstName or companyName"
    return None


class PostGridAPI:
    """Orders kept in memory; POST creates, GET lists with a `search` substring filter."""

    def __init__(self, delay_create: float = 0.0) -> None:
        self.orders: list[dict[str, Any]] = []
        self.by_key: dict[str, dict[str, Any]] = {}  # Idempotency-Key -> the order it created
        self.delay_create = delay_create
        self.lock = threading.Lock()

    def __call__(self, req: Recorded) -> Reply:
        if req.headers.get("x-api-key") != KEY:
            return error(401, "invalid_api_key_error", f"Invalid API key {req.headers.get('x-api-key')}")
        kind = {"/print-mail/v1/postcards": "postcard", "/print-mail/v1/letters": "letter"}.get(req.path)
        if kind is None:
            return error(404, "not_found_error", "Not found")
        if req.method == "GET":
            needle = req.query.get("search", [""])[0].strip('"')
            with self.lock:
                data = [o for o in self.orders if o["object"] == kind and needle in json.dumps(o)]
            return Reply(200, {"object": "list", "limit": 10, "skip": 0, "totalCount": len(data), "data": data})
        body = req.json()
        problem = contact_problem(body.get("to"), "to")
        if kind == "postcard":
            if not (body.get("frontTemplate") and body.get("backTemplate")):
                problem = problem or "frontTemplate and backTemplate (or HTML or pdf) are required"
            if body.get("size") not in ("6x4", "9x6", "11x6"):
                problem = problem or "size must be one of 6x4, 9x6, 11x6"
            if "from" in body:
                problem = problem or contact_problem(body["from"], "from")
        else:
            problem = problem or contact_problem(body.get("from"), "from")
            if not body.get("template"):
                problem = problem or "template (or html or pdf) is required"
        if problem:
            return error(400, "validation_error", problem)
        key = req.headers.get("idempotency-key")
        with self.lock:
            if key in self.by_key:  # the same create again: the first order, not a second piece
                return Reply(200, self.by_key[key])
            order = {"id": f"{kind}_{len(self.orders) + 1:04d}", "object": kind, "status": "ready",
                     "live": False, **body}
            self.orders.append(order)
            if key:
                self.by_key[key] = order
        return Reply(200, order, delay=self.delay_create)


def postcard(url: str, **extra: object) -> dict[str, object]:
    return {"api_key": KEY, "kind": "postcard", "front_template": "template_front",
            "back_template": "template_back", "base_url": url, **extra}


def letter(url: str, **extra: object) -> dict[str, object]:
    return {"api_key": KEY, "kind": "letter", "template": "template_letter", "from_contact": FROM,
            "base_url": url, **extra}


def posts(server: Any) -> list[Recorded]:
    return [r for r in server.requests if r.method == "POST"]


def test_registered() -> None:
    assert adapter_class("postgrid") is PostGridAdapter


def test_postcard_to_the_same_recipient(client, serve) -> None:
    api = PostGridAPI()
    server = serve(api)
    event = make_event()
    outcome = build(PostGridAdapter, client, **postcard(server.url, mailing_class="standard_class")).deliver(
        event, make_ctx(late=True))
    assert outcome.status == "ok", outcome.detail
    assert outcome.remote_id == "postcard_0001"
    body = posts(server)[0].json()
    assert body["to"] == {"firstName": "Jane", "lastName": "Q Public", "addressLine1": "1 Main St",
                          "city": "Boston", "provinceOrState": "MA", "postalOrZip": "02110", "countryCode": "US",
                          "email": "jane@example.com", "phoneNumber": "(617) 555-0123"}
    assert body["frontTemplate"] == "template_front" and body["backTemplate"] == "template_back"
    assert body["size"] == "6x4" and body["mailingClass"] == "standard_class"
    assert body["metadata"] == {
        "postrelay_previous_mailpiece": "letter_abc", "postrelay_source": "postgrid",
        "postrelay_followup": "second_touch", "postrelay_trigger_event": event.id,
        "postrelay_dedupe": f"{event.id}:second_touch", "postrelay_estimated": True, "postrelay_late": True,
    }
    assert body["mergeVariables"] == {"crm_id": "C-42", "offer": "10OFF"}
    assert "from" not in body
    assert posts(server)[0].headers["idempotency-key"] == idempotency_key(event, make_ctx(late=True))


def test_idempotency_key_is_derived_from_the_dedupe_key() -> None:
    event = make_event()
    key = idempotency_key(event, make_ctx("second_touch"))
    assert key == "postrelay-" + hashlib.sha256(f"{event.id}:second_touch".encode()).hexdigest()[:32]
    assert key == idempotency_key(event, make_ctx("second_touch", attempt=3))  # stable across retries
    assert key != idempotency_key(event, make_ctx("third_touch"))  # another rule is another order
    assert key.isascii() and len(key) <= 64


def test_lost_response_resent_with_the_same_idempotency_key_makes_one_order(serve) -> None:
    """Without the metadata search, the Idempotency-Key alone stops a second piece after a lost answer."""
    api = PostGridAPI(delay_create=1.0)
    server = serve(api)
    with httpx.Client(timeout=0.3) as slow:
        first = build(PostGridAdapter, slow, **postcard(server.url, dedupe_search=False)).deliver(
            make_event(), make_ctx())
    assert first.status == "retry" and "timeout" in first.detail
    api.delay_create = 0.0
    with httpx.Client(timeout=2.0) as fresh:
        second = build(PostGridAdapter, fresh, **postcard(server.url, dedupe_search=False)).deliver(
            make_event(), make_ctx(attempt=2))
    assert second.ok and second.remote_id == "postcard_0001"
    assert len(api.orders) == 1
    keys = {r.headers["idempotency-key"] for r in posts(server)}
    assert len(posts(server)) == 2 and len(keys) == 1


def test_second_address_line_is_sent(client, serve) -> None:
    server = serve(PostGridAPI())
    who = {"name": "Jane Public", "address_line1": "1 Main St", "address_line2": "Apt 4B", "city": "Boston",
           "region": "MA", "postal_code": "02110", "country": "US"}
    assert build(PostGridAdapter, client, **postcard(server.url)).deliver(make_event(recipient=who), make_ctx()).ok
    to = posts(server)[0].json()["to"]
    assert to["addressLine1"] == "1 Main St" and to["addressLine2"] == "Apt 4B"


def test_letter_with_sender_and_options(client, serve) -> None:
    server = serve(PostGridAPI())
    adapter = build(PostGridAdapter, client, **letter(server.url, express=True, color=True, size="us_letter",
                                                      merge_variables={"offer": "DEFAULT", "sig": "Team"}))
    outcome = adapter.deliver(make_event(), make_ctx())
    assert outcome.status == "ok", outcome.detail
    assert outcome.remote_id == "letter_0001"
    body = posts(server)[0].json()
    assert body["from"] == FROM and body["template"] == "template_letter"
    assert body["mailingClass"] == "express" and body["color"] is True and body["size"] == "us_letter"
    assert body["mergeVariables"] == {"offer": "10OFF", "sig": "Team", "crm_id": "C-42"}
    assert posts(server)[0].path == "/print-mail/v1/letters"


def test_nameless_recipient_gets_fallback_name_and_piece_country(client, serve) -> None:
    server = serve(PostGridAPI())
    event = make_event(recipient={"address_line1": "5 Rue Principale", "city": "Montreal", "region": "QC",
                                  "postal_code": "H2X 1Y4"}, country="CA")
    assert build(PostGridAdapter, client, **postcard(server.url)).deliver(event, make_ctx()).ok
    to = posts(server)[0].json()["to"]
    assert to["firstName"] == "Current Resident" and "lastName" not in to and to["countryCode"] == "CA"


def test_recipient_without_address_is_permanent(client, serve) -> None:
    server = serve(PostGridAPI())
    adapter = build(PostGridAdapter, client, **postcard(server.url))
    outcome = adapter.deliver(make_event(recipient={"name": "Jane", "email": "j@x.example"}), make_ctx())
    assert outcome.status == "permanent" and "address" in outcome.detail
    assert server.requests == []


def test_memo_prevents_second_order(client, serve) -> None:
    server = serve(PostGridAPI())
    adapter = build(PostGridAdapter, client, **postcard(server.url))
    ctx = make_ctx()
    assert adapter.deliver(make_event(), ctx).ok
    assert ctx.recall("created") == "postcard_0001"
    again = adapter.deliver(make_event(), ctx)
    assert again.ok and again.remote_id == "postcard_0001"
    assert len(posts(server)) == 1


def test_lost_response_is_found_by_search_instead_of_mailing_twice(serve) -> None:
    api = PostGridAPI(delay_create=1.0)
    server = serve(api)
    with httpx.Client(timeout=0.3) as slow:
        adapter = build(PostGridAdapter, slow, **postcard(server.url))
        first = adapter.deliver(make_event(), make_ctx())
    assert first.status == "retry" and "timeout" in first.detail
    with httpx.Client(timeout=2.0) as fresh:
        adapter = build(PostGridAdapter, fresh, **postcard(server.url))
        ctx = make_ctx(attempt=2)
        second = adapter.deliver(make_event(), ctx)
    assert second.ok and second.remote_id == "postcard_0001" and ctx.recall("created") == "postcard_0001"
    assert len(posts(server)) == 1 and len(api.orders) == 1
    search = [r for r in server.requests if r.method == "GET"][-1]
    assert search.query["search"] == [f'"{make_event().id}:second_touch"']


def test_search_only_matches_this_rule(client, serve) -> None:
    server = serve(PostGridAPI())
    adapter = build(PostGridAdapter, client, **postcard(server.url))
    assert adapter.deliver(make_event(), make_ctx("second_touch")).remote_id == "postcard_0001"
    assert adapter.deliver(make_event(), make_ctx("third_touch")).remote_id == "postcard_0002"


def test_dedupe_search_can_be_disabled(client, serve) -> None:
    server = serve(PostGridAPI())
    assert build(PostGridAdapter, client, **postcard(server.url, dedupe_search=False)).deliver(
        make_event(), make_ctx()).ok
    assert [r.method for r in server.requests] == ["POST"]


def test_search_trouble(client, serve) -> None:
    replies = iter([Reply(503, b"down"), Reply(400, {"error": {"type": "bad_search"}})])
    api = PostGridAPI()
    server = serve(lambda req: next(replies) if req.method == "GET" else api(req))
    adapter = build(PostGridAdapter, client, **postcard(server.url))
    first = adapter.deliver(make_event(), make_ctx())
    assert first.status == "retry" and "lookup" in first.detail and posts(server) == []
    second = adapter.deliver(make_event(), make_ctx())  # a non-retryable search answer does not block
    assert second.ok and len(posts(server)) == 1


def test_validation_error_is_permanent(client, serve) -> None:
    server = serve(PostGridAPI())
    event = make_event(recipient={"name": "Jane", "address_line1": "1 Main St", "country": "US"})
    settings = postcard(server.url, from_contact="not-a-contact-id")
    outcome = build(PostGridAdapter, client, **settings).deliver(event, make_ctx())
    assert outcome.status == "permanent" and outcome.http_status == 400 and "from" in outcome.detail


@pytest.mark.parametrize("status", [429, 500])
def test_create_retryable(client, serve, status: int) -> None:
    api = PostGridAPI()
    server = serve(lambda req: api(req) if req.method == "GET" else Reply(status, {}, {"Retry-After": "9"}))
    ctx = make_ctx()
    outcome = build(PostGridAdapter, client, **postcard(server.url)).deliver(make_event(), ctx)
    assert outcome.status == "retry" and outcome.retry_after == 9 and ctx.recall("created") is None


def test_network_error_retries(client) -> None:
    outcome = build(PostGridAdapter, client, **postcard(dead_url())).deliver(make_event(), make_ctx())
    assert outcome.status == "retry" and "network error" in outcome.detail


def test_bad_key_is_permanent_and_redacted(client, serve) -> None:
    server = serve(PostGridAPI())
    outcome = build(PostGridAdapter, client, **postcard(server.url, api_key="test_sk_wrong_key")).deliver(
        make_event(), make_ctx())
    assert outcome.status == "permanent" and outcome.http_status == 401
    assert "test_sk_wrong_key" not in outcome.detail and "***" in outcome.detail


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "postcard", "front_template": "t"},                       # no back
        {"kind": "postcard", "front_template": "t", "back_template": "t", "size": "us_letter"},
        {"kind": "letter", "template": "t"},                               # letters need a sender
        {"kind": "letter", "from_contact": "contact_1"},                   # no template
        {"kind": "letter", "template": "t", "from_contact": "contact_1", "size": "6x4"},
        {"kind": "letter", "template": "t", "from_contact": "contact_1", "express": True,
         "mailing_class": "standard_class"},
        {"kind": "selfmailer", "template": "t"},
        {"kind": "postcard", "front_template": "t", "back_template": "t", "idempotency": True},
    ],
)
def test_settings_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PostGridAdapter.Settings(api_key="k", **bad)


def test_settings_defaults() -> None:
    s = PostGridAdapter.Settings(api_key="k", kind="postcard", front_template="f", back_template="b")
    assert s.size == "6x4" and s.base_url == "https://api.postgrid.com" and s.dedupe_search is True
