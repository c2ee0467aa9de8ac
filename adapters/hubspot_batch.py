"""HubSpot batch calls: many deliveries' contact updates and activities in two requests.

1. Contacts: `POST /crm/v3/objects/contacts/batch/update` for events that name the contact id
   (`metadata[contact_id_field]`), `POST /crm/v3/objects/contacts/batch/upsert` with `idProperty = email` for the
   others (HubSpot's batch update cannot address contacts by email; an upsert creates a contact that does not
   exist yet). Several deliveries for one contact collapse into one input whose properties are merged in the
   order the events occurred, so the latest stage wins (HubSpot also refuses duplicate ids in one batch).
2. Activities: `POST /crm/v3/objects/{notes|postal_mail}/batch/create`, one input per delivery, associated with
   its contact; each created id goes into the delivery's memo (`ctx.remember`), so a re-run never logs a
   second activity.
Every input carries `objectWriteTraceId` (its position); HubSpot echoes it on each result and names it in the
`context` of each per-item error of a 207 answer (`context.ids` names the contacts of a batch update). A
rejected item gets its own outcome; an item the answer does not mention is retried. A whole-request 4xx
other than auth or rate limiting is bisected, so one bad input cannot sink the other 99. At most
`BATCH_LIMIT` inputs go in one request: a larger batch is split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from postrelay.adapters import _crm
from postrelay.adapters.base import RETRYABLE_STATUS, BatchItem, Outcome, json_object

BATCH_LIMIT = 100  # inputs per HubSpot CRM batch request
CONTACTS = "/crm/v3/objects/contacts/batch"
TRANSIENT_CATEGORIES = frozenset({"RATE_LIMITS", "TOO_MANY_REQUESTS", "INTERNAL_ERROR", "TIMEOUT"})
Request = Callable[..., "httpx.Response | Outcome"]
Result = str | Outcome  # the created/updated object's id, or why not


def activity_input(event: Any, contact_id: str, body_property: str, association_type: int) -> dict[str, Any]:
    """One note / postal mail: the event's text at its time, associated with the contact."""
    return {
        "properties": {"hs_timestamp": _crm.timestamp(event.occurred_at), body_property: _crm.html_text(event)},
        "associations": [{
            "to": {"id": contact_id},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": association_type}],
        }],
    }


