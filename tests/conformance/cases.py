"""Every adapter request postrelay makes, as cases: settings, event, context and a vendor-like responder.

Each case runs one adapter against a loopback server that answers like the vendor (success), so every
request the adapter makes for that operation is captured over real HTTP. Cases cover each action and CRM
operation with and without its optional fields (settings, recipient parts, follow-up facts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from postrelay.adapters.base import Adapter, BatchItem, DeliveryContext, Outcome
from postrelay.adapters.customerio import CustomerIOAdapter
from postrelay.adapters.hubspot import HubSpotAdapter
from postrelay.adapters.klaviyo import KlaviyoAdapter
from postrelay.adapters.pipedrive import PipedriveAdapter
from postrelay.adapters.postgrid import PostGridAdapter
from postrelay.adapters.salesforce import SalesforceAdapter
from postrelay.adapters.sendgrid import SendGridAdapter
from postrelay.adapters.twilio import TwilioAdapter
from postrelay.core.events import CanonicalEvent
from tests.actions import make_ctx
from tests.actions import make_event as action_event
from tests.adapters.conftest import build_event as crm_event
from tests.conformance import validator as v
from tests.support.http_server import Recorded, Reply

SID = "AC" + "0123456789abcdef" * 2
MG = "MG" + "fedcba9876543210" * 2
CONTACT = "0035g00000AdaBCAAA"
FULL = {"name": "Jane Q Public", "email": "jane@example.com", "phone": "(617) 555-0123",
        "address_line1": "1 Main St", "address_line2": "Apt 4B", "city": "Boston", "region": "MA",
        "postal_code": "02110", "country": "US"}
MINIMAL_ADDRESS = {"address_line1": "1 Main St", "country": "US"}
FROM = {"companyName": "Brand", "addressLine1": "9 Sender Rd", "city": "Toronto", "provinceOrState": "ON",
        "postalOrZip": "M5V 1A1", "countryCode": "CA"}


def hubspot(req: Recorded) -> Reply:
    if "/batch/" in req.path:  # every input succeeds; results echo objectWriteTraceId (ids are made up)
        now = "2024-05-06T14:30:15.000Z"
        results = [{"id": str(101 + n), "properties": {}, "createdAt": now, "updatedAt": now, "archived": False,
                    "objectWriteTraceId": item.get("objectWriteTraceId")}
                   for n, item in enumerate(req.json()["inputs"])]
        return Reply(201 if req.path.endswith("/create") else 200,
                     {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now})
    if "/contacts/" in req.path:
        return Reply(200, {"id": "101", "properties": {}})
    return Reply(201, {"id": "9001"})


def pipedrive(req: Recorded) -> Reply:
    if req.method == "GET":
        return Reply(200, {"success": True, "data": {"items": [{"result_score": 1, "item": {"id": 7}}]}})
    return Reply(201, {"success": True, "data": {"id": 55}})


def salesforce(req: Recorded) -> Reply:
    if "/composite/sobjects" in req.path:  # one result per record, in order
        return Reply(200, [{"id": CONTACT if req.method == "PATCH" else f"00T5g00000000{n:02d}AAA", "success": True,
                            "errors": [], **({"created": False} if req.method == "PATCH" else {})}
                           for n, _ in enumerate(req.json()["records"])])
    if req.path.endswith("/query"):
        return Reply(200, {"totalSize": 1, "done": True, "records": [{"Id": CONTACT, "Email": "ada@example.com"}]})
    if req.path.endswith("/sobjects/Task"):
        return Reply(201, {"id": "00T5g000000001AAA", "success": True, "errors": []})
    if req.method == "GET":
        return Reply(200, {"Id": CONTACT})
    if req.path.count("/") == 6:  # PATCH /services/data/vXX.X/sobjects/{Object}/{Id}
        return Reply(204, b"")
    return Reply(200, {"id": CONTACT, "success": True, "errors": [], "created": False})


def postgrid(req: Recorded) -> Reply:
    if req.method == "GET":
        return Reply(200, {"object": "list", "limit": 10, "skip": 0, "totalCount": 0, "data": []})
    return Reply(200, {"id": f"{req.path.rsplit('/', 1)[-1][:-1]}_1", "status": "ready"})


def fixed(status: int, body: Any = b"", headers: dict[str, str] | None = None) -> Callable[[Recorded], Reply]:
    return lambda req: Reply(status, body, headers or {})


@dataclass
class Case:
    """One adapter call: what it is configured with, what it delivers, and how the vendor answers."""

    id: str
    vendor: v.Vendor
    adapter: type[Adapter]
    settings: dict[str, Any]
    answer: Callable[[Recorded], Reply]
    event: Callable[[], CanonicalEvent] = field(default=lambda: action_event(recipient=FULL))
    ctx: Callable[[], DeliveryContext] = field(default=make_ctx)
    url_key: str = "base_url"
    batch: list[Callable[[], CanonicalEvent]] = field(default_factory=list)  # a batch call of these events

    def run(self, client: Any, url: str) -> Any:
        settings = {**self.settings, self.url_key: url}
        adapter = self.adapter(self.id, self.adapter.Settings(**settings), client)
        if self.batch:
            outcomes = adapter.deliver_batch([BatchItem(make(), self.ctx()) for make in self.batch])
            bad = [o for o in outcomes if not o.ok]
            return bad[0] if bad else Outcome.success()
        return adapter.deliver(self.event(), self.ctx())


def _crm(type: str = "processed_for_delivery", **kw: Any) -> Callable[[], CanonicalEvent]:
    return lambda: crm_event(type, **kw)


def _action(recipient: dict[str, Any], **kw: Any) -> Callable[[], CanonicalEvent]:
    return lambda: action_event(recipient=recipient, **kw)


HS = {"token": "pat-na1-0000"}
PD = {"token": "pd-token-0000"}
SF = {"access_token": "00D5g!AQ0token"}
SG = {"api_key": "SG.key", "template_id": "d-1234567890abcdef", "from_email": "hello@brand.example"}
TW = {"account_sid": SID, "auth_token": "tw-token", "body": "Hi {recipient.name}: {mailpiece.id} arrived"}
KL = {"api_key": "pk_live_0000"}
CIO = {"site_id": "site123", "api_key": "cio-key"}
PG_CARD = {"api_key": "test_sk_0000", "kind": "postcard", "front_template": "template_f", "back_template": "template_b"}
PG_LETTER = {"api_key": "test_sk_0000", "kind": "letter", "template": "template_l", "from_contact": FROM}

CASES: list[Case] = [
    # HubSpot: contact update (by email / by id), the activity (note / postal mail / none), an empty mapping
    Case("hubspot-note-by-email", v.HUBSPOT, HubSpotAdapter, HS, hubspot, _crm(), lambda: DeliveryContext("hs")),
    Case("hubspot-postal-mail-by-id", v.HUBSPOT, HubSpotAdapter, {**HS, "activity": "postal_mail"}, hubspot,
         _crm("delivered", metadata={"hubspot_contact_id": "101"}), lambda: DeliveryContext("hs")),
    Case("hubspot-no-activity-all-fields", v.HUBSPOT, HubSpotAdapter,
         {**HS, "activity": "none", "properties": {"last_event": "a", "stage": "b", "event_at": "c", "campaign": "d",
                                                   "mailpiece_id": "e", "tracking_number": "f"}},
         hubspot, _crm(), lambda: DeliveryContext("hs")),
    Case("hubspot-empty-mapping-reads-contact", v.HUBSPOT, HubSpotAdapter, {**HS, "properties": {}}, hubspot,
         _crm("purl_opened"), lambda: DeliveryContext("hs")),
    # HubSpot batches: contacts by id (batch/update) and by email (batch/upsert), notes / postal mail batch/create
    Case("hubspot-batch-notes-update-and-upsert", v.HUBSPOT, HubSpotAdapter, HS, hubspot,
         ctx=lambda: DeliveryContext("hs"),
         batch=[_crm(metadata={"hubspot_contact_id": "101"}), _crm("delivered", email="bo@example.com",
                                                                  piece_id="ltr_2", source_event_id="evt_2")]),
    Case("hubspot-batch-postal-mail-by-id", v.HUBSPOT, HubSpotAdapter, {**HS, "activity": "postal_mail"}, hubspot,
         ctx=lambda: DeliveryContext("hs"),
         batch=[_crm("mailed", metadata={"hubspot_contact_id": str(n)}, piece_id=f"ltr_{n}",
                     source_event_id=f"evt_{n}") for n in (201, 202)]),
    # Pipedrive: person search + activity, known person + activity, note (v1)
    Case("pipedrive-search-then-activity", v.PIPEDRIVE, PipedriveAdapter, PD, pipedrive, _crm(),
         lambda: DeliveryContext("pd")),
    Case("pipedrive-known-person-custom-type", v.PIPEDRIVE, PipedriveAdapter, {**PD, "activity_type": "mail_scan"},
         pipedrive, _crm("returned_to_sender", metadata={"pipedrive_person_id": 7}), lambda: DeliveryContext("pd")),
    Case("pipedrive-note", v.PIPEDRIVE, PipedriveAdapter, {**PD, "mode": "note"}, pipedrive, _crm(),
         lambda: DeliveryContext("pd")),
    # Salesforce: by email (query + update), external-id upsert + Task, Lead, bodiless upsert + id read
    Case("salesforce-email-update", v.SALESFORCE, SalesforceAdapter, SF, salesforce, _crm(),
         lambda: DeliveryContext("sf"), url_key="instance_url"),
    Case("salesforce-upsert-and-task", v.SALESFORCE, SalesforceAdapter,
         {**SF, "external_id_field": "Mail_Contact_Id__c", "external_id_metadata_key": "mid"}, salesforce,
         _crm("returned_to_sender", metadata={"mid": "MC-1"}), lambda: DeliveryContext("sf"), url_key="instance_url"),
    Case("salesforce-lead-task-custom-picklists", v.SALESFORCE, SalesforceAdapter,
         {**SF, "object": "Lead", "task_status": "In Progress", "task_priority": "High", "api_version": "v45.0"},
         salesforce, _crm("purl_completed"), lambda: DeliveryContext("sf"), url_key="instance_url"),
    Case("salesforce-bodiless-upsert-then-task", v.SALESFORCE, SalesforceAdapter,
         {**SF, "external_id_field": "Mail_Contact_Id__c", "external_id_metadata_key": "mid", "api_version": "v45.0"},
         lambda req: Reply(204, b"") if req.method == "PATCH" else salesforce(req),
         _crm("returned_to_sender", metadata={"mid": "MC-1"}), lambda: DeliveryContext("sf"), url_key="instance_url"),
    # Salesforce batches (sObject Collections): external-id upsert + Tasks; by email: SOQL IN + update by Id
    Case("salesforce-batch-upsert-and-tasks", v.SALESFORCE, SalesforceAdapter,
         {**SF, "external_id_field": "Mail_Contact_Id__c", "external_id_metadata_key": "mid"}, salesforce,
         ctx=lambda: DeliveryContext("sf"), url_key="instance_url",
         batch=[_crm("returned_to_sender", metadata={"mid": f"MC-{n}"}, piece_id=f"ltr_{n}", source_event_id=f"e{n}")
                for n in (1, 2)]),
    Case("salesforce-batch-by-email-update", v.SALESFORCE, SalesforceAdapter, SF, salesforce,
         ctx=lambda: DeliveryContext("sf"), url_key="instance_url", batch=[_crm(), _crm("delivered", piece_id="ltr_2")]),
    # SendGrid: recipient with name / without, a fixed address, sender name
    Case("sendgrid-recipient-with-name", v.SENDGRID, SendGridAdapter, {**SG, "from_name": "Brand"},
         fixed(202, headers={"X-Message-Id": "m1"})),
    Case("sendgrid-email-only-no-rule", v.SENDGRID, SendGridAdapter, SG, fixed(202),
         _action({"email": "jane@example.com"}), lambda: make_ctx(None)),
    Case("sendgrid-fixed-to", v.SENDGRID, SendGridAdapter, {**SG, "to": "ops@brand.example"}, fixed(202)),
    # Twilio: From, Messaging Service, both; fixed To
    Case("twilio-from-number", v.TWILIO, TwilioAdapter, {**TW, "from_number": "+16175550100"},
         fixed(201, {"sid": "SM1"})),
    Case("twilio-messaging-service-fixed-to", v.TWILIO, TwilioAdapter,
         {**TW, "messaging_service_sid": MG, "to": "+16175550199"}, fixed(201, {"sid": "SM2"}),
         _action({"name": "J"}), lambda: make_ctx(None)),
    Case("twilio-both-senders", v.TWILIO, TwilioAdapter,
         {**TW, "messaging_service_sid": MG, "from_number": "+16175550100"}, fixed(201, {"sid": "SM3"})),
    # Klaviyo: email + phone + rule, email only, phone only, metric name, explicit revision
    Case("klaviyo-email-and-phone", v.KLAVIYO, KlaviyoAdapter, KL, fixed(202)),
    Case("klaviyo-email-only-no-rule", v.KLAVIYO, KlaviyoAdapter, {**KL, "metric": "Postcard Landed"}, fixed(202),
         _action({"email": "jane@example.com"}), lambda: make_ctx(None)),
    Case("klaviyo-phone-only", v.KLAVIYO, KlaviyoAdapter, KL, fixed(202), _action({"phone": "+44 20 7946 0958"})),
    Case("klaviyo-invalid-phone-left-out", v.KLAVIYO, KlaviyoAdapter, KL, fixed(202),
         _action({"email": "jane@example.com", "phone": "(555) 123-4567"})),
    # Customer.io: by email, by metadata id, recipient override, no rule
    Case("customerio-by-email", v.CUSTOMERIO, CustomerIOAdapter, CIO, fixed(200, {})),
    Case("customerio-metadata-id-named", v.CUSTOMERIO, CustomerIOAdapter,
         {**CIO, "customer_id_key": "crm_id", "name": "mail_landed"}, fixed(200, {}),
         _action(FULL, metadata={"crm_id": "C-42"})),
    Case("customerio-recipient-override", v.CUSTOMERIO, CustomerIOAdapter, {**CIO, "recipient": "email"},
         fixed(200, {})),
    Case("customerio-minimal-no-rule", v.CUSTOMERIO, CustomerIOAdapter, CIO, fixed(200, {}),
         _action({"email": "jane@example.com"}, metadata={}), lambda: make_ctx(None)),
    # PostGrid: postcard minimal / with everything; letter with inline sender / contact id; with the search
    Case("postgrid-postcard-minimal", v.POSTGRID, PostGridAdapter, {**PG_CARD, "dedupe_search": False}, postgrid,
         _action(MINIMAL_ADDRESS, metadata={})),
    Case("postgrid-postcard-everything", v.POSTGRID, PostGridAdapter,
         {**PG_CARD, "size": "9x6", "mailing_class": "standard_class", "from_contact": "contact_123",
          "description": "second touch", "merge_variables": {"offer": "10OFF"}}, postgrid),
    Case("postgrid-letter-inline-sender-express", v.POSTGRID, PostGridAdapter,
         {**PG_LETTER, "express": True, "color": True, "double_sided": False, "size": "us_letter"}, postgrid),
    Case("postgrid-letter-contact-id-no-rule", v.POSTGRID, PostGridAdapter,
         {**PG_LETTER, "from_contact": "contact_abc", "fallback_name": "Neighbour"}, postgrid,
         _action({**MINIMAL_ADDRESS, "city": "Boston"}), lambda: make_ctx(None)),
]
