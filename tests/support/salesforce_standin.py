"""A Salesforce REST stand-in for batch tests and the batching bench: Contacts, Tasks, sObject Collections.

Answers per event (`GET /query`, `PATCH /sobjects/Contact/{Id}`, `PATCH /sobjects/Contact/{Field}/{value}`,
`POST /sobjects/Task`) and the sObject Collections calls (`PATCH /composite/sobjects` by Id,
`PATCH /composite/sobjects/Contact/{Field}` upsert, `POST /composite/sobjects` create) with the documented
shapes: one `{id, success, errors, created}` per record in request order (`allOrNone: false`), 400
`EXCEEDED_ID_LIMIT` above 200 records, and 403 `REQUEST_LIMIT_EXCEEDED` beyond `limit` requests per `window`
seconds (Salesforce sends no 429). Counted here: calls, refusals, Tasks per postrelay event id, records' fields.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from tests.support.http_server import Recorded, Reply

EVENT_ID = re.compile(r"postrelay event: (\S+)")
LITERAL = re.compile(r"'((?:[^'\\]|\\.)*)'")
PREFIX = re.compile(r"^/services/data/v\d+\.\d")


class SalesforceStandIn:
    """Call it with each request (a `LocalHTTPServer` handler); thread-safe."""

    def __init__(self, limit: int = 100, window: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 external_field: str = "Mail_Contact_Id__c") -> None:
        self.limit, self.window, self.clock, self.external_field = limit, window, clock, external_field
        self.lock = threading.Lock()
        self.stamps: deque[float] = deque()
        self.calls: Counter[str] = Counter()
        self.refused = 0
        self.by_email: dict[str, str] = {}
        self.by_external: dict[str, str] = {}
        self.fields: dict[str, dict[str, Any]] = {}
        self.tasks: Counter[str] = Counter()
        self.locked: set[str] = set()  # record ids answering UNABLE_TO_LOCK_ROW
        self.batch_sizes: list[int] = []
        self._ids = 0
        self.known: set[str] = set()  # every record id

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())

    def add_contacts(self, emails: list[str]) -> dict[str, str]:
        """Contacts with these emails (ids 003000000000001AAA, ...); returns email -> id."""
        with self.lock:
            for email in emails:
                self.by_email.setdefault(email.lower(), self._new_id())
            return dict(self.by_email)

    def _new_id(self) -> str:
        self._ids += 1
        record_id = f"003{self._ids:012d}AAA"
        self.known.add(record_id)
        return record_id

    def __call__(self, req: Recorded) -> Reply:
        with self.lock:
            now = self.clock()
            while self.stamps and self.stamps[0] <= now - self.window:
                self.stamps.popleft()
            if len(self.stamps) >= self.limit:
                self.refused += 1
                self.calls["403"] += 1
                return Reply(403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
            self.stamps.append(now)
            path = PREFIX.sub("", req.path)
            self.calls[f"{req.method} {_route(path)}"] += 1
            return self._answer(req, path)

    def _answer(self, req: Recorded, path: str) -> Reply:
        if path == "/query":
            emails = [m.replace("\\'", "'") for m in LITERAL.findall(req.query.get("q", [""])[0])]
            records = [{"attributes": {"type": "Contact"}, "Id": self.by_email[e.lower()], "Email": e}
                       for e in emails if e.lower() in self.by_email]
            return Reply(200, {"totalSize": len(records), "done": True, "records": records})
        if path.startswith("/composite/sobjects"):
            records = req.json().get("records")
            if req.json().get("allOrNone") is not False or not isinstance(records, list):
                return Reply(400, [{"message": "allOrNone false and records expected", "errorCode": "INVALID_INPUT"}])
            if len(records) > 200:
                return Reply(400, [{"message": "too many records", "errorCode": "EXCEEDED_ID_LIMIT"}])
            self.batch_sizes.append(len(records))
            if req.method == "POST":
                return Reply(200, [self._task(r) for r in records])
            if path == "/composite/sobjects":
                return Reply(200, [self._update(r.get("id"), r) for r in records])
            return Reply(200, [self._upsert(r.get(self.external_field), r) for r in records])
        if path == "/sobjects/Task" and req.method == "POST":
            result = self._task(req.json())
            return Reply(201, result) if result["success"] else Reply(400, result["errors"])
        if path.startswith(f"/sobjects/Contact/{self.external_field}/") and req.method == "PATCH":
            result = self._upsert(path.rsplit("/", 1)[1], req.json())
            return Reply(201 if result["created"] else 200, result)
        if path.startswith("/sobjects/Contact/") and req.method == "PATCH":
            result = self._update(path.rsplit("/", 1)[1], req.json())
            return Reply(204, b"") if result["success"] else Reply(404, result["errors"])
        return Reply(404, [{"message": f"unknown {req.method} {path}", "errorCode": "NOT_FOUND"}])

    def _update(self, record_id: Any, record: dict[str, Any]) -> dict[str, Any]:
        if record_id in self.locked:
            return _error("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")
        if record_id not in self.known:
            return _error("ENTITY_IS_DELETED", "entity is deleted")
        self._store(str(record_id), record)
        return {"id": record_id, "success": True, "errors": []}

    def _upsert(self, external: Any, record: dict[str, Any]) -> dict[str, Any]:
        if not external:
            return _error("REQUIRED_FIELD_MISSING", "external id missing")
        created = str(external) not in self.by_external
        record_id = self.by_external.setdefault(str(external), self._new_id())
        self._store(record_id, record)
        return {"id": record_id, "success": True, "errors": [], "created": created}

    def _store(self, record_id: str, record: dict[str, Any]) -> None:
        fields = {k: v for k, v in record.items() if k not in ("attributes", "id", self.external_field)}
        self.fields[record_id] = {**self.fields.get(record_id, {}), **fields}

    def _task(self, record: dict[str, Any]) -> dict[str, Any]:
        match = EVENT_ID.search(record.get("Description", ""))
        if not match or record.get("WhoId") not in self.known or not record.get("Subject"):
            return _error("INVALID_FIELD", "bad Task")
        self.tasks[match.group(1)] += 1
        return {"id": f"00T{sum(self.tasks.values()):012d}AAA", "success": True, "errors": []}


def _error(code: str, message: str) -> dict[str, Any]:
    return {"success": False, "errors": [{"statusCode": code, "message": message, "fields": []}]}


def _route(path: str) -> str:
    if path.startswith("/sobjects/Contact/"):
        return "/sobjects/Contact/{id}"
    return path
