"""Timelines as a user reads them (GET /v1/mailpieces/...): late, duplicated and out-of-order events; auth."""

from __future__ import annotations

import base64

import pytest

from tests.receiver.harness import API_TOKEN, Service, assert_accepted, assert_canonical_shape, assert_error
from tests.support import payloads as P

LETTER = "ltr_timeline_0001"


def lob_scan_event(service: Service, action: str, scan_time: str, *, piece: str = LETTER, zip_code: str = "94016",
                   event_id: str | None = None) -> None:
    """Post a Lob event whose scan happened at `scan_time`, and let the worker apply it."""
    name = P.LOB_SCAN_NAMES[action]
    body = P.lob_mailpiece("letter", piece_id=piece,
                           tracking_events=[P.lob_tracking_event(name, scan_time, location=zip_code)])
    event = P.lob_event(f"letter.{action}", body, event_id=event_id or f"evt_{action}_{scan_time[:13]}")
    resp = service.post_lob(event)
    assert resp.status_code == 200, resp.text
    service.apply_queued()


def read(service: Service, source: str, piece_id: str) -> dict:
    resp = service.get_piece(source, piece_id)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_piece_view_shape(service: Service) -> None:
    lob_scan_event(service, "mailed", "2024-05-02T21:00:00.000Z")
    piece = read(service, "lob", LETTER)
    assert set(piece) == {"source", "id", "kind", "country", "stage", "stage_at", "events", "campaign", "recipient",
                          "deliveries", "followups"}
    assert piece["source"] == "lob"
    assert piece["id"] == LETTER
    assert piece["kind"] == "letter"
    assert piece["country"] == "US"
    assert piece["stage"] == "mailed"
    assert piece["stage_at"].startswith("2024-05-02T21:00:00")
    [event] = piece["events"]
    assert_canonical_shape(event)
    assert event == service.queued()[0]  # the timeline stores the canonical event as queued


def test_late_earlier_scan_does_not_move_the_stage_back(service: Service) -> None:
    lob_scan_event(service, "processed_for_delivery", "2024-05-05T06:00:00.000Z")
    lob_scan_event(service, "in_local_area", "2024-05-04T22:00:00.000Z")  # arrives late
    piece = read(service, "lob", LETTER)
    assert piece["stage"] == "processed_for_delivery"
    assert piece["stage_at"].startswith("2024-05-05T06:00:00")
    assert [e["type"] for e in piece["events"]] == ["in_local_area", "processed_for_delivery"]  # by occurred_at
    assert [e["occurred_at"] for e in piece["events"]] == ["2024-05-04T22:00:00Z", "2024-05-05T06:00:00Z"]
    # each stored event carries the stage the piece had once it was applied
    assert [e["stage"] for e in piece["events"]] == ["processed_for_delivery", "processed_for_delivery"]


def test_events_out_of_order_in_one_batch(service: Service) -> None:
    scans = [("delivered", "2024-05-06T17:00:00.000Z"), ("mailed", "2024-05-02T21:00:00.000Z"),
             ("in_transit", "2024-05-03T04:00:00.000Z"), ("processed_for_delivery", "2024-05-06T07:00:00.000Z")]
    for action, when in scans:
        body = P.lob_mailpiece("letter", piece_id=LETTER,
                               tracking_events=[P.lob_tracking_event(P.LOB_SCAN_NAMES[action], when)])
        assert_accepted(service.post_lob(P.lob_event(f"letter.{action}", body, event_id=f"evt_batch_{action}")))
    service.apply_queued()
    piece = read(service, "lob", LETTER)
    assert piece["stage"] == "delivered"
    assert [e["type"] for e in piece["events"]] == ["mailed", "in_transit", "processed_for_delivery", "delivered"]


def test_terminal_returned_to_sender_sticks_after_a_later_delivered(service: Service) -> None:
    order = "letter_rts_0001"
    rts = P.postgrid_imb_update("letter", "returned_to_sender", imb_date="2024-05-05T10:00:00.000Z",
                                order_id=order, event_id="event_rts")
    assert_accepted(service.post_postgrid(rts))
    service.apply_queued()
    completed = P.postgrid_status_update("letter", "completed", order_id=order, event_id="event_completed",
                                         created_at="2024-05-08T10:00:00.000Z")
    assert_accepted(service.post_postgrid(completed))
    service.apply_queued()
    piece = read(service, "postgrid", order)
    assert piece["stage"] == "returned_to_sender"
    assert [e["type"] for e in piece["events"]] == ["returned_to_sender", "delivered"]
    delivered = piece["events"][1]
    assert delivered["estimated"] is True
    assert delivered["stage"] == "returned_to_sender"


