"""Salesforce sObject Collections: many deliveries' record writes and Tasks in a few requests.

1. Records: with `external_id_field` and a value in `metadata[external_id_metadata_key]`,
   `PATCH /services/data/{v}/composite/sobjects/{Object}/{ExtIdField}` (upsert by external id, API 46.0+);
   otherwise the records are found by email with one SOQL query per 100 emails
   (`SELECT Id, Email FROM {Object} WHERE Email IN (...)`; none or several matches are permanent, as per
   event) and updated with `PATCH /services/data/{v}/composite/sobjects`. Several deliveries for one record
   collapse into one record, fields merged in occurrence order (the latest wins).
2. Tasks (for `task_events` and follow-ups): `POST /services/data/{v}/composite/sobjects`; each created id
   goes into its delivery's memo, so a re-run never creates a second Task.
Every request sends `allOrNone: false` and at most `BATCH_LIMIT` records; Salesforce answers one result per
record, in request order (`{id, success, errors: [{statusCode, message}]}`). A record error with a transient
code (`UNABLE_TO_LOCK_ROW`, `REQUEST_LIMIT_EXCEEDED`) retries that delivery alone, any other is permanent; a
whole-request 4xx other than auth and limits is bisected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from postrelay.adapters import _crm
from postrelay.adapters.base import BatchItem, Outcome

BATCH_LIMIT = 200  # records per sObject Collections request
QUERY_CHUNK = 100  # emails per SOQL IN (...) query (keeps the URL well under Salesforce's 16 KB)
TRANSIENT_ERRORS = frozenset({"REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW"})
SUBJECT_MAX = 255
Request = Callable[..., "httpx.Response | Outcome"]
Result = str | Outcome


def soql_string(value: str) -> str:
    """`value` as a quoted SOQL string literal (backslash, quotes and control characters escaped)."""
    escapes = {"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
               "\f": "\\f"}
    return "'" + "".join(escapes.get(char, char) for char in value) + "'"


def task_record(event: Any, record_id: str, status: str, priority: str) -> dict[str, Any]:
    """The Task logged for an event someone must act on."""
    return {
        "Subject": _crm.summary(event)[:SUBJECT_MAX],
        "WhoId": record_id,
        "ActivityDate": _crm.timestamp(event.occurred_at)[:10],
        "Description": _crm.plain_text(event),
        "Status": status,
        "Priority": priority,
    }


class CollectionWriter:
    """Runs one batch for a Salesforce destination (built per batch by `SalesforceAdapter.deliver_batch`)."""

    def __init__(self, request: Request, classify: Callable[[httpx.Response], Outcome], settings: Any,
                 limit: int = BATCH_LIMIT) -> None:
        self.request = request
        self.classify = classify
        self.s = settings
        self.limit = limit

    def run(self, items: list[BatchItem]) -> list[Outcome]:
        """One outcome per item, in order."""
        s = self.s
        outcomes: list[Outcome | None] = [None] * len(items)
        wants_task = [it.event.type in s.task_events or bool(it.ctx.extra.get("followup")) for it in items]
        by_external: dict[str, list[int]] = {}
        by_email: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            done = item.ctx.recall("task") if wants_task[i] else None
            if done is not None:
                outcomes[i] = Outcome.success(remote_id=done)
                continue
            external = item.event.metadata.get(s.external_id_metadata_key) if s.external_id_metadata_key else None
            if s.external_id_field and external:
                by_external.setdefault(str(external), []).append(i)
            elif item.event.recipient.email:
                by_email.setdefault(item.event.recipient.email.lower(), []).append(i)
            else:
                outcomes[i] = Outcome.permanent(f"event has no recipient email and no external id: cannot find the"
                                                f" Salesforce {s.object}")
        record_of: dict[int, str] = {}
        self._upsert(items, by_external, outcomes, record_of)
        self._update(items, by_email, outcomes, record_of)
        task_items = [i for i in record_of if wants_task[i]]
        for i in record_of:
            if not wants_task[i]:
                outcomes[i] = Outcome.success(remote_id=record_of[i] or None, http_status=200)
        if task_items:
            tasks = [{"attributes": {"type": "Task"},
                      **task_record(items[i].event, record_of[i], s.task_status, s.task_priority)} for i in task_items]
            for i, result in zip(task_items, self.send("POST", "/composite/sobjects", tasks), strict=True):
                if isinstance(result, Outcome):
                    outcomes[i] = replace(result)
                else:
                    items[i].ctx.remember("task", result)
                    outcomes[i] = Outcome.success(remote_id=result, http_status=200)
        return [o if o is not None else Outcome.retry("Salesforce batch: no outcome") for o in outcomes]

    def _record(self, group: list[BatchItem]) -> dict[str, Any]:
        merged: dict[str, Any] = {"attributes": {"type": self.s.object}}
        for item in sorted(group, key=lambda it: it.event.occurred_at):
            merged.update(_crm.mapped(self.s.fields, item.event))
        return merged

    def _settle(self, groups: dict[str, list[int]], targets: list[str], results: list[Result],
                outcomes: list[Outcome | None], record_of: dict[int, str]) -> None:
        for target, result in zip(targets, results, strict=True):
            for i in groups[target]:
                if isinstance(result, Outcome):
                    outcomes[i] = replace(result)
                else:
                    record_of[i] = result

    def _upsert(self, items: list[BatchItem], groups: dict[str, list[int]], outcomes: list[Outcome | None],
                record_of: dict[int, str]) -> None:
        if not groups:
            return
        field = self.s.external_id_field
        targets = list(groups)
        records = [{**self._record([items[i] for i in groups[t]]), field: t} for t in targets]
        path = f"/composite/sobjects/{self.s.object}/{field}"
        self._settle(groups, targets, self.send("PATCH", path, records), outcomes, record_of)

    def _update(self, items: list[BatchItem], groups: dict[str, list[int]], outcomes: list[Outcome | None],
                record_of: dict[int, str]) -> None:
        if not groups:
            return
        found: dict[str, Result] = {}
        emails = list(groups)
        for start in range(0, len(emails), QUERY_CHUNK):
            found.update(self._find(emails[start:start + QUERY_CHUNK]))
        targets = [e for e in emails if isinstance(found[e], str)]
        for email in emails:
            failure = found[email]
            if isinstance(failure, Outcome):
                for i in groups[email]:
                    outcomes[i] = replace(failure)
        records = [{**self._record([items[i] for i in groups[e]]), "id": found[e]} for e in targets]
        with_fields = [r for r in records if len(r) > 2]
        results: list[Result] = [str(found[e]) for e in targets]
        if with_fields:
            answered = iter(self.send("PATCH", "/composite/sobjects", with_fields))
            results = [next(answered) if len(r) > 2 else str(r["id"]) for r in records]
        self._settle(groups, targets, results, outcomes, record_of)

    def _find(self, emails: list[str]) -> dict[str, Result]:
        """email -> the one record id with that email, or why not (none, several, the query failed)."""
        obj = self.s.object
        converted = " AND IsConverted = false" if obj == "Lead" else ""
        soql = f"SELECT Id, Email FROM {obj} WHERE Email IN ({', '.join(soql_string(e) for e in emails)}){converted}"
        response = self.request("GET", "/query", params={"q": soql})
        if isinstance(response, Outcome):
            return {e: replace(response) for e in emails}
        if not response.is_success:
            outcome = self.classify(response)
            return {e: replace(outcome) for e in emails}
        body = _json(response)
        ids: dict[str, list[str]] = {}
        for record in body.get("records") or [] if isinstance(body, dict) else []:
            if isinstance(record, dict) and record.get("Id") and isinstance(record.get("Email"), str):
                ids.setdefault(record["Email"].lower(), []).append(str(record["Id"]))
        complete = not isinstance(body, dict) or body.get("done", True) is not False
        out: dict[str, Result] = {}
        for email in emails:
            matches = ids.get(email, [])
            if len(matches) == 1:
                out[email] = matches[0]
            elif len(matches) > 1:
                out[email] = Outcome.permanent(f"several Salesforce {obj} records have email {email}: merge them or"
                                               " configure an external id")
            elif complete:
                out[email] = Outcome.permanent(f"no Salesforce {obj} with email {email}")
            else:
                out[email] = Outcome.retry("Salesforce query answer was paginated; looked up again later")
        return out

    def send(self, method: str, path: str, records: list[dict[str, Any]]) -> list[Result]:
        """Send `records` in requests of at most `limit`; one result per record, in order."""
        out: list[Result] = []
        for start in range(0, len(records), self.limit):
            out += self._send(method, path, records[start:start + self.limit])
        return out

    def _send(self, method: str, path: str, chunk: list[dict[str, Any]]) -> list[Result]:
        if not chunk:
            return []
        response = self.request(method, path, json={"allOrNone": False, "records": chunk})
        if isinstance(response, Outcome):
            return [replace(response) for _ in chunk]
        body = _json(response)
        if response.is_success and isinstance(body, list) and len(body) == len(chunk):
            return [self._item(result, response.status_code) for result in body]
        code = response.status_code
        if 400 <= code < 500 and code not in (401, 403, 429) and len(chunk) > 1 and not _transient(body):
            half = len(chunk) // 2
            return self._send(method, path, chunk[:half]) + self._send(method, path, chunk[half:])
        outcome = (self.classify(response) if not response.is_success else
                   Outcome.retry(f"Salesforce collection answer does not list {len(chunk)} results", http_status=code))
        return [replace(outcome) for _ in chunk]

    def _item(self, result: Any, code: int) -> Result:
        if isinstance(result, dict) and result.get("success") and result.get("id"):
            return str(result["id"])
        errors = result.get("errors") if isinstance(result, dict) else None
        errors = errors if isinstance(errors, list) else []
        codes = {str(e.get("statusCode")) for e in errors if isinstance(e, dict)}
        detail = "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in errors if isinstance(e, dict))
        detail = f"Salesforce record rejected: {detail or 'no detail'}"[:500]
        if codes & TRANSIENT_ERRORS:
            return Outcome.retry(detail, http_status=code)
        return Outcome.permanent(detail, http_status=code)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _transient(body: Any) -> bool:
    items = body if isinstance(body, list) else [body]
    return any(isinstance(i, dict) and i.get("errorCode") in TRANSIENT_ERRORS for i in items)
