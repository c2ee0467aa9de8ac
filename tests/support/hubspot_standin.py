"""A HubSpot CRM v3 stand-in for batch tests and the batching bench: contacts, notes, a rolling rate limit.

Answers the single-object calls the adapter makes per event (`PATCH /crm/v3/objects/contacts/{id}`,
`POST /crm/v3/objects/notes`) and the batch calls (`contacts/batch/update`, `contacts/batch/upsert`,
`notes/batch/create`) with the documented shapes: 200/201 with `results` (each echoing `objectWriteTraceId`),
207 with per-item `errors` (`context.ids` for contacts not found, `context.objectWriteTraceId` for rejected
inputs), 400 for a malformed batch (more than 100 inputs, duplicate ids), 429 beyond `limit` requests per
`window` seconds (`policyName: TEN_SECONDLY_ROLLING`), and `X-HubSpot-RateLimit-*` headers on every answer.
What arrived is counted here: calls, 429s, notes per postrelay event id (duplicates), contacts' properties.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from tests.support.http_server import Recorded, Reply

EVENT_ID = re.compile(r"postrelay event: (\S+?)(?:<|$)")
NOW = "2026-12-01T12:00:00.000Z"


class HubSpotStandIn:
    """Call it with each request (a `LocalHTTPServer` handler); thread-safe."""

    def __init__(self, limit: int = 100, window: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 max_inputs: int = 100) -> None:
        self.limit, self.window, self.clock, self.max_inputs = limit, window, clock, max_inputs
        self.lock = threading.Lock()
        self.stamps: deque[float] = deque()
        self.calls: Counter[str] = Counter()
        self.throttled = 0
        self.contacts: dict[str, str] = {}  # email -> id
        self.properties: dict[str, dict[str, str]] = {}  # id -> latest properties
        self.notes: Counter[str] = Counter()  # postrelay event id -> notes created for it
        self.rejected_emails: set[str] = set()  # upserts of these emails fail (207, per item)
        self.inject: list[Reply] = []  # answers to give, in order, before anything else
        self.other_usage = 0  # requests of "other integrations" counted in the window on each call
        self.batch_sizes: list[int] = []
        self.ids: set[str] = set()  # every contact id

    def add_contacts(self, emails: list[str]) -> dict[str, str]:
        """Create contacts (ids 1000, 1001, ...); returns email -> id."""
        with self.lock:
            for email in emails:
                self._contact(email)
            return dict(self.contacts)

    def _contact(self, email: str) -> str:
        """The id of the contact with `email`, created if missing."""
        if email not in self.contacts:
            self.contacts[email] = str(1000 + len(self.contacts))
            self.ids.add(self.contacts[email])
        return self.contacts[email]

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def __call__(self, req: Recorded) -> Reply:
        with self.lock:
            now = self.clock()
            while self.stamps and self.stamps[0] <= now - self.window:
                self.stamps.popleft()
            for _ in range(self.other_usage):
                self.stamps.append(now)
            if len(self.stamps) >= self.limit:
                self.throttled += 1
                self.calls["429"] += 1
                return Reply(429, {"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                                   "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"},
                             self._headers(0))
            self.stamps.append(now)
            remaining = self.limit - len(self.stamps)
            self.calls[f"{req.method} {_route(req.path)}"] += 1
            if self.inject:
                reply = self.inject.pop(0)
                return Reply(reply.status, reply.body, {**self._headers(remaining), **reply.headers})
            reply = self._answer(req)
            return Reply(reply.status, reply.body, {**self._headers(remaining), **reply.headers})

    def _headers(self, remaining: int) -> dict[str, str]:
        return {"X-HubSpot-RateLimit-Max": str(self.limit), "X-HubSpot-RateLimit-Remaining": str(max(0, remaining)),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.window * 1000))}

    def _answer(self, req: Recorded) -> Reply:
        path = req.path
        if path == "/crm/v3/objects/contacts/batch/update":
            return self._batch(req, self._update_one)
        if path == "/crm/v3/objects/contacts/batch/upsert":
            return self._batch(req, self._upsert_one)
        if path == "/crm/v3/objects/notes/batch/create":
            return self._batch(req, self._note_one, created=True)
        if path.startswith("/crm/v3/objects/contacts/") and req.method == "PATCH":
            key = path.rsplit("/", 1)[1].replace("%40", "@")
            contact = self.contacts.get(key) if req.query.get("idProperty") == ["email"] else (
                key if key in self.ids else None)
            if contact is None:
                return Reply(404, {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "not found"})
            self.properties[contact] = {**self.properties.get(contact, {}), **req.json()["properties"]}
            return Reply(200, {"id": contact, "properties": {}})
        if path == "/crm/v3/objects/notes" and req.method == "POST":
            result = self._note_one(req.json())
            return Reply(201, result) if "id" in result else Reply(400, result)
        return Reply(404, {"status": "error", "message": f"unknown route {req.method} {path}"})

    def _batch(self, req: Recorded, one: Callable[[dict[str, Any]], dict[str, Any]], created: bool = False) -> Reply:
        inputs = req.json().get("inputs")
        if not isinstance(inputs, list) or not inputs:
            return Reply(400, {"status": "error", "category": "VALIDATION_ERROR", "message": "inputs required"})
        if len(inputs) > self.max_inputs:
            return Reply(400, {"status": "error", "category": "VALIDATION_ERROR",
                               "message": f"Batch input cannot exceed {self.max_inputs} inputs"})
        ids = [i.get("id") for i in inputs if "id" in i]
        if len(ids) != len(set(ids)):
            return Reply(400, {"status": "error", "category": "VALIDATION_ERROR",
                               "message": "Duplicate IDs found in batch input"})
        self.batch_sizes.append(len(inputs))
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in inputs:
            out = one(item)
            (results if "id" in out else errors).append(out)
        body: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": NOW, "completedAt": NOW}
        if errors:
            body.update(errors=errors, numErrors=len(errors))
            return Reply(207, body)
        return Reply(201 if created else 200, body)

    def _update_one(self, item: dict[str, Any]) -> dict[str, Any]:
        contact = str(item["id"])
        if contact not in self.ids:
            return {"status": "error", "category": "OBJECT_NOT_FOUND", "message": "Could not get some CONTACT objects",
                    "context": {"ids": [contact]}, "errors": [], "links": {}}
        self.properties[contact] = {**self.properties.get(contact, {}), **item["properties"]}
        return _result(contact, item)

    def _upsert_one(self, item: dict[str, Any]) -> dict[str, Any]:
        email = str(item["id"])
        if item.get("idProperty") != "email" or email in self.rejected_emails:
            return {"status": "error", "category": "VALIDATION_ERROR", "message": f"Email {email} is invalid",
                    "context": {"objectWriteTraceId": [item.get("objectWriteTraceId")]}, "errors": [], "links": {}}
        new = email not in self.contacts
        contact = self._contact(email)
        self.properties[contact] = {**self.properties.get(contact, {}), **item["properties"]}
        return {**_result(contact, item), "new": new}

    def _note_one(self, item: dict[str, Any]) -> dict[str, Any]:
        body = item.get("properties", {}).get("hs_note_body", "")
        assoc = (item.get("associations") or [{}])[0]
        match = EVENT_ID.search(body)
        if not match or assoc.get("to", {}).get("id") not in self.ids or not item["properties"].get(
                "hs_timestamp") or assoc.get("types") != [{"associationCategory": "HUBSPOT_DEFINED",
                                                          "associationTypeId": 202}]:
            return {"status": "error", "category": "VALIDATION_ERROR", "message": "bad note",
                    "context": {"objectWriteTraceId": [item.get("objectWriteTraceId")]}, "errors": [], "links": {}}
        self.notes[match.group(1)] += 1
        return _result(str(50_000 + sum(self.notes.values())), item)


def _result(object_id: str, item: dict[str, Any]) -> dict[str, Any]:
    out = {"id": object_id, "properties": {}, "createdAt": NOW, "updatedAt": NOW, "archived": False}
    if item.get("objectWriteTraceId") is not None:
        out["objectWriteTraceId"] = item["objectWriteTraceId"]
    return out


def _route(path: str) -> str:
    """A path with object ids left out (`/crm/v3/objects/contacts/{id}`)."""
    if path.startswith("/crm/v3/objects/contacts/") and "/batch/" not in path:
        return "/crm/v3/objects/contacts/{id}"
    return path
