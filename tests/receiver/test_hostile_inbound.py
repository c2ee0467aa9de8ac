"""Hostile but correctly signed inbound input (issue 18 §4 §8 §10 §13): clear 400s, never a 500, and nothing of
a refused request is accepted; Postalytics events without `eventDate` still deduplicate; the read API's key
scheme cannot be made ambiguous."""

from __future__ import annotations

import json

import pytest

from tests.receiver.harness import (
    LOB_SECRETS,
    PG_SECRETS,
    Service,
    assert_accepted,
    assert_error,
)
from tests.support import payloads as P
from tests.support import signing

LONG = "x" * 201


# --- §4: model validation problems are 400s naming the field ----------------------------------------------


def test_postgrid_over_long_order_id_is_400_naming_the_field(service: Service) -> None:
    event = P.postgrid_status_update("letter", "printing", order_id="letter_" + LONG)
    for fmt in ("jwt", "json"):
        body = assert_error(service.post_postgrid(event, fmt=fmt), 400, "invalid_payload")
        assert "mailpiece.id" in body["detail"] and "200" in body["detail"]
        assert LONG not in body["detail"]  # the value is never echoed
    assert service.stream_len() == 0


def test_lob_reference_id_too_long_with_return_envelope_suffix(service: Service) -> None:
    body = P.lob_mailpiece("letter", piece_id="ltr_" + "a" * 184)  # 188 + ":return_envelope" = 204 > 200
    assert_accepted(service.post_lob(P.lob_event("letter.in_transit", body)))  # the letter itself fits
    resp = service.post_lob(P.lob_event("letter.return_envelope.in_transit", body))
    detail = assert_error(resp, 400, "invalid_payload")["detail"]
    assert detail.startswith("Lob event: mailpiece.id:")
    assert service.stream_len() == 1  # only the letter's event


def test_postalytics_over_long_mail_id_is_400(service: Service) -> None:
    resp = service.post_postalytics(P.postalytics_event(11, mail_id=LONG))
    assert "mailpiece.id" in assert_error(resp, 400, "invalid_payload")["detail"]


def test_one_bad_event_of_a_batch_refuses_the_whole_request_naming_it(service: Service) -> None:
    """A batch is all or nothing: the provider sees a 400 (and retries or shows it), no event is half-accepted."""
    batch = [P.postalytics_event(11, mail_id="ok-1"), P.postalytics_event(11, mail_id=LONG),
             P.postalytics_event(11, mail_id="ok-3")]
    detail = assert_error(service.post_postalytics(batch), 400, "invalid_payload")["detail"]
    assert detail.startswith("Postalytics event [1]: mailpiece.id:")
    assert service.stream_len() == 0
    good = [P.postalytics_event(11, mail_id="ok-1"), P.postalytics_event(11, mail_id="ok-3")]
    assert_accepted(service.post_postalytics(good), accepted=2)


@pytest.mark.parametrize("bad_id", ["ltr_a\nb", "ltr_tab\there", "ltr_nul\x00", "ltr_esc\x1b[31m", "ltr_del\x7f",
                                    "ltr_c1\x85x", "ltr_\u2028ls"])
def test_control_characters_in_a_piece_id_are_refused_at_ingest(service: Service, bad_id: str) -> None:
    """An id with a newline could be stored but never read back through `GET /v1/mailpieces/…`: refused."""
    resp = service.post_lob(P.lob_event("letter.mailed", P.lob_mailpiece("letter", piece_id=bad_id)))
    assert "control characters" in assert_error(resp, 400, "invalid_payload")["detail"]
    resp = service.post_postgrid(P.postgrid_status_update("letter", "printing", order_id=bad_id))
    assert_error(resp, 400, "invalid_payload")
    resp = service.post_generic(P.generic_event("mailed", piece_id=bad_id))
    assert "mailpiece.id" in assert_error(resp, 400, "invalid_payload")["detail"]
    assert service.stream_len() == 0


# --- §8: Postalytics without eventDate -------------------------------------------------------------------


def test_postalytics_without_event_date_deduplicates_on_the_raw_event(service: Service) -> None:
    body = P.postalytics_event(6)
    del body["eventDate"]
    assert_accepted(service.post_postalytics(body))
    service.clock.advance(3600)  # a retry an hour later, with its retry counter bumped
    retry = {**body, "retryAttempts": 1}
    assert_accepted(service.post_postalytics(retry), accepted=0, duplicates=1)
    other = {**body, "statusDescription": "a different event of the same type"}
    assert_accepted(service.post_postalytics(other))
    first, second = service.queued()
    assert first["source_event_id"].startswith(f"{body['mailId']}:processed_for_delivery:body-sha256:")
    assert first["source_event_id"] != second["source_event_id"]
    assert first["occurred_at"] == "2024-05-06T15:00:00Z"  # no eventDate: the arrival time