def test_cancelled_sticks(service: Service) -> None:
    order = "postcard_cancel_0001"
    for status, when in [("ready", "2024-05-01T10:00:00.000Z"), ("cancelled", "2024-05-01T11:00:00.000Z"),
                         ("printing", "2024-05-01T12:00:00.000Z")]:
        cancellation = {"reason": "user_initiated"} if status == "cancelled" else None
        event = P.postgrid_status_update("postcard", status, order_id=order, created_at=when,
                                         cancellation=cancellation)
        assert_accepted(service.post_postgrid(event))
    service.apply_queued()
    piece = read(service, "postgrid", order)
    assert piece["stage"] == "cancelled"
    assert [e["type"] for e in piece["events"]] == ["created", "cancelled", "printed"]
    assert piece["events"][1]["metadata"]["postrelay"]["cancellation_reason"] == "user_initiated"


def test_engagement_is_recorded_but_never_moves_the_stage(service: Service) -> None:
    lob_scan_event(service, "processed_for_delivery", "2024-05-05T06:00:00.000Z")
    for i in range(2):
        viewed = P.lob_event("letter.viewed", P.lob_mailpiece("letter", piece_id=LETTER), event_id=f"evt_view_{i}",
                             date_created=f"2024-05-0{7 + i}T12:00:00.000Z")
        assert_accepted(service.post_lob(viewed))
    service.apply_queued()
    piece = read(service, "lob", LETTER)
    assert piece["stage"] == "processed_for_delivery"
    assert [e["type"] for e in piece["events"]] == ["processed_for_delivery", "purl_opened", "purl_opened"]


def test_re_routed_is_recorded_without_moving_the_stage(service: Service) -> None:
    lob_scan_event(service, "in_transit", "2024-05-03T04:00:00.000Z")
    lob_scan_event(service, "re-routed", "2024-05-03T09:00:00.000Z")
    piece = read(service, "lob", LETTER)
    assert piece["stage"] == "in_transit"
    assert [e["type"] for e in piece["events"]] == ["in_transit", "re_routed"]


def test_applying_the_same_events_twice_changes_nothing(service: Service) -> None:
    lob_scan_event(service, "mailed", "2024-05-02T21:00:00.000Z")
    lob_scan_event(service, "in_transit", "2024-05-03T04:00:00.000Z")
    before = read(service, "lob", LETTER)
    again = service.apply_queued()  # the worker re-runs the whole stream (e.g. after a crash before XACK)
    assert [e.stage for e in again] == ["in_transit", "in_transit"]
    assert read(service, "lob", LETTER) == before
    # and the providers' redeliveries are duplicates at ingest, so nothing new reaches the timeline
    lob_scan_event(service, "mailed", "2024-05-02T21:00:00.000Z")
    assert service.stream_len() == 2
    assert read(service, "lob", LETTER) == before


def test_same_piece_id_from_two_sources_are_two_pieces(service: Service) -> None:
    generic = P.generic_event("delivered", piece_id=LETTER)
    assert_accepted(service.post_generic(generic, msg_id="msg_same_id"))
    lob_scan_event(service, "mailed", "2024-05-02T21:00:00.000Z")
    assert read(service, "lob", LETTER)["stage"] == "mailed"
    assert read(service, "generic", LETTER)["stage"] == "delivered"


def test_postalytics_codes_out_of_numeric_order(service: Service) -> None:
    """Codes are not in lifecycle order: 11 (mailed) then 4 (in transit) then 6, with 9/10 arriving late."""
    for code, when in [(11, "2024-05-02T21:00:00"), (4, "2024-05-03T04:00:00"), (6, "2024-05-05T06:00:00"),
                       (9, "2024-05-01T08:00:00"), (10, "2024-05-01T12:00:00")]:
        assert_accepted(service.post_postalytics(P.postalytics_event(code, mail_id="pa-1", event_date=when)))
    service.apply_queued()
    piece = read(service, "postalytics", "pa-1")
    assert piece["stage"] == "processed_for_delivery"
    assert [e["type"] for e in piece["events"]] == ["addressed", "printed", "mailed", "in_transit",
                                                    "processed_for_delivery"]


