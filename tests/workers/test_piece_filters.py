"""Route and follow-up `where` filters test the piece, not only the event (issue 11 §3, §1 Canadian estimates).

Real receiver over HTTP → ingest stream in the test Redis → the worker's dispatcher → a loopback webhook.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from postrelay import cli
from postrelay.core.config import ConfigError, parse_config
from postrelay.core.events import FILTER_FIELDS, EventType
from postrelay.core.stores import followups as fu_store
from postrelay.core.timeline import load_piece
from postrelay.workers.followups import FollowupHandler
from postrelay.workers.routing import destinations_for
from tests.receiver.harness import make_service  # noqa: F401  (fixture)
from tests.support import payloads as P
from tests.support.http_server import LocalHTTPServer
from tests.workers.conftest import dispatch, drain


def sdk_visit(order_id: str, event_id: str) -> dict:
    """`tracker.visited` shaped like the postgrid-python SDK's tracker visit: only the order's id, no address."""
    data = {"id": f"tracker_visit_{event_id}", "object": "tracker_visit", "orderID": order_id,
            "tracker": "tracker_fHiKH2fBPA1Ttr5pFrRqss", "device": "iPhone", "ipAddress": "203.0.113.7",
            "live": False, "createdAt": "2024-05-09T18:30:00.000Z", "updatedAt": "2024-05-09T18:30:00.000Z"}
    return P.postgrid_event("tracker.visited", data, event_id=event_id)


def test_country_route_matches_a_qr_visit_through_its_piece(make_service, make_runtime) -> None:  # noqa: F811
    svc = make_service()
    with LocalHTTPServer() as hook:
        rt = make_runtime({"destinations": {"us": {"type": "webhook", "url": hook.url + "/us"}},
                           "routes": [{"events": ["purl_opened"], "where": {"country": "US"}, "to": ["us"]}]})
        ca = P.postgrid_contact(country="CA", postal="M5V 3L9")
        for order in (P.postgrid_order("letter", "letter_us_1"), P.postgrid_order("letter", "letter_ca_1", to=ca)):
            svc.post_postgrid(P.postgrid_event("letter.created", order, event_id=f"event_created_{order['id']}"))
        for order_id in ("letter_us_1", "letter_ca_1", "letter_unknown"):
            assert svc.post_postgrid(sdk_visit(order_id, f"event_visit_{order_id}")).status_code == 200
        dispatch(rt)
        drain(rt)
        delivered = [r.json() for r in hook.requests]
        assert [(e["type"], e["mailpiece"]["id"]) for e in delivered] == [("purl_opened", "letter_us_1")]
        assert delivered[0]["mailpiece"]["country"] is None  # the event itself is relayed as received
        piece = load_piece(rt.redis, "postgrid", "letter_us_1")  # the piece keeps the address the visit lacks
        assert piece["country"] == "US" and piece["events"][0]["recipient"]["email"] == "ada@example.com"


def test_lob_cancellation_matches_recipient_and_campaign_filters(make_service, make_runtime) -> None:  # noqa: F811
    svc = make_service()
    with LocalHTTPServer() as hook:
        rt = make_runtime({
            "destinations": {"crm": {"type": "webhook", "url": hook.url}},
            "routes": [{"events": ["cancelled"], "to": ["crm"],
                        "where": {"recipient.email": "ADA@example.com", "mailpiece.campaign_id": "cmp_e05ee6d3c8a3a0f4",
                                  "mailpiece.kind": "letter", "recipient.address_line2": "apt 2",
                                  "mailpiece.mailing_class": "usps_first_class", "country": ["US", "CA"]}}]})
        letter = P.lob_mailpiece("letter", piece_id="ltr_cancel_1")
        svc.post_lob(P.lob_event("letter.created", letter, event_id="evt_created_1"))
        dispatch(rt)  # the piece is known before its cancellation arrives (a separate batch)
        deletion = {"id": "ltr_cancel_1", "deleted": True}  # Lob's delete response: no address, no campaign
        svc.post_lob(P.lob_event("letter.deleted", deletion, event_id="evt_deleted_1"))
        other = {"id": "ltr_cancel_never_seen", "deleted": True}
        svc.post_lob(P.lob_event("letter.deleted", other, event_id="evt_deleted_2"))
        dispatch(rt)
        drain(rt)
        assert [r.json()["source_event_id"] for r in hook.requests] == ["evt_deleted_1"]


def test_followup_where_reads_the_piece(make_service, make_runtime) -> None:  # noqa: F811
    svc = make_service()
    rt = make_runtime({
        "destinations": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/never"}},
        "followups": [{"name": "thanks-us", "after": "purl_opened", "delay": "1 day", "where": {"country": "US"},
                       "do": "hook"}]})
    ca = P.postgrid_contact(country="CA", postal="M5V 3L9")
    for order in (P.postgrid_order("letter", "letter_us_2"), P.postgrid_order("letter", "letter_ca_2", to=ca)):
        svc.post_postgrid(P.postgrid_event("letter.created", order, event_id=f"event_created_{order['id']}"))
    for order_id in ("letter_us_2", "letter_ca_2"):
        svc.post_postgrid(sdk_visit(order_id, f"event_visit_{order_id}"))
    dispatch(rt, handlers=[FollowupHandler(rt)])
    assert [p["id"] for p in fu_store.pending(rt.redis)] == ["thanks-us|postgrid|letter_us_2"]


def postalytics_canadian(event_type: int, event_date: str, *, with_to: bool) -> dict:
    body = {"mailId": "pa-ca-0001", "eventDate": event_date, "eventType": event_type, "status": str(event_type),
            "campaignId": "118842"}
    if with_to:
        body["to"] = {"firstName": "Pierre", "lastName": "Tremblay", "address1": "290 Bremner Blvd",
                      "city": "Toronto", "state": "ON", "zip": "M5V 3L9", "country": "CA"}
    return body


@pytest.mark.parametrize("to_on_mailed", [True, False])
def test_canadian_postalytics_mail_gets_its_estimated_followup(make_service, make_runtime,  # noqa: F811
                                                               to_on_mailed: bool) -> None:
    """`to` gives the country; when `mailed` itself has no `to`, the piece (from `created`) does."""
    svc = make_service()
    rt = make_runtime({
        "destinations": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/never"}},
        "followups": [{"name": "arrival", "after": "processed_for_delivery", "delay": "1 business day",
                       "do": "hook"}]})
    svc.post_postalytics(postalytics_canadian(0, "2026-06-22T09:00:00", with_to=True))
    dispatch(rt, handlers=[FollowupHandler(rt)])
    svc.post_postalytics(postalytics_canadian(11, "2026-06-26T09:00:00", with_to=to_on_mailed))
    dispatch(rt, handlers=[FollowupHandler(rt)])
    [pending] = fu_store.pending(rt.redis)
    assert pending["id"] == "arrival|postalytics|pa-ca-0001"
    assert pending["estimated"] is True  # Canada Post sends no scans: timed from `mailed` + CA transit


# --- which fields a filter may name -------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["routes", "followups"])
@pytest.mark.parametrize("key", ["contry", "campaign", "mailpiece.campain_id", "recipient", "metadata.",
                                 "metadata..x", "location.city"])
def test_unknown_filter_field_is_refused_at_config_load(section: str, key: str) -> None:
    rule = ({"events": ["*"], "to": ["crm"]} if section == "routes"
            else {"name": "n", "after": "delivered", "do": "crm"})
    data = {"destinations": {"crm": {"type": "webhook", "url": "https://hooks.example.com/x"}},
            section: [{**rule, "where": {key: "x"}}]}
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    message = str(err.value)
    assert "\n" not in message
    assert re.match(rf"{section}\[0\]\.where: unknown filter field {re.escape(repr(key))}", message), message


def test_check_config_prints_one_line_naming_the_key(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "postrelay.toml"
    cfg.write_text('[destinations.crm]\ntype = "webhook"\nurl = "https://hooks.example.com/x"\n'
                   '[[routes]]\nto = ["crm"]\nwhere = { contry = "US" }\n', encoding="utf-8")
    assert cli.main(["check-config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"config error: {cfg}: routes[0].where: unknown filter field 'contry'")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("key", [*(f for f in FILTER_FIELDS if f != "metadata.<key>"), "metadata.campaign",
                                 "metadata.postrelay.details.event"])
def test_every_documented_filter_field_is_accepted(key: str) -> None:
    parse_config({"destinations": {"crm": {"type": "webhook", "url": "https://hooks.example.com/x"}},
                  "routes": [{"to": ["crm"], "where": {key: "x"}}]})


def test_docs_list_exactly_the_filter_fields() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "filters.md").read_text()
    for key in FILTER_FIELDS:
        assert f"`{key}`" in docs, key


def test_lob_certified_issue_detail_is_filterable(make_service, make_runtime) -> None:  # noqa: F811
    svc = make_service()
    with LocalHTTPServer() as hook:
        rt = make_runtime({"destinations": {"ops": {"type": "webhook", "url": hook.url}},
                           "routes": [{"events": ["re_routed"], "to": ["ops"],
                                       "where": {"metadata.postrelay.details.event": ["package_lost",
                                                                                      "package_undeliverable"]}}]})
        for n, detail in enumerate(["package_lost", "notice_left"]):
            scan = P.lob_tracking_event("Issue", "2024-05-04T09:31:00.000Z", certified=True)
            scan["details"] = {"event": detail, "description": "-", "action_required": True}
            body = P.lob_mailpiece("letter", piece_id=f"ltr_cert_{n}", tracking_events=[scan], extra_service="certified")
            svc.post_lob(P.lob_event("letter.certified.issue", body, event_id=f"evt_issue_{n}"))
        dispatch(rt)
        drain(rt)
        assert [r.json()["mailpiece"]["id"] for r in hook.requests] == ["ltr_cert_0"]


def test_new_engagement_types_are_accepted_by_every_consumer(make_runtime) -> None:
    from postrelay.adapters._crm import LABELS

    assert set(LABELS) == set(EventType)  # every CRM adapter labels every type
    rt = make_runtime({"destinations": {"crm": {"type": "webhook", "url": "https://hooks.example.com/x"}},
                       "routes": [{"events": ["informed_delivery_opened"], "to": ["crm"]}],
                       "followups": [{"name": "id-click", "after": "informed_delivery_clicked", "do": "crm"}]})
    assert rt.config.routes[0].events == ["informed_delivery_opened"]
    from tests.workers.conftest import event

    assert destinations_for(event("informed_delivery_opened"), rt.config.routes) == ["crm"]


def test_piece_attributes_last_value_wins_and_survive_reprocessing(make_runtime) -> None:
    from datetime import datetime

    from postrelay.core.events import CanonicalEvent, Mailpiece, Recipient
    from postrelay.core.timeline import TimelineWriter

    rt = make_runtime({})
    writer = TimelineWriter(rt.redis, 3600)

    def ev(sid: str, etype: str, **recipient: str) -> CanonicalEvent:
        return CanonicalEvent.build(source="postgrid", source_event_id=sid, type=etype,
                                    occurred_at=datetime.fromisoformat("2026-11-20T10:00:00+00:00"),
                                    mailpiece=Mailpiece(id="letter_lw"), recipient=Recipient(**recipient))

    writer.apply_many([ev("e1", "created", email="old@example.com", country="CA", address_line2="Apt 1")])
    writer.apply_many([ev("e2", "printed", email="new@example.com")])
    visit = ev("e3", "purl_opened")
    [applied] = writer.apply_many([visit])
    assert applied.field("recipient.email") == "new@example.com"  # the last value an event sent
    assert applied.field("recipient.address_line2") == "Apt 1"
    assert applied.field("country") == "CA" and applied.field("mailpiece.country") == "CA"
    assert applied.recipient.email is None  # the event itself is not changed
    [again] = writer.apply_many([visit])  # the same entry again (a crash before XACK): already applied
    assert again.field("country") == "CA"
    assert len(load_piece(rt.redis, "postgrid", "letter_lw")["events"]) == 3
    assert TimelineWriter(rt.redis, 3600).apply_many([ev("e4", "mailed", email="x@example.com")])[0].piece_attrs == {
        "mailpiece.country": "CA", "recipient.address_line2": "Apt 1", "recipient.country": "CA"}
