"""The generic source over real HTTP: canonical events signed with Standard Webhooks (design doc §5)."""

from __future__ import annotations

import pytest

from postrelay.core.events import event_id
from tests.receiver.harness import GENERIC_SECRETS, Service, assert_accepted, assert_canonical_shape, assert_error
from tests.support import payloads as P
from tests.support import signing


def test_signed_canonical_event_is_accepted_as_sent(service: Service) -> None:
    event = P.generic_event("processed_for_delivery", piece_id="mp_1001", occurred_at="2024-05-06T08:00:00-04:00",
                            estimated=False)
    assert_accepted(service.post_generic(event, msg_id="msg_abc"))
    [queued] = service.queued()
    assert_canonical_shape(queued)
    assert queued["type"] == "processed_for_delivery"
    assert queued["stage"] == "processed_for_delivery"
    assert queued["source"] == "generic"
    assert queued["source_event_id"] == "msg_abc"  # webhook-id: stable across retries
    assert queued["id"] == event_id("generic", "msg_abc", "processed_for_delivery")
    assert queued["occurred_at"] == "2024-05-06T12:00:00Z"  # normalized to UTC
    assert queued["received_at"] == "2024-05-06T15:00:00Z"
    assert queued["mailpiece"] == event["mailpiece"]
    assert queued["location"] == event["location"]
    assert queued["recipient"] == event["recipient"]
    assert queued["metadata"] == event["metadata"]
    assert queued["estimated"] is False


def test_sender_chosen_source_event_id_wins(service: Service) -> None:
    event = P.generic_event("delivered", source_event_id="crm-evt-77", estimated=True)
    assert_accepted(service.post_generic(event, msg_id="msg_1"))
    assert_accepted(service.post_generic(event, msg_id="msg_2"), accepted=0, duplicates=1)
    [queued] = service.queued()
    assert queued["source_event_id"] == "crm-evt-77"
    assert queued["estimated"] is True


def test_fields_postrelay_assigns_are_not_taken_from_the_sender(service: Service) -> None:
    event = P.generic_event("mailed", id="mev_forged", source="lob", received_at="2000-01-01T00:00:00Z",
                            stage="delivered")
    assert_accepted(service.post_generic(event, msg_id="msg_forge"))
    [queued] = service.queued()
    assert queued["id"] == event_id("generic", "msg_forge", "mailed")
    assert queued["source"] == "generic"
    assert queued["stage"] == "mailed"
    assert queued["received_at"] == "2024-05-06T15:00:00Z"


def test_minimal_event(service: Service) -> None:
    event = {"type": "purl_opened", "occurred_at": "2024-05-06T12:00:00", "mailpiece": {"id": "mp_9"}}
    assert_accepted(service.post_generic(event))
    [queued] = service.queued()
    assert_canonical_shape(queued)
    assert queued["stage"] is None
    assert queued["occurred_at"] == "2024-05-06T12:00:00Z"  # naive means UTC


def test_list_of_events(service: Service) -> None:
    events = [P.generic_event("mailed", occurred_at="2024-05-02T10:00:00Z"),
              P.generic_event("in_transit", occurred_at="2024-05-03T10:00:00Z"),
              P.generic_event("in_transit", occurred_at="2024-05-03T11:00:00Z", piece_id="mp_1002")]
    assert_accepted(service.post_generic(events, msg_id="msg_batch"), accepted=3)
    queued = service.queued()
    assert [e["type"] for e in queued] == ["mailed", "in_transit", "in_transit"]
    assert [e["source_event_id"] for e in queued] == ["msg_batch#0", "msg_batch#1", "msg_batch#2"]
    assert len({e["id"] for e in queued}) == 3
    # the sender's retry of the whole batch (same webhook-id) is all duplicates
    service.clock.advance(120)
    assert_accepted(service.post_generic(events, msg_id="msg_batch"), accepted=0, duplicates=3)


def test_retry_with_same_webhook_id_is_a_duplicate(service: Service) -> None:
    event = P.generic_event("delivered")
    assert_accepted(service.post_generic(event, msg_id="msg_retry"))
    service.clock.advance(60)
    assert_accepted(service.post_generic(event, msg_id="msg_retry"), accepted=0, duplicates=1)
    assert service.stream_len() == 1


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (P.generic_event("teleported"), "type"),
        (P.generic_event("Delivered"), "type"),
        (P.generic_event("mailed", occurred_at="last tuesday"), "occurred_at"),
        ({"type": "mailed", "occurred_at": "2024-05-06T12:00:00Z"}, "mailpiece"),
        (P.generic_event("mailed", mailpiece={"kind": "letter"}), "mailpiece.id"),
        (P.generic_event("mailed", mailpiece={"id": ""}), "mailpiece.id"),
        (P.generic_event("mailed", metadata=["not", "a", "dict"]), "metadata"),
        (P.generic_event("mailed", estimated="maybe"), "estimated"),
    ],
    ids=["unknown-type", "wrong-case-type", "bad-time", "no-mailpiece", "no-piece-id", "empty-piece-id",
         "metadata-list", "estimated-str"],
)
def test_invalid_event_is_400_naming_the_field(service: Service, event: dict, field: str) -> None:
    body = assert_error(service.post_generic(event), 400, "invalid_payload")
    assert body["detail"].startswith(f"{field}:"), body
    assert service.stream_len() == 0