class BatchWriter:
    """Runs one batch for a HubSpot destination (built per batch by `HubSpotAdapter.deliver_batch`)."""

    def __init__(self, request: Request, classify: Callable[[httpx.Response], Outcome], mapping: dict[str, str],
                 contact_id_field: str, activity: tuple[str, str, int] | None, limit: int = BATCH_LIMIT) -> None:
        self.request = request
        self.classify = classify
        self.mapping = mapping
        self.contact_id_field = contact_id_field
        self.activity = activity
        self.limit = limit

    def run(self, items: list[BatchItem]) -> list[Outcome]:
        """One outcome per item, in order."""
        outcomes: list[Outcome | None] = [None] * len(items)
        by_id: dict[str, list[int]] = {}
        by_email: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            done = item.ctx.recall("activity")
            if done is not None:
                outcomes[i] = Outcome.success(remote_id=done)
                continue
            known = item.event.metadata.get(self.contact_id_field)
            email = item.event.recipient.email
            if known:
                by_id.setdefault(str(known), []).append(i)
            elif email:
                by_email.setdefault(email.lower(), []).append(i)
            else:
                outcomes[i] = Outcome.permanent(f"event has no recipient email and no metadata."
                                                f"{self.contact_id_field}: cannot find the HubSpot contact")
        contact_of: dict[int, str] = {}
        for path, groups, extra in ((f"{CONTACTS}/update", by_id, {}),
                                    (f"{CONTACTS}/upsert", by_email, {"idProperty": "email"})):
            targets = list(groups)
            inputs = [{"id": target, "properties": self._collapsed([items[i] for i in groups[target]]), **extra}
                      for target in targets]
            for target, result in zip(targets, self.send(path, inputs, match_ids=not extra), strict=True):
                for i in groups[target]:
                    if isinstance(result, Outcome):
                        outcomes[i] = replace(result)
                    else:
                        contact_of[i] = result
        if self.activity is None:
            for i, contact_id in contact_of.items():
                outcomes[i] = Outcome.success(remote_id=contact_id, http_status=200)
        elif contact_of:
            self._log_activities(items, contact_of, outcomes)
        return [o if o is not None else Outcome.retry("HubSpot batch: no outcome") for o in outcomes]

    def _collapsed(self, group: list[BatchItem]) -> dict[str, str]:
        """The properties of several deliveries for one contact, merged in occurrence order (latest wins)."""
        merged: dict[str, str] = {}
        for item in sorted(group, key=lambda it: it.event.occurred_at):
            merged.update(_crm.mapped(self.mapping, item.event))
        return merged

    def _log_activities(self, items: list[BatchItem], contact_of: dict[int, str],
                        outcomes: list[Outcome | None]) -> None:
        assert self.activity is not None
        object_type, body_property, association_type = self.activity
        order = list(contact_of)
        inputs = [activity_input(items[i].event, contact_of[i], body_property, association_type) for i in order]
        results = self.send(f"/crm/v3/objects/{object_type}/batch/create", inputs)
        for i, result in zip(order, results, strict=True):
            if isinstance(result, Outcome):
                outcomes[i] = replace(result)
            else:
                items[i].ctx.remember("activity", result)
                outcomes[i] = Outcome.success(remote_id=result, http_status=201)

    def send(self, path: str, inputs: list[dict[str, Any]], match_ids: bool = False) -> list[Result]:
        """POST `inputs` in requests of at most `limit`; one result per input, in order."""
        out: list[Result] = []
        for start in range(0, len(inputs), self.limit):
            out += self._send(path, inputs[start:start + self.limit], match_ids)
        return out

    def _send(self, path: str, chunk: list[dict[str, Any]], match_ids: bool) -> list[Result]:
        if not chunk:
            return []
        traced = [{**item, "objectWriteTraceId": str(n)} for n, item in enumerate(chunk)]
        response = self.request("POST", path, json={"inputs": traced})
        if isinstance(response, Outcome):
            return [replace(response) for _ in chunk]
        code = response.status_code
        if code in (200, 201, 207):
            return self._per_item(response, traced, match_ids)
        if 400 <= code < 500 and code not in RETRYABLE_STATUS and code not in (401, 403) and len(chunk) > 1:
            half = len(chunk) // 2  # one bad input rejected the whole request: find it, send the rest
            return self._send(path, chunk[:half], match_ids) + self._send(path, chunk[half:], match_ids)
        outcome = self.classify(response)
        return [replace(outcome) for _ in chunk]

    def _per_item(self, response: httpx.Response, traced: list[dict[str, Any]], match_ids: bool) -> list[Result]:
        """Match a 200/201/207 answer's results and errors to the inputs."""
        body = json_object(response)
        found: dict[str, str] = {}
        ids: set[str] = set()
        for result in body.get("results") or []:
            if isinstance(result, dict) and result.get("id") is not None:
                ids.add(str(result["id"]))
                if result.get("objectWriteTraceId") is not None:
                    found[str(result["objectWriteTraceId"])] = str(result["id"])
        failed: dict[str, Outcome] = {}
        for error in body.get("errors") or []:
            if not isinstance(error, dict):
                continue
            raw_context = error.get("context")
            context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
            category = str(error.get("category") or "ERROR")
            detail = f"HubSpot batch item rejected: HTTP {response.status_code}: {category}: {error.get('message', '')}"
            outcome = (Outcome.retry(detail[:500], http_status=response.status_code) if category in TRANSIENT_CATEGORIES
                       else Outcome.permanent(detail[:500], http_status=response.status_code))
            for trace in _strings(context.get("objectWriteTraceId")):
                failed[f"t:{trace}"] = outcome
            for contact in _strings(context.get("ids")):
                failed[f"i:{contact}"] = outcome
        out: list[Result] = []
        for item in traced:
            trace, target = item["objectWriteTraceId"], str(item.get("id", ""))
            if trace in found:
                out.append(found[trace])
            elif f"t:{trace}" in failed:
                out.append(replace(failed[f"t:{trace}"]))
            elif match_ids and f"i:{target}" in failed:
                out.append(replace(failed[f"i:{target}"]))
            elif match_ids and target in ids:
                out.append(target)
            else:
                out.append(Outcome.retry(f"HubSpot batch answer (HTTP {response.status_code}) does not mention"
                                         " this input", http_status=response.status_code))
        return out


def _strings(value: Any) -> list[str]:
    """A context entry (a list of strings, or one string) as strings."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)] if value is not None else []
