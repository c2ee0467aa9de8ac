"""Pipedrive adapter against a loopback server that answers like API v2 (and v1 notes)."""

from __future__ import annotations

import re

import httpx
import pytest
from pydantic import ValidationError

from postrelay.adapters import adapter_class
from postrelay.adapters.pipedrive import PipedriveAdapter
from tests.support.http_server import LocalHTTPServer, Recorded, Reply

TOKEN = "0123456789abcdef0123456789abcdef01234567"


class FakePipedrive:
    """Persons by email (duplicates allowed, as in Pipedrive), activity types, created activities and notes."""

    def __init__(self) -> None:
        self.persons = {"ada@example.com": [42], "twice@example.com": [7, 8]}
        self.activity_types = {"call", "meeting", "task", "deadline", "email", "lunch", "mail"}
        self.activities: list[dict] = []
        self.notes: list[dict] = []

    def __call__(self, req: Recorded) -> Reply:
        if req.headers.get("x-api-token") != TOKEN:
            return Reply(401, {"success": False, "error": "unauthorized access", "errorCode": 401})
        if req.method == "GET" and req.path == "/api/v2/persons/search":
            return self.search(req)
        if req.method == "POST" and req.path == "/api/v2/activities":
            return self.add_activity(req.json())
        if req.method == "POST" and req.path == "/v1/notes":
            return self.add_note(req.json())
        return Reply(404, {"success": False, "error": "Unknown method ."})

    def search(self, req: Recorded) -> Reply:
        if req.query.get("fields") != ["email"] or req.query.get("exact_match") != ["true"]:
            return Reply(400, {"success": False, "error": "bad search parameters"})
        ids = self.persons.get(req.query["term"][0], [])
        items = [{"result_score": 1.0, "item": {"id": i, "type": "person", "name": "Ada"}} for i in ids]
        return Reply(200, {"success": True, "data": {"items": items}, "additional_data": {"next_cursor": None}})

    def add_activity(self, body: dict) -> Reply:
        if "person_id" in body:
            return Reply(400, {"success": False, "code": "ERR_BAD_REQUEST", "error":
                               "'person_id' is a read-only field. Add a primary participant to set 'person_id'"})
        if body.get("type") not in self.activity_types:
            return Reply(400, {"success": False, "error": f"Activity type {body.get('type')!r} not found"})
        if (not body.get("subject") or not re.fullmatch(r"\d{4}-\d\d-\d\d", body.get("due_date", ""))
                or not re.fullmatch(r"\d\d:\d\d", body.get("due_time", ""))
                or not isinstance(body.get("done"), bool)
                or not any(p.get("primary") and isinstance(p.get("person_id"), int)
                           for p in body.get("participants", []))):
            return Reply(400, {"success": False, "error": "validation failed"})
        self.activities.append(body)
        return Reply(201, {"success": True, "data": {"id": 100 + len(self.activities), **body}})

    def add_note(self, body: dict) -> Reply:
        if not body.get("content") or not isinstance(body.get("person_id"), int):
            return Reply(400, {"success": False, "error": "content and a valid entity id are required"})
        self.notes.append(body)
        return Reply(201, {"success": True, "data": {"id": 500 + len(self.notes), **body}})


@pytest.fixture
def pipedrive(server: LocalHTTPServer) -> FakePipedrive:
    fake = FakePipedrive()
    server.handler = fake
    return fake


def make(url: str, client: httpx.Client, **settings: object) -> PipedriveAdapter:
    return PipedriveAdapter("pipedrive", PipedriveAdapter.Settings(**{"token": TOKEN, "base_url": url,
                                                                      **settings}), client)


def test_registry_points_here() -> None:
    assert adapter_class("pipedrive") is PipedriveAdapter


def test_finds_person_and_logs_done_activity(server, pipedrive, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event("returned_to_sender"), ctx)

    assert outcome.ok, outcome.detail
    assert outcome.remote_id == "101"
    assert ctx.recall("activity") == "101"
    search, create = server.requests
    assert search.query == {"term": ["ada@example.com"], "fields": ["email"], "exact_match": ["true"],
                            "limit": ["2"]}
    assert create.headers["x-api-token"] == TOKEN
    (activity,) = pipedrive.activities
    assert activity["subject"] == "Mail returned to sender: letter ltr_123"
    assert activity["type"] == "task"
    assert activity["done"] is True
    assert (activity["due_date"], activity["due_time"]) == ("2024-05-06", "14:30")
    assert activity["participants"] == [{"person_id": 42, "primary": True}]
    assert "Tracking number: 9400111" in activity["note"]


def test_custom_activity_type(server, pipedrive, client, ctx, make_event) -> None:
    assert make(server.url, client, activity_type="mail").deliver(make_event(), ctx).ok
    assert pipedrive.activities[0]["type"] == "mail"


