"""What every sender sees at the HTTP level: 200 only once queued, duplicates, 400/401/404/405/408/413/500 bodies."""

from __future__ import annotations

import asyncio
import copy
import json
import socket
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postrelay.core import keys
from postrelay.receiver.errors import HTTPError
from postrelay.receiver.providers import generic, lob, postalytics, postgrid
from postrelay.receiver.providers.base import parse_json
from tests.receiver.harness import (
    GENERIC_SECRETS,
    LOB_SECRETS,
    PA_TOKEN,
    PG_SECRETS,
    Service,
    assert_accepted,
    assert_error,
)
from tests.support import payloads as P
from tests.support import signing

SOURCES = ["postgrid", "lob", "postalytics", "generic"]


def signed_request(service: Service, source: str, body: bytes) -> tuple[str, dict[str, str]]:
    """Path and headers that authenticate `body` (any bytes) for `source`."""
    now = service.clock()
    if source == "postgrid":
        return "/webhooks/postgrid", {"PostGrid-Signature": signing.postgrid_signature(body, PG_SECRETS[0], now)}
    if source == "lob":
        return "/webhooks/lob", signing.lob_headers(body, LOB_SECRETS[0], now)
    if source == "postalytics":
        return f"/webhooks/postalytics/{PA_TOKEN}", {}
    return "/webhooks/generic", signing.standard_webhooks_headers(body, GENERIC_SECRETS[0], "msg_raw", now)


def valid_event(source: str) -> dict:
    """One valid event per source."""
    return {
        "postgrid": P.postgrid_status_update("letter", "printing"),
        "lob": P.lob_event("letter.mailed", P.lob_mailpiece()),
        "postalytics": P.postalytics_event(6),
        "generic": P.generic_event(),
    }[source]


def post_raw(service: Service, source: str, body: bytes) -> httpx.Response:
    path, headers = signed_request(service, source, body)
    return service.post(path, body, headers)


# --- 200 means queued -------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_200_only_once_the_event_is_in_the_stream(service: Service, source: str) -> None:
    assert service.stream_len() == 0
    resp = post_raw(service, source, signing.to_bytes(valid_event(source)))
    assert_accepted(resp)
    entries = service.redis.xrange(keys.INGEST_STREAM)  # read right after the answer: already there
    assert len(entries) == 1
    event = json.loads(entries[0][1][b"e"])
    assert event["source"] == source
    assert service.redis.exists(keys.seen(event["id"]))


@pytest.mark.parametrize("source", SOURCES)
def test_duplicate_is_200_and_not_queued_again(service: Service, source: str) -> None:
    body = signing.to_bytes(valid_event(source))
    assert_accepted(post_raw(service, source, body))
    service.clock.advance(10)
    assert_accepted(post_raw(service, source, body), accepted=0, duplicates=1)
    assert service.stream_len() == 1


@pytest.mark.parametrize("source", ["postgrid", "lob", "postalytics", "generic"])
def test_fifty_concurrent_identical_posts_queue_exactly_one(service: Service, source: str) -> None:
    body = signing.to_bytes(valid_event(source))
    path, headers = signed_request(service, source, body)

    async def blast() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=service.url, limits=limits, timeout=10) as client:
            return await asyncio.gather(*(client.post(path, content=body, headers=headers) for _ in range(50)))

    responses = asyncio.run(blast())
    assert all(r.status_code == 200 for r in responses), {r.status_code for r in responses}
    assert sum(r.json()["accepted"] for r in responses) == 1
    assert sum(r.json()["duplicates"] for r in responses) == 49
    assert service.stream_len() == 1


def test_a_failed_enqueue_does_not_mark_the_event_seen(service: Service) -> None:
    """If XADD fails mid-script (here: the stream key has the wrong type), the retry must still be accepted."""
    service.redis.set(keys.INGEST_STREAM, "not a stream")
    event = valid_event("lob")
    resp = service.post_lob(event)
    body = assert_error(resp, 500, "internal_error")
    assert "WRONGTYPE" not in body["detail"]
    assert resp.headers["connection"] == "close"  # uvicorn drops the connection after an unhandled error
    service.redis.delete(keys.INGEST_STREAM)
    assert_accepted(service.post_lob(event))
    assert service.stream_len() == 1


