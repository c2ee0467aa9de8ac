"""Salesforce adapter against a loopback server that answers like the REST API (SOQL, sObjects, upsert)."""

from __future__ import annotations

import re
from urllib.parse import unquote

import httpx
import pytest
from pydantic import ValidationError

from postrelay.adapters import adapter_class
from postrelay.adapters.base import DeliveryContext
from postrelay.adapters.salesforce import DEFAULT_FIELDS, SalesforceAdapter, soql_string
from tests.support.http_server import LocalHTTPServer, Recorded, Reply

TOKEN = "00D5g000004ABCD!AQ0AQFakeAccessTokenValue1234567890"
API = "/services/data/v60.0"
SOQL = re.compile(r"^SELECT Id FROM (Contact|Lead) WHERE Email = '((?:[^'\\]|\\.)*)'( AND IsConverted = false)?"
                  r" LIMIT 2$")
ADA = "0035g00000AdaAAA"


def sf_error(status: int, code: str, message: str) -> Reply:
    return Reply(status, [{"message": message, "errorCode": code, "fields": []}])


class FakeSalesforce:
    """Contacts and Leads with their fields, the fields that exist, and created Tasks."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, dict[str, object]]] = {
            "Contact": {
                ADA: {"Email": "ada@example.com", "Mail_Contact_Id__c": "MC-1"},
                "0035g00000OBrAAA": {"Email": "o'brien@example.com"},
                "0035g00000Tw1AAA": {"Email": "twice@example.com", "Mail_Contact_Id__c": "MC-DUP"},
                "0035g00000Tw2AAA": {"Email": "twice@example.com", "Mail_Contact_Id__c": "MC-DUP"},
            },
            "Lead": {
                "00Q5g00000OldAAA": {"Email": "lead@example.com", "IsConverted": True},
                "00Q5g00000NewAAA": {"Email": "lead@example.com", "IsConverted": False},
            },
        }
        self.known_fields = {"Email", "LastName", "Mail_Contact_Id__c", *DEFAULT_FIELDS.values()}
        self.tasks: list[dict] = []
        self.bodiless_upserts = False  # API versions before 46.0: an updating upsert answers 204, no body

    def __call__(self, req: Recorded) -> Reply:
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if not req.path.startswith(API + "/"):
            return sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        parts = [unquote(p) for p in req.path.removeprefix(API + "/").split("/")]
        match req.method, parts:
            case "GET", ["query"]:
                return self.query(req.query["q"][0])
            case "POST", ["sobjects", "Task"]:
                return self.create_task(req.json())
            case "PATCH", ["sobjects", obj, record_id] if obj in self.records:
                return self.update(obj, record_id, req.json())
            case "PATCH", ["sobjects", obj, field, value] if obj in self.records:
                return self.upsert(obj, field, value, req.json())
            case "GET", ["sobjects", obj, field, value] if obj in self.records:
                return self.read_by_external_id(obj, field, value, req.query.get("fields", ["Id"])[0])
        return sf_error(404, "NOT_FOUND", "The requested resource does not exist")

    def query(self, soql: str) -> Reply:
        match = SOQL.match(soql)
        if not match:
            return sf_error(400, "MALFORMED_QUERY", f"unexpected token: {soql}")
        obj, email, not_converted = match.group(1), re.sub(r"\\(.)", r"\1", match.group(2)), match.group(3)
        ids = [i for i, r in self.records[obj].items()
               if r["Email"] == email and not (not_converted and r.get("IsConverted"))][:2]
        records = [{"attributes": {"type": obj, "url": f"{API}/sobjects/{obj}/{i}"}, "Id": i} for i in ids]
        return Reply(200, {"totalSize": len(records), "done": True, "records": records})

    def check_fields(self, obj: str, body: dict) -> Reply | None:
        unknown = sorted(set(body) - self.known_fields)
        if unknown:
            return sf_error(400, "INVALID_FIELD", f"No such column '{unknown[0]}' on sobject of type {obj}")
        return None

    def update(self, obj: str, record_id: str, body: dict) -> Reply:
        if record_id not in self.records[obj]:
            return sf_error(404, "NOT_FOUND", "Provided external ID field does not exist or is not accessible")
        error = self.check_fields(obj, body)
        if error:
            return error
        self.records[obj][record_id].update(body)
        return Reply(204, b"")

    def upsert(self, obj: str, field: str, value: str, body: dict) -> Reply:
        if field in body:
            return sf_error(400, "INVALID_FIELD", f"{field} is the external id: do not set it in the body")
        ids = [i for i, r in self.records[obj].items() if r.get(field) == value]
        if len(ids) > 1:
            return Reply(300, [f"{API}/sobjects/{obj}/{i}" for i in ids])
        if not ids:
            return sf_error(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [LastName]")
        error = self.update(obj, ids[0], body)
        if error.status != 204 or self.bodiless_upserts:
            return error
        return Reply(200, {"id": ids[0], "success": True, "errors": [], "created": False})

    def read_by_external_id(self, obj: str, field: str, value: str, fields: str) -> Reply:
        ids = [i for i, r in self.records[obj].items() if r.get(field) == value]
        if len(ids) != 1:
            return Reply(300, [f"{API}/sobjects/{obj}/{i}" for i in ids]) if ids else \
                sf_error(404, "NOT_FOUND", "The requested resource does not exist")
        record = {"Id": ids[0], **self.records[obj][ids[0]]}
        return Reply(200, {"attributes": {"type": obj, "url": f"{API}/sobjects/{obj}/{ids[0]}"},
                           **{k: v for k, v in record.items() if k in fields.split(",")}})

    def create_task(self, body: dict) -> Reply:
        who = body.get("WhoId")
        if not any(who in records for records in self.records.values()):
            return sf_error(400, "FIELD_INTEGRITY_EXCEPTION", "Name ID: id value of incorrect type")
        if body.get("Status") not in {"Not Started", "In Progress", "Completed"} \
                or body.get("Priority") not in {"High", "Normal", "Low"}:
            return sf_error(400, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "bad value for restricted picklist")
        if not body.get("Subject") or not re.fullmatch(r"\d{4}-\d\d-\d\d", body.get("ActivityDate", "")):
            return sf_error(400, "JSON_PARSER_ERROR", "bad Subject or ActivityDate")
        self.tasks.append(body)
        return Reply(201, {"id": f"00T5g0000000{len(self.tasks):03d}AAA", "success": True, "errors": []})


@pytest.fixture
def salesforce(server: LocalHTTPServer) -> FakeSalesforce:
    fake = FakeSalesforce()
    server.handler = fake
    return fake


def make(url: str, client: httpx.Client, **settings: object) -> SalesforceAdapter:
    options = {"access_token": TOKEN, "instance_url": url, **settings}
    return SalesforceAdapter("salesforce", SalesforceAdapter.Settings(**options), client)


def requests_summary(server: LocalHTTPServer) -> list[tuple[str, str]]:
    return [(r.method, r.path.removeprefix(API)) for r in server.requests]


def test_registry_points_here() -> None:
    assert adapter_class("salesforce") is SalesforceAdapter


def test_updates_contact_found_by_email(server, salesforce, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event("in_local_area"), ctx)

    assert outcome.ok, outcome.detail
    assert outcome.remote_id == ADA
    assert requests_summary(server) == [("GET", "/query"), ("PATCH", f"/sobjects/Contact/{ADA}")]
    assert server.requests[0].query["q"] == [
        "SELECT Id FROM Contact WHERE Email = 'ada@example.com' LIMIT 2"]
    assert salesforce.records["Contact"][ADA] == {
        "Email": "ada@example.com", "Mail_Contact_Id__c": "MC-1",
        "Mail_Last_Event__c": "in_local_area", "Mail_Stage__c": "in_local_area",
        "Mail_Event_At__c": "2024-05-06T14:30:15.000Z", "Mail_Campaign__c": "spring-24",
    }
    assert salesforce.tasks == []


def test_task_event_creates_one_task(server, salesforce, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event("returned_to_sender"), ctx)

    assert outcome.ok, outcome.detail
    assert outcome.remote_id == "00T5g0000000001AAA"
    assert ctx.recall("task") == outcome.remote_id
    (task,) = salesforce.tasks
    assert task["WhoId"] == ADA
    assert task["Subject"] == "Mail returned to sender: letter ltr_123"
    assert task["ActivityDate"] == "2024-05-06"
    assert (task["Status"], task["Priority"]) == ("Not Started", "Normal")
    assert "Tracking number: 9400111" in task["Description"]


def test_followup_action_creates_a_task_whatever_its_trigger(server, salesforce, client, make_event) -> None:
    ctx = DeliveryContext(destination="sf-task", extra={"followup": "call-on-arrival", "estimated": False})
    outcome = make(server.url, client).deliver(make_event("processed_for_delivery"), ctx)
    assert outcome.ok, outcome.detail
    (task,) = salesforce.tasks
    assert task["WhoId"] == ADA and ctx.recall("task") == outcome.remote_id


def test_engagement_task_keeps_the_stage(server, salesforce, client, ctx, make_event) -> None:
    event = make_event("purl_completed", stage="delivered")
    assert make(server.url, client, task_priority="High").deliver(event, ctx).ok
    assert salesforce.records["Contact"][ADA]["Mail_Stage__c"] == "delivered"
    assert salesforce.records["Contact"][ADA]["Mail_Last_Event__c"] == "purl_completed"
    assert salesforce.tasks[0]["Priority"] == "High"


def test_rerun_never_creates_a_second_task(server, salesforce, client, ctx, make_event) -> None:
    adapter, event = make(server.url, client), make_event("returned_to_sender")
    first = adapter.deliver(event, ctx)
    calls = len(server.requests)
    second = adapter.deliver(event, ctx)
    assert first.ok and second.ok
    assert second.remote_id == first.remote_id
    assert len(salesforce.tasks) == 1
    assert len(server.requests) == calls


def test_retry_after_failed_task_creates_exactly_one(server, salesforce, client, ctx, make_event) -> None:
    failing = {"left": 1}

    def flaky(req: Recorded) -> Reply:
        if req.path.endswith("/sobjects/Task") and failing["left"]:
            failing["left"] -= 1
            return sf_error(503, "SERVER_UNAVAILABLE", "try later")
        return salesforce(req)

    server.handler = flaky
    adapter, event = make(server.url, client), make_event("purl_completed")
    assert adapter.deliver(event, ctx).status == "retry"
    assert adapter.deliver(event, ctx).ok
    assert len(salesforce.tasks) == 1


def test_external_id_upsert(server, salesforce, client, ctx, make_event) -> None:
    adapter = make(server.url, client, external_id_field="Mail_Contact_Id__c",
                   external_id_metadata_key="mail_contact_id")
    outcome = adapter.deliver(make_event("returned_to_sender", metadata={"mail_contact_id": "MC-1"}), ctx)
    assert outcome.ok, outcome.detail
    assert requests_summary(server) == [("PATCH", "/sobjects/Contact/Mail_Contact_Id__c/MC-1"),
                                        ("POST", "/sobjects/Task")]
    assert salesforce.tasks[0]["WhoId"] == ADA
    assert salesforce.records["Contact"][ADA]["Mail_Stage__c"] == "returned_to_sender"


@pytest.mark.parametrize("api_version", ["v45.0", "v60.0"])
def test_upsert_answered_204_without_a_body_is_a_success(server, salesforce, client, ctx, make_event,
                                                         api_version: str) -> None:
    """Before API 46.0 an updating upsert answers 204 No Content: the fields were written, nothing failed."""
    salesforce.bodiless_upserts = True
    api = f"/services/data/{api_version}"
    server.handler = lambda req: salesforce(
        Recorded(req.method, req.path.replace(api, API), req.query, req.headers, req.body))
    adapter = make(server.url, client, api_version=api_version, external_id_field="Mail_Contact_Id__c",
                   external_id_metadata_key="mail_contact_id")
    outcome = adapter.deliver(make_event("delivered", metadata={"mail_contact_id": "MC-1"}), ctx)
    assert outcome.ok, outcome.detail
    assert salesforce.records["Contact"][ADA]["Mail_Stage__c"] == "delivered"
    assert [(r.method, r.path.removeprefix(api)) for r in server.requests] == [
        ("PATCH", "/sobjects/Contact/Mail_Contact_Id__c/MC-1")]


def test_bodiless_upsert_then_task_reads_the_record_id(server, salesforce, client, ctx, make_event) -> None:
    salesforce.bodiless_upserts = True
    adapter = make(server.url, client, external_id_field="Mail_Contact_Id__c",
                   external_id_metadata_key="mail_contact_id")
    outcome = adapter.deliver(make_event("returned_to_sender", metadata={"mail_contact_id": "MC-1"}), ctx)
    assert outcome.ok, outcome.detail
    assert requests_summary(server) == [("PATCH", "/sobjects/Contact/Mail_Contact_Id__c/MC-1"),
                                        ("GET", "/sobjects/Contact/Mail_Contact_Id__c/MC-1"),
                                        ("POST", "/sobjects/Task")]
    assert server.requests[1].query == {"fields": ["Id"]}
    assert salesforce.tasks[0]["WhoId"] == ADA and outcome.remote_id == ctx.recall("task")


def test_bodiless_upsert_whose_record_cannot_be_read_is_not_a_blind_task(server, salesforce, client, ctx,
                                                                        make_event) -> None:
    salesforce.bodiless_upserts = True
    base = salesforce

    def read_fails(req: Recorded) -> Reply:
        return Reply(503, b"maintenance") if req.method == "GET" else base(req)

    server.handler = read_fails
    adapter = make(server.url, client, external_id_field="Mail_Contact_Id__c",
                   external_id_metadata_key="mail_contact_id")
    outcome = adapter.deliver(make_event("returned_to_sender", metadata={"mail_contact_id": "MC-1"}), ctx)
    assert outcome.status == "retry" and salesforce.tasks == []


def test_external_id_missing_falls_back_to_email(server, salesforce, client, ctx, make_event) -> None:
    adapter = make(server.url, client, external_id_field="Mail_Contact_Id__c",
                   external_id_metadata_key="mail_contact_id")
    assert adapter.deliver(make_event(), ctx).ok
    assert requests_summary(server)[0] == ("GET", "/query")


def test_several_external_id_matches_300_is_permanent(server, salesforce, client, ctx, make_event) -> None:
    adapter = make(server.url, client, external_id_field="Mail_Contact_Id__c",
                   external_id_metadata_key="mail_contact_id")
    outcome = adapter.deliver(make_event(metadata={"mail_contact_id": "MC-DUP"}), ctx)
    assert (outcome.status, outcome.http_status) == ("permanent", 300)
    assert "several Contact records" in outcome.detail
    assert len(server.requests) == 1


def test_email_with_quote_is_escaped(server, salesforce, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event(email="o'brien@example.com"), ctx)
    assert outcome.ok, outcome.detail
    assert server.requests[0].query["q"] == [
        "SELECT Id FROM Contact WHERE Email = 'o\\'brien@example.com' LIMIT 2"]


def test_injection_attempt_stays_a_literal(server, salesforce, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event(email="x' OR Email != '"), ctx)
    assert outcome.status == "permanent"
    assert outcome.detail.startswith("no Salesforce Contact with email")


def test_soql_string_escapes() -> None:
    assert soql_string("a\\b'c\"d\ne") == "'a\\\\b\\'c\\\"d\\ne'"


def test_lead_object_skips_converted_leads(server, salesforce, client, ctx, make_event) -> None:
    outcome = make(server.url, client, object="Lead").deliver(make_event(email="lead@example.com"), ctx)
    assert outcome.ok, outcome.detail
    assert outcome.remote_id == "00Q5g00000NewAAA"
    assert server.requests[0].query["q"] == [
        "SELECT Id FROM Lead WHERE Email = 'lead@example.com' AND IsConverted = false LIMIT 2"]
    assert server.requests[1].path == f"{API}/sobjects/Lead/00Q5g00000NewAAA"


def test_late_event_never_moves_stage_backwards(server, salesforce, client, ctx, make_event) -> None:
    assert make(server.url, client).deliver(make_event("in_transit", stage="delivered"), ctx).ok
    patched = server.requests[1].json()
    assert patched["Mail_Stage__c"] == "delivered"
    assert "Mail_Last_Event__c" not in patched
    assert "Mail_Event_At__c" not in patched


def test_no_contact_is_permanent(server, salesforce, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event(email="nobody@example.com"), ctx)
    assert outcome.status == "permanent"
    assert outcome.detail == "no Salesforce Contact with email nobody@example.com"


def test_several_contacts_by_email_is_permanent(server, salesforce, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event(email="twice@example.com"), ctx)
    assert outcome.status == "permanent"
    assert "several Salesforce Contact records" in outcome.detail
    assert len(server.requests) == 1


def test_no_email_is_permanent(server, salesforce, client, ctx, make_event) -> None:
    outcome = make(server.url, client).deliver(make_event(email=None), ctx)
    assert outcome.status == "permanent"
    assert server.requests == []


def test_unknown_field_is_permanent(server, salesforce, client, ctx, make_event) -> None:
    outcome = make(server.url, client, fields={"stage": "Postal_Stage__c"}).deliver(make_event(), ctx)
    assert (outcome.status, outcome.http_status) == ("permanent", 400)
    assert "INVALID_FIELD" in outcome.detail


def test_request_limit_exceeded_403_retries(server, client, ctx, make_event) -> None:
    server.handler = lambda req: sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert (outcome.status, outcome.http_status) == ("retry", 403)
    assert "REQUEST_LIMIT_EXCEEDED" in outcome.detail


def test_other_403_is_permanent(server, client, ctx, make_event) -> None:
    server.handler = lambda req: sf_error(403, "INSUFFICIENT_ACCESS", "no access to Contact")
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert (outcome.status, outcome.http_status) == ("permanent", 403)


def test_row_lock_retries(server, salesforce, client, ctx, make_event) -> None:
    def locked(req: Recorded) -> Reply:
        if req.method == "PATCH":
            return sf_error(400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")
        return salesforce(req)

    server.handler = locked
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert (outcome.status, outcome.http_status) == ("retry", 400)


def test_invalid_session_is_permanent_with_reason(server, salesforce, client, ctx, make_event) -> None:
    adapter = SalesforceAdapter("sf", SalesforceAdapter.Settings(access_token="00Dexpired!token",
                                                                 instance_url=server.url), client)
    outcome = adapter.deliver(make_event(), ctx)
    assert (outcome.status, outcome.http_status) == ("permanent", 401)
    assert "refresh access_token" in outcome.detail
    assert "INVALID_SESSION_ID" in outcome.detail


def test_token_never_in_detail(server, client, ctx, make_event) -> None:
    server.handler = lambda req: sf_error(400, "BAD", f"got {req.headers['authorization']}")
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert outcome.status == "permanent"
    assert TOKEN not in outcome.detail
    assert "Bearer ***" in outcome.detail


def test_429_with_retry_after(server, client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(429, [], headers={"Retry-After": "4"})
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert (outcome.status, outcome.retry_after) == ("retry", 4)


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_retries(server, client, ctx, make_event, status: int) -> None:
    server.handler = lambda req: sf_error(status, "SERVER_UNAVAILABLE", "down")
    outcome = make(server.url, client).deliver(make_event(), ctx)
    assert (outcome.status, outcome.http_status) == ("retry", status)


def test_network_error_retries(closed_url, client, ctx, make_event) -> None:
    outcome = make(closed_url, client).deliver(make_event(), ctx)
    assert outcome.status == "retry"


def test_timeout_retries(server, short_client, ctx, make_event) -> None:
    server.handler = lambda req: Reply(200, {}, delay=0.6)
    outcome = make(server.url, short_client).deliver(make_event(), ctx)
    assert outcome.status == "retry"
    assert "timeout" in outcome.detail


@pytest.mark.parametrize("settings", [
    {"object": "Account"},
    {"access_token": "00D!abc def"},
    {"api_version": "60.0"},
    {"external_id_field": "Mail_Contact_Id__c"},
    {"external_id_field": "Bad/Field", "external_id_metadata_key": "k"},
    {"task_events": ["opened"]},
    {"fields": {"stage": "Stage__c", "color": "Color__c"}},
    {"instance_url": "example.my.salesforce.com"},
    {"type": "salesforce"},
])
def test_invalid_settings(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SalesforceAdapter.Settings(**{"access_token": TOKEN, "instance_url": "https://x.my.salesforce.com",
                                      **settings})


def test_settings_defaults() -> None:
    settings = SalesforceAdapter.Settings(access_token=TOKEN, instance_url="https://x.my.salesforce.com/")
    assert settings.instance_url == "https://x.my.salesforce.com"
    assert (settings.api_version, settings.object) == ("v60.0", "Contact")
    assert settings.fields == DEFAULT_FIELDS
    assert settings.task_events == ["returned_to_sender", "purl_completed"]