def test_unknown_activity_type_is_permanent(server, pipedrive, client, ctx, make_event) -> None:
    outcome = make(server.url, client, activity_type="postcard").deliver(make_event(), ctx)
    assert (outcome.status, outcome.http_status) == ("permanent", 400)
    assert "postcard" in outcome.detail


def test_note_mode(server, pipedrive, client, ctx, make_event) -> None:
    outcome = make(server.url, client, mode="note").deliver(make_event("delivered"), ctx)
    assert outcome.ok, outcome.detail
    assert outcome.remote_id == "501"
    assert ctx.recall("note") == "501"
    (note,) = pipedrive.notes
    assert note["person_id"] == 42
    assert note["content"].startswith("Mail delivered: letter ltr_123<br>")


def test_person_id_from_metadata_skips_search(server, pipedrive, client, ctx, make_event) -> None:
    event = make_event(email=None, metadata={"pipedrive_person_id": "77"})
    assert make(server.url, client).deliver(event, ctx).ok
    assert [r.path for r in server.requests] == ["/api/v2/activities"]
    assert pipedrive.activities[0]["participants"] == [{"person_id": 77, "primary": True}]


def test_bad_person_id_in_metadata_is_permanent(server, pipedrive, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event(metadata={"pipedrive_person_id": "ada"}), ctx)
    assert outcome.status == "permanent"
    assert server.requests == []


def test_unknown_person_is_permanent(server, pipedrive, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event(email="nobody@example.com"), ctx)
    assert outcome.status == "permanent"
    assert outcome.detail == "no Pipedrive person with email nobody@example.com"
    assert pipedrive.activities == []


def test_several_persons_is_permanent(server, pipedrive, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event(email="twice@example.com"), ctx)
    assert outcome.status == "permanent"
    assert "several Pipedrive persons" in outcome.detail
    assert pipedrive.activities == []


def test_no_email_is_permanent(server, pipedrive, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event(email=None), ctx)
    assert outcome.status == "permanent"
    assert server.requests == []


def test_wrong_token_is_permanent(server, pipedrive, client, ctx, make_event) -> None:
    adapter = PipedriveAdapter("p", PipedriveAdapter.Settings(token="wrong-token", base_url=server.url), client)
    outcome = adapter.deliver(make_event(), ctx)
    assert (outcome.status, outcome.http_status) == ("permanent", 401)
    assert "rejected the API token" in outcome.detail


def test_token_never_in_detail(server, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(400, {"success": False, "error": f"token {req.headers['x-api-token']}"})
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert outcome.status == "permanent"
    assert TOKEN not in outcome.detail
    assert "***" in outcome.detail


def test_429_with_retry_after(server, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(429, {"success": False, "error": "Too many requests"},
                                       headers={"Retry-After": "2"})
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert (outcome.status, outcome.retry_after, outcome.http_status) == ("retry", 2, 429)


def test_429_uses_ratelimit_reset_header(server, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(429, {"success": False}, headers={"x-ratelimit-reset": "2"})
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert (outcome.status, outcome.retry_after) == ("retry", 2.0)


def test_500_retries(server, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(500, {"success": False, "error": "internal"})
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert (outcome.status, outcome.http_status) == ("retry", 500)


def test_network_error_retries(closed_url, client, ctx, make_event) -> None:
    outcome = make(closed_url, client).deliver(make_event(), ctx)
    assert outcome.status == "retry"


def test_timeout_retries(server, short_client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(200, {}, delay=0.6)
    outcome = make(server.url, short_client).deliver(make_event(), ctx)
    assert outcome.status == "retry"
    assert "timeout" in outcome.detail


def test_rerun_never_creates_a_second_activity(server, pipedrive, client, ctx, make_event) -> None:
    adapter, event = make(server.url, client), make_event()
    first = adapter.deliver(event, ctx)
    second = adapter.deliver(event, ctx)
    assert first.ok and second.ok
    assert second.remote_id == first.remote_id
    assert len(pipedrive.activities) == 1
    assert len(server.requests) == 2


def test_retry_after_failed_create_creates_exactly_one(server, pipedrive, client, ctx, make_event) -> None:
    failing = {"left": 1}

    def flaky(req: Recorded) -> Reply:
        if req.path == "/api/v2/activities" and failing["left"]:
            failing["left"] -= 1
            return Reply(502, {"success": False})
        return pipedrive(req)

    server.handler = flaky
    adapter, event = make(server.url, client), make_event()
    assert adapter.deliver(event, ctx).status == "retry"
    assert adapter.deliver(event, ctx).ok
    assert len(pipedrive.activities) == 1


@pytest.mark.parametrize("settings", [
    {"token": TOKEN, "mode": "deal"},
    {"token": ""},
    {"token": "t\u00f6ken"},
    {"token": TOKEN, "activity_type": ""},
    {"token": TOKEN, "rate_limit": "5/2s"},
    {"token": TOKEN, "base_url": "pipedrive.com"},
])
def test_invalid_settings(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        PipedriveAdapter.Settings(**settings)