# --- 400: bodies that are not acceptable JSON events -------------------------------------------------------

MALFORMED = {
    "truncated": b'{"id": "evt_1", "type": ',
    "trailing-garbage": b'{"id": "evt_1"} {"id": "evt_2"}',
    "single-quotes": b"{'id': 'evt_1'}",
    "empty": b"",
    "whitespace": b"  \n ",
    "invalid-utf8": b'{"id": "evt_\xff\xfe", "type": "letter.mailed"}',
    "utf16": '{"id": "evt_1"}'.encode("utf-16"),
    "deep-nesting": b"[" * 100_000 + b"]" * 100_000,
    "deep-object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "huge-number": b'{"id": ' + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_body_is_400(service: Service, source: str, case: str) -> None:
    resp = post_raw(service, source, MALFORMED[case])
    body = assert_error(resp, 400, "invalid_json")
    assert service.stream_len() == 0
    if case == "invalid-utf8":
        assert "UTF-8" in body["detail"]


NON_OBJECTS = {"string": b'"letter.mailed"', "number": b"42", "null": b"null", "true": b"true",
               "list-of-numbers": b"[1, 2]", "empty-list": b"[]", "list-of-lists": b"[[]]"}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("case", list(NON_OBJECTS))
def test_non_object_body_is_400(service: Service, source: str, case: str) -> None:
    assert_error(post_raw(service, source, NON_OBJECTS[case]), 400, "invalid_payload")
    assert service.stream_len() == 0


@pytest.mark.parametrize("source", SOURCES)
def test_lone_surrogate_escape_is_400_not_500(service: Service, source: str) -> None:
    """`"\\ud800"` is valid JSON syntax but cannot be stored as UTF-8."""
    raw = json.dumps(valid_event(source))
    for name in ('"Ada', '"ADA', '"Grace'):
        raw = raw.replace(name, name[0] + "\\ud800" + name[1:])
    assert "\\ud800" in raw
    assert_error(post_raw(service, source, raw.encode()), 400, "invalid_json")


@pytest.mark.parametrize("source", SOURCES)
def test_valid_surrogate_pair_is_fine(service: Service, source: str) -> None:
    raw = json.dumps(valid_event(source))
    for name in ('"Ada', '"ADA', '"Grace'):
        raw = raw.replace(name, name[0] + "\\ud83d\\udc8c" + name[1:])
    assert_accepted(post_raw(service, source, raw.encode()))
    assert "\U0001f48c" in json.dumps(service.queued()[0]["recipient"], ensure_ascii=False)


def test_jwt_with_lone_surrogate_claim_is_400(service: Service) -> None:
    event = P.postgrid_status_update("letter", "printing")
    event["data"]["to"]["firstName"] = "\ud800"
    body = signing.postgrid_jwt(event, PG_SECRETS[0], iat=service.clock())
    assert_error(service.post("/webhooks/postgrid", body), 400, "invalid_json")


@pytest.mark.parametrize(
    ("source", "patch"),
    [
        ("postgrid", lambda e: e.update(createdAt="9999-12-31T23:59:59-05:00")),
        ("postgrid", lambda e: e.update(createdAt="0001-01-01T00:00:00+05:00")),
        ("lob", lambda e: e.update(date_created="9999-12-31T23:59:59-05:00")),
        ("postalytics", lambda e: e.update(eventDate="9999-12-31T23:59:59-05:00")),
        ("postalytics", lambda e: e.update(eventDate=1e300)),
        ("generic", lambda e: e.update(occurred_at="9999-12-31T23:59:59-05:00")),
    ],
    ids=["postgrid-9999", "postgrid-0001", "lob-9999", "postalytics-9999", "postalytics-epoch", "generic-9999"],
)
def test_out_of_range_timestamp_is_400_not_500(service: Service, source: str, patch) -> None:
    event = valid_event(source)
    patch(event)
    assert_error(post_raw(service, source, signing.to_bytes(event)), 400, "invalid_payload")


@pytest.mark.parametrize("source", ["postgrid", "lob", "postalytics"])
def test_unparseable_timestamp_is_400(service: Service, source: str) -> None:
    event = valid_event(source)
    event.update({"postgrid": {"createdAt": "yesterday"}, "lob": {"date_created": "yesterday"},
                  "postalytics": {"eventDate": "yesterday"}}[source])
    body = assert_error(post_raw(service, source, signing.to_bytes(event)), 400, "invalid_payload")
    assert "yesterday" in body["detail"]


def test_unicode_digits_event_type_is_not_a_500(service: Service) -> None:
    assert_accepted(service.post_postalytics(P.postalytics_event("¹")), accepted=0, ignored=1)


# --- 401 before anything else about the body --------------------------------------------------------------


@pytest.mark.parametrize("source", ["postgrid", "lob", "generic"])
def test_unsigned_request_is_401(service: Service, source: str) -> None:
    resp = service.post(f"/webhooks/{source}", signing.to_bytes(valid_event(source)),
                        {"Content-Type": "application/json"})
    assert_error(resp, 401, "missing_signature")


@pytest.mark.parametrize("source", ["lob", "generic"])
def test_bad_signature_over_malformed_body_is_401_not_400(service: Service, source: str) -> None:
    _, headers = signed_request(service, source, b'{"valid": true}')
    assert_error(service.post(f"/webhooks/{source}", b"{not json", headers), 401, "invalid_signature")


# --- 413: body limits -------------------------------------------------------------------------------------


@pytest.fixture
def small(make_service) -> Service:
    return make_service({"server": {"max_body_bytes": 2048}})


def padded_lob_event(size: int) -> bytes:
    """A valid Lob event serialized to exactly `size` bytes (padding in metadata)."""
    event = P.lob_event("letter.mailed", P.lob_mailpiece(metadata={"pad": ""}))
    base = len(signing.to_bytes(event))
    event["body"]["metadata"]["pad"] = "x" * (size - base)
    body = signing.to_bytes(event)
    assert len(body) == size
    return body


@pytest.mark.parametrize("source", SOURCES)
def test_body_over_limit_with_content_length_is_413(small: Service, source: str) -> None:
    body = b'{"pad": "' + b"x" * 3000 + b'"}'
    resp = post_raw(small, source, body)
    detail = assert_error(resp, 413, "body_too_large")["detail"]
    assert "2048" in detail
    assert small.stream_len() == 0


@pytest.mark.parametrize("source", SOURCES)
def test_chunked_body_over_limit_is_413(small: Service, source: str) -> None:
    body = b'{"pad": "' + b"x" * 3000 + b'"}'
    path, headers = signed_request(small, source, body)

    def chunks():
        for i in range(0, len(body), 512):
            yield body[i:i + 512]

    resp = small.post(path, chunks(), headers)
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    assert resp.request.headers["transfer-encoding"] == "chunked"
    assert_error(resp, 413, "body_too_large")
    assert small.stream_len() == 0


def test_body_exactly_at_limit_is_accepted(small: Service) -> None:
    body = padded_lob_event(2048)
    headers = signing.lob_headers(body, LOB_SECRETS[0], small.clock())
    assert_accepted(small.post("/webhooks/lob", body, headers))
    one_more = padded_lob_event(2049)
    headers = signing.lob_headers(one_more, LOB_SECRETS[0], small.clock())
    assert_error(small.post("/webhooks/lob", one_more, headers), 413)


def test_chunked_body_under_limit_is_accepted(small: Service) -> None:
    body = padded_lob_event(2000)
    headers = signing.lob_headers(body, LOB_SECRETS[0], small.clock())
    resp = small.post("/webhooks/lob", iter([body[:700], body[700:1400], body[1400:]]), headers)
    assert resp.request.headers["transfer-encoding"] == "chunked"
    assert_accepted(resp)


def test_unauthenticated_oversized_body_is_413(small: Service) -> None:
    resp = small.post("/webhooks/lob", b"x" * 100_000, {"Content-Type": "application/json"})
    assert_error(resp, 413, "body_too_large")


def test_slow_body_is_408(make_service) -> None:
    svc = make_service({"server": {"body_timeout": 0.3}})
    with socket.create_connection(("127.0.0.1", int(svc.url.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(b"POST /webhooks/lob HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"partial\":")
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(payload)["error"] == "body_timeout"


# --- 404 / 405 --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/webhooks/sendgrid", "/webhooks/POSTGRID", "/webhooks/lob2"])
def test_unknown_source_is_404(service: Service, path: str) -> None:
    body = assert_error(service.post(path, b"{}"), 404, "unknown_source")
    assert "postgrid" in body["detail"]


@pytest.mark.parametrize("source", SOURCES)
def test_unconfigured_source_is_404(make_service, source: str) -> None:
    others = {s: None for s in SOURCES if s == source}
    svc = make_service({"sources": others})
    resp = post_raw(svc, source, signing.to_bytes(valid_event(source)))
    assert_error(resp, 404, "source_not_configured")


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/nope", 404),
    ("POST", "/webhooks", 404),
    ("POST", "/webhooks/lob/extra/segments", 404),
    ("GET", "/webhooks/lob", 405),
    ("PUT", "/webhooks/generic", 405),
    ("POST", "/healthz", 405),
    ("DELETE", "/v1/mailpieces/lob/ltr_1", 405),
])
def test_routing_errors_are_json(service: Service, method: str, path: str, status: int) -> None:
    assert_error(service.http.request(method, path), status)


def test_health_endpoints(service: Service) -> None:
    assert service.http.get("/healthz").json() == {"status": "ok"}
    ready = service.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "redis": "ok"}


# --- property: whatever a signed sender posts, the answer is never a 500 -----------------------------------

_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20), st.floats(), st.text(max_size=12),
    st.sampled_from(["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "2024-13-45", "\ud800", "¹", "",
                     "letter.updated", "tracker.visited", "letter.return_envelope.in_transit",
                     "letter.certified.re-routed", "completed", "cancelled", "out_for_delivery", "6", "pURLOpened"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
_SAMPLES = {
    "postgrid": [P.postgrid_status_update("letter", "cancelled", cancellation={"reason": "user_initiated"}),
                 P.postgrid_imb_update("postcard", "out_for_delivery"), P.postgrid_tracker_visit()],
    "lob": [P.lob_event("letter.certified.in_transit", P.lob_mailpiece(
                tracking_events=[P.lob_tracking_event("In Transit", "2024-05-04T08:00:00Z")], extra_service="certified")),
            P.lob_event("letter.return_envelope.in_transit", P.lob_mailpiece())],
    "postalytics": [P.postalytics_event(6, meta_fields=[{"name": "crm", "value": "1"}]),
                    P.postalytics_event("ProcessedForDelivery", meta_fields={"a": 1})],
    "generic": [P.generic_event(), [P.generic_event(), P.generic_event("mailed")]],
}


def _paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for key, value in items:
        yield from _paths(value, (*prefix, key))


@st.composite
def _mutated(draw):
    source = draw(st.sampled_from(list(_SAMPLES)))
    payload = copy.deepcopy(draw(st.sampled_from(_SAMPLES[source])))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(payload))))
        value = draw(_LEAVES)
        if not path:
            payload = value
            continue
        target = payload
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return source, payload


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(_mutated())
def test_mutated_payloads_never_raise_anything_but_an_http_error(case) -> None:
    """In-process (fast): the same parse + normalize + serialize the request path runs, on mutated real payloads."""
    source, payload = case
    module = {"postgrid": postgrid, "lob": lob, "postalytics": postalytics, "generic": generic}[source]
    received = datetime(2024, 5, 6, 15, tzinfo=UTC)
    try:
        parsed = parse_json(json.dumps(payload).encode())
        normalized = module.normalize({"webhook_id": "msg_f", "body": parsed} if source == "generic" else parsed,
                                      received)
        for event in normalized.events:
            event.model_dump_json()
    except HTTPError as exc:
        assert exc.status == 400