# --- auth and not found -----------------------------------------------------------------------------------


def test_unknown_piece_is_404(service: Service) -> None:
    assert_error(service.get_piece("lob", "ltr_never_seen"), 404, "mailpiece_not_found")
    assert_error(service.get_piece("nosuchsource", "x"), 404, "unknown_source")  # issue 18 (13): source is checked


def test_missing_token_is_401(service: Service) -> None:
    lob_scan_event(service, "mailed", "2024-05-02T21:00:00.000Z")
    assert_error(service.get_piece("lob", LETTER, token=None), 401, "missing_token")


@pytest.mark.parametrize("token", ["wrong-token-0123456789abcdef", API_TOKEN[:-1], API_TOKEN + "0", API_TOKEN.upper()])
def test_wrong_token_is_401(service: Service, token: str) -> None:
    lob_scan_event(service, "mailed", "2024-05-02T21:00:00.000Z")
    assert_error(service.get_piece("lob", LETTER, token=token), 401, "invalid_token")


@pytest.mark.parametrize("param", ["token", "api_token", "access_token", "authorization"])
def test_token_in_query_string_is_401(service: Service, param: str) -> None:
    lob_scan_event(service, "mailed", "2024-05-02T21:00:00.000Z")
    resp = service.http.get(f"/v1/mailpieces/lob/{LETTER}", params={param: API_TOKEN})
    assert_error(resp, 401, "missing_token")


@pytest.mark.parametrize("header", [f"Basic {API_TOKEN}", API_TOKEN, "Bearer", f"Token {API_TOKEN}"])
def test_other_authorization_forms_are_401(service: Service, header: str) -> None:
    lob_scan_event(service, "mailed", "2024-05-02T21:00:00.000Z")
    resp = service.http.get(f"/v1/mailpieces/lob/{LETTER}", headers={"Authorization": header})
    assert_error(resp, 401)


def test_bearer_scheme_is_case_insensitive(service: Service) -> None:
    lob_scan_event(service, "mailed", "2024-05-02T21:00:00.000Z")
    resp = service.http.get(f"/v1/mailpieces/lob/{LETTER}", headers={"Authorization": f"bearer {API_TOKEN}"})
    assert resp.status_code == 200


def test_401_does_not_reveal_whether_the_piece_exists(service: Service) -> None:
    lob_scan_event(service, "mailed", "2024-05-02T21:00:00.000Z")
    known = assert_error(service.get_piece("lob", LETTER, token="nope-nope-nope-nope"), 401)
    unknown = assert_error(service.get_piece("lob", "ltr_unknown", token="nope-nope-nope-nope"), 401)
    assert known == unknown


def test_read_api_without_configured_token_is_closed(make_service) -> None:
    svc = make_service({"server": {"api_token": None}})
    assert_error(svc.get_piece("lob", LETTER), 401, "api_disabled")


@pytest.mark.parametrize("since", ["99999999d", "9999999999999d", "99999999999999999999d"])
@pytest.mark.parametrize("path", ["/v1/dlq", "/v1/mailpieces"])
def test_since_too_far_back_is_400_naming_it(service: Service, path: str, since: str) -> None:
    """A duration reaching before the year 1 (or past time_t) is the client's error: never 500 or 503."""
    resp = service.http.get(path, params={"since": since}, headers={"Authorization": f"Bearer {API_TOKEN}"})
    body = assert_error(resp, 400, "invalid_query")
    assert body["detail"] == (f"since: {since!r} is too far in the past; use an ISO date/time or a shorter duration")


@pytest.mark.parametrize("path", ["/v1/mailpieces", "/v1/campaigns", "/v1/dlq", "/v1/deliveries", "/v1/followups",
                                  "/v1/mailings"])
def test_a_forged_cursor_with_a_nan_score_is_400(service: Service, path: str) -> None:
    """A cursor is base64 JSON: `["NaN", "x"]` decodes, but Redis refuses a NaN bound (it was a 500)."""
    forged = base64.urlsafe_b64encode(b'["NaN", "x"]').decode().rstrip("=")
    resp = service.http.get(path, params={"cursor": forged}, headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert assert_error(resp, 400)["detail"] == "cursor is not one this API returned"