def test_invalid_event_in_a_list_names_its_index(service: Service) -> None:
    events = [P.generic_event("mailed"), P.generic_event("lost_in_space")]
    body = assert_error(service.post_generic(events), 400, "invalid_payload")
    assert body["detail"].startswith("[1].type:")
    assert service.stream_len() == 0  # nothing of a rejected batch is queued


@pytest.mark.parametrize("body", [b"[]", b'"mailed"', b"42", b"null", b"[[]]"],
                         ids=["empty-list", "string", "number", "null", "list-of-list"])
def test_not_an_event_is_400(service: Service, body: bytes) -> None:
    assert_error(service.post_generic(body), 400, "invalid_payload")


# --- signatures -------------------------------------------------------------------------------------------


def test_secret_rotation_either_secret_signs(service: Service) -> None:
    assert_accepted(service.post_generic(P.generic_event(), msg_id="msg_r1", secret=GENERIC_SECRETS[0]))
    assert_accepted(service.post_generic(P.generic_event(), msg_id="msg_r2", secret=GENERIC_SECRETS[1]))


def test_several_signatures_one_valid(service: Service) -> None:
    body, headers = signing.generic_signed(P.generic_event(), GENERIC_SECRETS[1], "msg_multi", service.clock())
    other = signing.standard_webhooks_headers(body, signing.make_whsec(b"unknown"), "msg_multi", service.clock())
    headers["webhook-signature"] = f"{other['webhook-signature']} v2,abc {headers['webhook-signature']}"
    assert_accepted(service.post("/webhooks/generic", body, headers))


def test_wrong_secret_is_401(service: Service) -> None:
    resp = service.post_generic(P.generic_event(), secret=signing.make_whsec(b"someone-else"))
    assert_error(resp, 401, "invalid_signature")
    assert service.stream_len() == 0


def test_signature_bound_to_webhook_id(service: Service) -> None:
    body, headers = signing.generic_signed(P.generic_event(), GENERIC_SECRETS[0], "msg_orig", service.clock())
    headers["webhook-id"] = "msg_other"
    assert_error(service.post("/webhooks/generic", body, headers), 401, "invalid_signature")


def test_tampered_body_is_401(service: Service) -> None:
    body, headers = signing.generic_signed(P.generic_event("mailed"), GENERIC_SECRETS[0], "msg_t", service.clock())
    tampered = body.replace(b'"mailed"', b'"delivered"')
    assert_error(service.post("/webhooks/generic", tampered, headers), 401, "invalid_signature")


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_401(service: Service, missing: str) -> None:
    body, headers = signing.generic_signed(P.generic_event(), GENERIC_SECRETS[0], "msg_h", service.clock())
    del headers[missing]
    assert_error(service.post("/webhooks/generic", body, headers), 401, "missing_signature")


@pytest.mark.parametrize("signature", ["v1,!!!notbase64", "v1,", "garbage", "v2,AAAA"])
def test_malformed_signature_is_401(service: Service, signature: str) -> None:
    body, headers = signing.generic_signed(P.generic_event(), GENERIC_SECRETS[0], "msg_m", service.clock())
    headers["webhook-signature"] = signature
    assert_error(service.post("/webhooks/generic", body, headers), 401, "invalid_signature")


@pytest.mark.parametrize(("offset", "ok"), [(-240, True), (-360, False), (240, True), (360, False)])
def test_five_minute_tolerance(service: Service, offset: float, ok: bool) -> None:
    resp = service.post_generic(P.generic_event(), timestamp=service.clock() + offset)
    if ok:
        assert_accepted(resp)
    else:
        assert_error(resp, 401, "timestamp_out_of_tolerance")
        assert service.stream_len() == 0


@pytest.mark.parametrize("timestamp", ["1e300", "inf", "1e400", "-1", "nan", "99999999999999999999999", "soon"])
def test_absurd_timestamp_is_401_not_500(service: Service, timestamp: str) -> None:
    """The timestamp is parsed before the signature is checked: garbage from anyone must not crash the handler."""
    body, headers = signing.generic_signed(P.generic_event(), GENERIC_SECRETS[0], "msg_ts", service.clock())
    headers["webhook-timestamp"] = timestamp
    assert_error(service.post("/webhooks/generic", body, headers), 401)
