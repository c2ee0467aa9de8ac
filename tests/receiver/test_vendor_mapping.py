"""The inbound audit table as tests: every event type and status each provider documents, posted over HTTP,
becomes the canonical event the table says (or is ignored where the table says so), with its fields.

Sources: Lob's `event_type` enums (`vendor/lob/*_types.yml`, lob/lob-openapi) and tracking-event names
(`shared/resources/tracking_events/models/tracking_event_normal.yml` / `_certified.yml`); PostGrid's event
types (`vendor/postgrid_event_types.txt`, the postgrid-python SDK's `Event.type`) and the order `status` /
`imbStatus` enums of its API reference (checked against the seed when present); Postalytics' status-code names
and its Canadian set (checked against the seed's text when present).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.receiver.harness import Service, assert_accepted, assert_canonical_shape
from tests.receiver.test_lob_vendor import LOB_IDS
from tests.support import payloads as P

VENDOR = Path(__file__).parent / "vendor"
SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seeds"

# --- Lob ------------------------------------------------------------------------------------------------------

LOB_ACTIONS: dict[str, str | None] = {
    "created": "created", "rejected": "failed", "failed": "failed", "deleted": "cancelled",
    "rendered_pdf": None, "rendered_thumbnails": None,
    "mailed": "mailed", "in_transit": "in_transit", "international_exit": "in_transit",
    "in_local_area": "in_local_area", "processed_for_delivery": "processed_for_delivery",
    "pickup_available": "processed_for_delivery",  # certified: at the recipient's post office
    "delivered": "delivered", "re-routed": "re_routed", "re_routed": "re_routed",
    "issue": "re_routed",  # certified: a delivery issue (details.event says which); the letter keeps moving
    "returned_to_sender": "returned_to_sender", "viewed": "purl_opened",
    "email_sent": "informed_delivery_sent", "email_opened": "informed_delivery_opened",
    "email_clicked_through": "informed_delivery_clicked",
}
# the tracking-event `name` Lob puts in body.tracking_events[] for each scan-based action (Lob's enums)
LOB_SCANS = {"mailed": "Mailed", "in_transit": "In Transit", "in_local_area": "In Local Area",
             "processed_for_delivery": "Processed for Delivery", "delivered": "Delivered", "re-routed": "Re-Routed",
             "re_routed": "Re-Routed", "returned_to_sender": "Returned to Sender",
             "international_exit": "International Exit", "pickup_available": "Pickup Available", "issue": "Issue"}
LOB_PIECES = ("letter", "postcard", "self_mailer", "check")


def lob_expected(type_id: str) -> str | None:
    resource, action = type_id.split(".")[0], type_id.split(".")[-1]
    return LOB_ACTIONS[action] if resource in LOB_PIECES else None


def test_the_lob_table_covers_every_documented_action() -> None:
    actions = {t.split(".")[-1] for t in LOB_IDS if t.split(".")[0] in LOB_PIECES}
    assert actions <= set(LOB_ACTIONS), actions - set(LOB_ACTIONS)
    assert {t.split(".")[0] for t in LOB_IDS} == {*LOB_PIECES, "address", "bank_account"}


@pytest.mark.parametrize("type_id", LOB_IDS)
def test_every_lob_event_type_becomes_the_tabled_canonical_event(service: Service, type_id: str) -> None:
    parts = type_id.split(".")
    resource, action = parts[0], parts[-1]
    expected = lob_expected(type_id)
    if resource not in LOB_PIECES:
        assert_accepted(service.post_lob(P.lob_event(type_id, {"id": "adr_0d8f2e0c1b", "object": resource})),
                        accepted=0, ignored=1)
        return
    certified = parts[1] == "certified"
    scan = None
    if action in LOB_SCANS:
        scan = {"id": "evnt_9e84094c9368cfb", "name": LOB_SCANS[action], "time": "2024-05-05T10:11:12.000Z",
                "location": "33408", "type": "certified" if certified else "normal", "object": "tracking_event",
                "date_created": "2024-05-05T10:20:00.000Z", "date_modified": "2024-05-05T10:20:00.000Z",
                "details": {"event": "package_lost", "description": "Package has been lost.",
                            "action_required": True} if certified else None}
    body = P.lob_mailpiece(resource, tracking_events=[scan] if scan else [],
                           extra_service="certified" if certified else None)
    resp = service.post_lob(P.lob_event(type_id, body))
    if expected is None:
        assert_accepted(resp, accepted=0, ignored=1)
        assert service.stream_len() == 0
        return
    assert_accepted(resp)
    [queued] = service.queued()
    assert_canonical_shape(queued)
    assert queued["type"] == expected
    assert queued["source_event_id"] == P.lob_event(type_id, body)["id"]
    if parts[1] == "return_envelope":  # its own lifecycle: never the outbound letter
        assert (queued["mailpiece"]["id"], queued["mailpiece"]["kind"]) == (f"{body['id']}:return_envelope",
                                                                            "return_envelope")
    else:
        assert (queued["mailpiece"]["id"], queued["mailpiece"]["kind"]) == (body["id"], resource)
    assert queued["mailpiece"]["mailing_class"] == ("certified" if certified else "usps_first_class")
    assert queued["mailpiece"]["campaign_id"] == "cmp_e05ee6d3c8a3a0f4"
    assert queued["mailpiece"]["country"] == "US" and queued["recipient"]["postal_code"] == "94107"
    assert queued["metadata"]["crm_contact_id"] == "0031x00000AbCdE"
    if scan:  # the scan's time (when USPS registered it) and ZIP, not the event's date_created
        assert queued["occurred_at"] == "2024-05-05T10:11:12Z"
        assert queued["location"]["zip"] == "33408"
        if certified:
            assert queued["metadata"]["postrelay"]["details"]["event"] == "package_lost"
    else:
        assert queued["occurred_at"] == "2024-05-06T14:05:00Z"
        assert queued["location"]["zip"] is None


# --- PostGrid -------------------------------------------------------------------------------------------------

PG_TYPES = [line.strip() for line in (VENDOR / "postgrid_event_types.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
PG_ORDER_KINDS = ("letter", "postcard", "self_mailer", "cheque", "box", "snap_pack")
PG_STATUS = {"ready": "created", "printing": "printed", "processed_for_delivery": "mailed",
             "completed": "delivered", "cancelled": "cancelled"}
PG_IMB = {"entered_mail_stream": "in_transit", "out_for_delivery": "processed_for_delivery",
          "returned_to_sender": "returned_to_sender"}
PG = json.loads((VENDOR / "postgrid_examples.json").read_text())


def pg_event(event_type: str, data: dict[str, Any], event_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": event_type, "live": False,
            "createdAt": "2024-05-06T14:00:00.000Z", "data": copy.deepcopy(data), **extra}


def pg_order(kind: str, **fields: Any) -> dict[str, Any]:
    order = copy.deepcopy(PG["letter"])
    order.update(id=f"{kind}_123456", object=kind, metadata={"crm_contact_id": "901"}, **fields)
    return order


@pytest.mark.skipif(not (SEEDS / "postgrid-print-mail-api.txt").is_file(), reason="the shared seeds are absent")
def test_the_postgrid_table_has_every_status_of_the_reference() -> None:
    text = (SEEDS / "postgrid-print-mail-api.txt").read_text()
    start = text.index('`status: "ready" or "printing" or "processed_for_delivery" or 2 more`')
    statuses = re.findall(r'- `"([a-z_]+)"`', text[start:text.index("`to: Contact`", start)])
    start = text.index('`imbStatus: optional "entered_mail_stream"')
    imb = re.findall(r'- `"([a-z_]+)"`', text[start:text.index("`imbZIPCode:", start)])
    assert statuses == list(PG_STATUS) and imb == list(PG_IMB)


@pytest.mark.parametrize("event_type", PG_TYPES)
def test_every_postgrid_event_type_is_tabled(service: Service, event_type: str) -> None:
    kind, _, action = event_type.rpartition(".")
    if event_type == "tracker.visited":
        assert_accepted(service.post_postgrid(pg_event(event_type, PG["tracker_visit"], "event_tv")))
        [queued] = service.queued()
        assert (queued["type"], queued["mailpiece"]["id"]) == ("purl_opened", PG["tracker_visit"]["orderID"])
        assert queued["occurred_at"] == "2024-05-07T18:22:05.117000Z"  # the visit's createdAt, not the event's
        return
    data = pg_order(kind) if kind in PG_ORDER_KINDS else {"id": f"{kind}_1", "object": kind}
    resp = service.post_postgrid(pg_event(event_type, data, f"event_{kind}_{action}",
                                          updatedFields={"status": "ready"}))
    if kind not in PG_ORDER_KINDS:  # return_envelope_order, campaign, virtual_mailbox_item: no tracking
        assert_accepted(resp, accepted=0, ignored=1)
        return
    assert_accepted(resp)
    [queued] = service.queued()
    assert (queued["type"], queued["mailpiece"]["id"], queued["mailpiece"]["kind"]) == (
        "created", f"{kind}_123456", kind)
    assert queued["metadata"]["crm_contact_id"] == "901"


@pytest.mark.parametrize("status", list(PG_STATUS))
@pytest.mark.parametrize("kind", PG_ORDER_KINDS)
def test_every_postgrid_status_becomes_the_tabled_event(service: Service, kind: str, status: str) -> None:
    extra: dict[str, Any] = {"cancellation": {"reason": "invalid_content", "note": "bad PDF"}} \
        if status == "cancelled" else {}
    data = pg_order(kind, status=status, **extra)
    assert_accepted(service.post_postgrid(pg_event(f"{kind}.updated", data, f"event_{kind}_{status}",
                                                   updatedFields={"status": status})))
    [queued] = service.queued()
    assert queued["type"] == PG_STATUS[status]
    assert queued["estimated"] is (status == "completed")  # PostGrid's completed: "most likely delivered"
    assert queued["occurred_at"] == "2024-05-06T14:00:00Z"
    if status == "cancelled":
        assert queued["metadata"]["postrelay"]["cancellation_reason"] == "invalid_content"


@pytest.mark.parametrize("imb", list(PG_IMB))
def test_every_postgrid_imb_status_becomes_the_tabled_event_at_its_date_and_zip(service: Service, imb: str) -> None:
    data = pg_order("letter", status="processed_for_delivery", imbStatus=imb, imbDate="2024-05-05T09:30:00.000Z",
                    imbZIPCode="10013")
    assert_accepted(service.post_postgrid(pg_event("letter.updated", data, f"event_imb_{imb}",
                                                   updatedFields={"imbStatus": imb})))
    [queued] = service.queued()
    assert queued["type"] == PG_IMB[imb]
    assert queued["occurred_at"] == "2024-05-05T09:30:00Z" and queued["location"]["zip"] == "10013"


# --- Postalytics ----------------------------------------------------------------------------------------------

PA_NAMES = {"MailPieceCreated": "created", "Addressed": "addressed", "Printed": "printed", "Mailed": "mailed",
            "InTransit": "in_transit", "InLocalArea": "in_local_area", "ProcessedForDelivery": "processed_for_delivery",
            "ReRouted": "re_routed", "ReturnedToSender": "returned_to_sender", "pURLOpened": "purl_opened",
            "pURLCompleted": "purl_completed"}
PA_CANADA = ["MailPieceCreated", "Addressed", "Printed", "Mailed", "pURLOpened", "pURLCompleted"]


@pytest.mark.skipif(not (SEEDS / "postalytics-status-codes.txt").is_file(), reason="the shared seeds are absent")
def test_the_postalytics_table_has_every_status_code_of_postalytics_page() -> None:
    text = (SEEDS / "postalytics-status-codes.txt").read_text()
    us, canada = text.split("Status Codes for Canadian Mailings")
    assert re.findall(r"^(\w+)\s+\u2013\s", us, re.M) == list(PA_NAMES)
    assert re.findall(r"^(\w+)\s+\u2013\s", canada, re.M) == PA_CANADA


@pytest.mark.parametrize("name", list(PA_NAMES))
def test_every_postalytics_status_code_becomes_the_tabled_event(service: Service, name: str) -> None:
    assert_accepted(service.post_postalytics(P.postalytics_event(name, meta_fields={"crm_id": "C-1"})))
    [queued] = service.queued()
    assert queued["type"] == PA_NAMES[name]
    assert queued["occurred_at"] == "2024-05-06T13:45:00Z"
    assert queued["metadata"]["crm_id"] == "C-1"


@pytest.mark.parametrize("name", PA_CANADA)
def test_the_canadian_set_maps_the_same_on_a_canadian_piece(service: Service, name: str) -> None:
    body = P.postalytics_event(name, recipient=dict(P.CANADIAN_RECIPIENT), mail_id="ca-piece-1")
    assert_accepted(service.post_postalytics(body))
    [queued] = service.queued()
    assert queued["type"] == PA_NAMES[name] and queued["mailpiece"]["country"] == "CA"