def test_postalytics_with_event_date_keeps_its_documented_dedupe_key(service: Service) -> None:
    body = P.postalytics_event(6, event_date="2024-05-06T13:45:00")
    assert_accepted(service.post_postalytics(body))
    assert_accepted(service.post_postalytics({**body, "statusDescription": "changed"}), accepted=0, duplicates=1)
    [queued] = service.queued()
    assert queued["source_event_id"] == f"{body['mailId']}:processed_for_delivery:2024-05-06T13:45:00+00:00"


# --- §10: NaN, Infinity, 1e400 --------------------------------------------------------------------------------


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400 + ".5"]


def lob_body_with(number: str) -> bytes:
    text = json.dumps(P.lob_event("letter.mailed", P.lob_mailpiece("letter")), separators=(",", ":"))
    return text.replace('"metadata":{"crm_contact_id"', f'"metadata":{{"score":{number},"crm_contact_id"', 1).encode()


@pytest.mark.parametrize("number", NON_FINITE)
def test_non_finite_numbers_are_invalid_json_for_lob(service: Service, number: str) -> None:
    body = lob_body_with(number)
    headers = signing.lob_headers(body, LOB_SECRETS[0], service.clock())
    detail = assert_error(service.post("/webhooks/lob", body, headers), 400, "invalid_json")["detail"]
    assert "not valid JSON" in detail
    assert service.stream_len() == 0


@pytest.mark.parametrize("number", NON_FINITE)
def test_non_finite_numbers_are_invalid_json_for_every_source(service: Service, number: str) -> None:
    pa = json.dumps(P.postalytics_event(11)).replace('"retryAttempts": 0', f'"retryAttempts": {number}').encode()
    assert_error(service.post_postalytics(pa), 400, "invalid_json")
    gen = json.dumps(P.generic_event("mailed")).replace('"crm_id": "C-42"', f'"crm_id": {number}').encode()
    headers = signing.standard_webhooks_headers(gen, service.config.sources.generic.secrets[0], "msg_nan",
                                                service.clock())
    assert_error(service.post("/webhooks/generic", gen, headers), 400, "invalid_json")
    pg = json.dumps(P.postgrid_status_update("letter", "printing")).replace('"live": false', f'"live": {number}',
                                                                           1).encode()
    body, pg_headers = signing.postgrid_json(pg, PG_SECRETS[0], service.clock())
    assert_error(service.post("/webhooks/postgrid", body, pg_headers), 400, "invalid_json")
    assert service.stream_len() == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_in_postgrid_jwt_claims_are_invalid_json(service: Service, value: float) -> None:
    """PyJWT parses claims with the standard library (which accepts NaN): they are checked as well."""
    event = P.postgrid_status_update("letter", "printing", metadata={"score": value})
    assert_error(service.post_postgrid(event, fmt="jwt"), 400, "invalid_json")
    assert service.stream_len() == 0


def test_big_but_finite_numbers_still_pass(service: Service) -> None:
    body = lob_body_with("1.5e308")
    headers = signing.lob_headers(body, LOB_SECRETS[0], service.clock())
    assert_accepted(service.post("/webhooks/lob", body, headers))
    body = lob_body_with("123456789012345678901234567890")  # a big integer stays exact
    headers = signing.lob_headers(body, LOB_SECRETS[0], service.clock())
    assert_accepted(service.post("/webhooks/lob", body, headers), accepted=0, duplicates=1)


# --- §13: the read API's key scheme ---------------------------------------------------------------------------


def test_colons_cannot_make_two_pieces_share_a_key(service: Service) -> None:
    assert_accepted(service.post_postgrid(P.postgrid_status_update("letter", "printing", order_id="a:b:c")))
    service.apply_queued()
    piece = service.get_piece("postgrid", "a:b:c")
    assert piece.status_code == 200 and piece.json()["source"] == "postgrid" and piece.json()["id"] == "a:b:c"
    # `postgrid:a` + `b:c` would build the same Redis key: the source is checked first
    detail = assert_error(service.get_piece("postgrid:a", "b:c"), 404, "unknown_source")["detail"]
    assert "postgrid, lob, postalytics, generic" in detail
    assert_error(service.get_piece("lob", "a:b:c"), 404, "mailpiece_not_found")


@pytest.mark.parametrize("source", ["POSTGRID", "postgrid ", "nosuch", "postgrid:a"])
def test_only_the_four_sources_are_readable(service: Service, source: str) -> None:
    assert_error(service.get_piece(source, "letter_1"), 404, "unknown_source")


def test_an_id_with_slashes_and_colons_reads_back(service: Service) -> None:
    pid = "ref:2024/05/batch:7"
    assert_accepted(service.post_lob(P.lob_event("letter.mailed", P.lob_mailpiece("letter", piece_id=pid))))
    service.apply_queued()
    resp = service.get_piece("lob", pid)
    assert resp.status_code == 200 and resp.json()["id"] == pid
