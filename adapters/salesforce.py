"""Salesforce: mail status on the Contact (or Lead), and a Task for the events someone must act on.

1. With `external_id_field` and a value in `metadata[external_id_metadata_key]`: upsert
   `PATCH /services/data/{v}/sobjects/{Object}/{ExtIdField}/{value}`. Otherwise find the record by email
   with SOQL (`... WHERE Email = '<escaped>' LIMIT 2`: none or several matches are permanent) and
   `PATCH /services/data/{v}/sobjects/{Object}/{Id}`.
2. For `task_events`: `POST /services/data/{v}/sobjects/Task` with `WhoId` = the record; the Task id is
   memoized in the delivery context, so a re-run never creates a second Task.
Batches (`batch_size > 1`) go through sObject Collections instead (`adapters.salesforce_batch`).
Salesforce answers limits with 403 `REQUEST_LIMIT_EXCEEDED` (no 429) and ambiguous upserts with 300.
An upsert that updated a record answers 204 with no body before API version 46.0 (and a create may answer
201 without one): that is a success; when a Task needs the record id, it is read with
`GET /sobjects/{Object}/{ExtIdField}/{value}?fields=Id`.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from pydantic import Field, field_validator, model_validator

from postrelay.adapters import _crm
from postrelay.adapters._payload import scrub
from postrelay.adapters.base import (
    Adapter,
    AdapterSettings,
    BatchItem,
    DeliveryContext,
    Outcome,
    check_token,
    check_url,
    classify,
    excerpt,
    path_segment,
    retry_after_seconds,
)
from postrelay.adapters.salesforce_batch import BATCH_LIMIT, TRANSIENT_ERRORS, CollectionWriter, soql_string, task_record
from postrelay.core.events import CanonicalEvent, EventType

DEFAULT_FIELDS = {
    "last_event": "Mail_Last_Event__c",
    "stage": "Mail_Stage__c",
    "event_at": "Mail_Event_At__c",
    "campaign": "Mail_Campaign__c",
}
DEFAULT_TASK_EVENTS = [EventType.RETURNED_TO_SENDER, EventType.PURL_COMPLETED]
__all__ = ["DEFAULT_FIELDS", "SalesforceAdapter", "soql_string"]


class SalesforceAdapter(Adapter):
    """Update the Contact/Lead mail fields; create a Task for the events that need a person."""

    type = "salesforce"
    batch_limit = BATCH_LIMIT

    class Settings(AdapterSettings):
        """`[destinations.NAME]` with `type = "salesforce"`."""

        access_token: str
        instance_url: str
        api_version: str = Field(default="v60.0", pattern=r"^v\d+\.\d$")
        object: Literal["Contact", "Lead"] = "Contact"
        external_id_field: str | None = None
        external_id_metadata_key: str | None = None
        fields: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_FIELDS))
        task_events: list[EventType] = Field(default_factory=lambda: list(DEFAULT_TASK_EVENTS))
        task_status: str = "Not Started"
        task_priority: str = "Normal"

        _token = field_validator("access_token")(check_token)
        _url = field_validator("instance_url")(check_url)
        _mapping = field_validator("fields")(_crm.check_mapping)
        _name = field_validator("external_id_field")(_crm.check_name)

        @model_validator(mode="after")
        def _external_id_pair(self) -> SalesforceAdapter.Settings:
            if bool(self.external_id_field) != bool(self.external_id_metadata_key):
                raise ValueError("set both external_id_field and external_id_metadata_key, or neither")
            return self

    settings: Settings

    def deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        """Update the record, then create the Task once for task events; ok carries the Task or record id."""
        return scrub(self._deliver(event, ctx), self.secrets())

    def deliver_batch(self, items: list[BatchItem]) -> list[Outcome]:
        """Records and Tasks through sObject Collections (`adapters.salesforce_batch`)."""
        writer = CollectionWriter(self._request, self._classify, self.settings)
        return [scrub(outcome, self.secrets()) for outcome in writer.run(items)]

    def _deliver(self, event: CanonicalEvent, ctx: DeliveryContext) -> Outcome:
        # a follow-up rule that names this destination (`do = "salesforce"`) is a task for a rep, whatever its trigger
        wants_task = event.type in self.settings.task_events or bool(ctx.extra.get("followup"))
        done = ctx.recall("task") if wants_task else None
        if done is not None:
            return Outcome.success(remote_id=done)
        record_id = self._write_record(event, need_id=wants_task)
        if isinstance(record_id, Outcome):
            return record_id
        if not wants_task:
            return Outcome.success(remote_id=record_id or None)
        return self._create_task(event, record_id, ctx)

    def _write_record(self, event: CanonicalEvent, need_id: bool) -> str | Outcome:
        """The record's id after writing the mail fields ("" when an upsert answered without a body and no
        Task needs the id)."""
        obj, fields = self.settings.object, _crm.mapped(self.settings.fields, event)
        field, key = self.settings.external_id_field, self.settings.external_id_metadata_key
        external_id = event.metadata.get(key) if key else None
        if field and external_id:
            path = f"/sobjects/{obj}/{field}/{path_segment(str(external_id), safe='')}"
            response = self._request("PATCH", path, json=fields)
            if isinstance(response, Outcome):
                return response
            if not response.is_success:
                return self._classify(response)
            upserted = _crm.dig(response, "id")
            if upserted or not need_id:
                return upserted or ""
            if response.status_code in (201, 204) and not response.content.strip():
                return self._read_id(path)
            return _crm.missing_id(response, f"Salesforce {obj} upsert")
        record_id = self._find_by_email(event)
        if isinstance(record_id, Outcome) or not fields:
            return record_id
        response = self._request("PATCH", f"/sobjects/{obj}/{path_segment(record_id, safe='')}", json=fields)
        if isinstance(response, Outcome):
            return response
        return record_id if response.is_success else self._classify(response)

    def _read_id(self, path: str) -> str | Outcome:
        """The `Id` of the record at `path` (an upsert that answered 201/204 without a body)."""
        response = self._request("GET", path, params={"fields": "Id"})
        if isinstance(response, Outcome):
            return response
        if not response.is_success:
            return self._classify(response)
        return _crm.dig(response, "Id") or _crm.missing_id(response, f"Salesforce {self.settings.object} read")

    def _find_by_email(self, event: CanonicalEvent) -> str | Outcome:
        obj, email = self.settings.object, event.recipient.email
        if not email:
            return Outcome.permanent(f"event has no recipient email and no external id: cannot find the"
                                     f" Salesforce {obj}")
        converted = " AND IsConverted = false" if obj == "Lead" else ""
        soql = f"SELECT Id FROM {obj} WHERE Email = {soql_string(email)}{converted} LIMIT 2"
        response = self._request("GET", "/query", params={"q": soql})
        if isinstance(response, Outcome):
            return response
        if not response.is_success:
            return self._classify(response)
        ids = _record_ids(response)
        if not ids:
            return Outcome.permanent(f"no Salesforce {obj} with email {email}")
        if len(ids) > 1:
            return Outcome.permanent(f"several Salesforce {obj} records have email {email}: merge them or"
                                     " configure an external id")
        return ids[0]

    def _create_task(self, event: CanonicalEvent, record_id: str, ctx: DeliveryContext) -> Outcome:
        task = task_record(event, record_id, self.settings.task_status, self.settings.task_priority)
        response = self._request("POST", "/sobjects/Task", json=task)
        if isinstance(response, Outcome):
            return response
        if not response.is_success:
            return self._classify(response)
        task_id = _crm.dig(response, "id")
        if task_id is None:
            return _crm.missing_id(response, "Salesforce Task")
        ctx.remember("task", task_id)
        return Outcome.success(remote_id=task_id, http_status=response.status_code)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | Outcome:
        url = f"{self.settings.instance_url}/services/data/{self.settings.api_version}{path}"
        headers = {"Authorization": f"Bearer {self.settings.access_token}"}
        return self.call(method, url, headers=headers, **kwargs)

    def _classify(self, response: httpx.Response) -> Outcome:
        """403 REQUEST_LIMIT_EXCEEDED and UNABLE_TO_LOCK_ROW retry; 300 and other 4xx are permanent."""
        code = response.status_code
        if _error_codes(response) & TRANSIENT_ERRORS:
            return Outcome.retry(excerpt(response), retry_after=retry_after_seconds(response), http_status=code)
        if code == 401:
            return Outcome.permanent(f"Salesforce rejected the access token (expired or revoked: refresh"
                                     f" access_token): {excerpt(response)}", http_status=code)
        if code == 300:
            return Outcome.permanent(f"several {self.settings.object} records match the external id:"
                                     f" {excerpt(response)}", http_status=code)
        return classify(response)


def _error_codes(response: httpx.Response) -> set[str]:
    """The `errorCode`s of a Salesforce error answer (a JSON list of `{message, errorCode}`)."""
    try:
        body = response.json()
    except ValueError:
        return set()
    items = body if isinstance(body, list) else [body]
    return {str(item["errorCode"]) for item in items if isinstance(item, dict) and "errorCode" in item}


def _record_ids(response: httpx.Response) -> list[str]:
    """The `Id`s of a SOQL query answer (`records[].Id`)."""
    try:
        records = response.json()["records"]
    except (ValueError, KeyError, TypeError):
        return []
    if not isinstance(records, list):
        return []
    return [str(r["Id"]) for r in records if isinstance(r, dict) and r.get("Id")]
