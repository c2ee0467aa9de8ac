"""The one webhook route (`receiver.webhook.WebhookEndpoint` in the router): its answers byte for byte, its
routing neighbours, its failure answers and its counters in /metrics."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest
import redis.exceptions

from tests.receiver.harness import (
    API_TOKEN,
    LOB_SECRETS,
    PA_TOKEN,
    PG_SECRETS,
    Service,
    assert_accepted,
    assert_error,
)
from tests.support import payloads as P
from tests.support import signing


def _lob(svc: Service) -> tuple[bytes, dict[str, str]]:
    return signing.lob_signed(P.lob_event("letter.mailed", P.lob_mailpiece()), LOB_SECRETS[0], svc.clock())


def test_the_answer_is_compact_json_with_its_length(service: Service) -> None:
    body, headers = signing.postgrid_json(P.postgrid_status_update("letter", "printing"), PG_SECRETS[0],
                                          service.clock())
    resp = service.post("/webhooks/postgrid", body, headers)
    assert resp.content == b'{"accepted":1,"duplicates":0,"ignored":0}'
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["content-length"] == str(len(resp.content))
    again = service.post("/webhooks/postgrid", body, headers)
    assert again.content == b'{"accepted":0,"duplicates":1,"ignored":0}'
    billing = signing.postgrid_json({"id": "evt_bill", "type": "invoice.created", "data": {}}, PG_SECRETS[0],
                                    service.clock())
    assert_accepted(service.post("/webhooks/postgrid", *billing), accepted=0, ignored=1)
    assert service.stream_len() == 1


def test_a_chunked_body_without_content_length(service: Service) -> None:
    body, headers = _lob(service)
    resp = service.post("/webhooks/lob", iter([body[:100], body[100:700], body[700:]]), headers)
    assert resp.request.headers["transfer-encoding"] == "chunked"
    assert_accepted(resp)


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/webhooks/lob", 405, "method_not_allowed"), ("DELETE", "/webhooks/postgrid", 405, "method_not_allowed"),
    ("PATCH", "/webhooks/x", 405, "method_not_allowed"), ("POST", "/webhooks/sendgrid", 404, "unknown_source"),
    ("POST", "/webhooks/lob/extra", 404, "not_found"), ("POST", "/webhooks/", 404, "not_found"),
    ("POST", "/webhooks", 404, "not_found"), ("POST", "/webhooks/postalytics", 401, "missing_token"),
    ("POST", f"/webhooks/postalytics/{PA_TOKEN}/extra", 404, "not_found"),
    ("POST", "/webhooks/postalytics/wrong-token-123456", 401, "invalid_token"),
    ("GET", f"/webhooks/postalytics/{PA_TOKEN}", 405, "method_not_allowed"),
])
def test_routing_answers(service: Service, method: str, path: str, status: int, code: str) -> None:
    resp = service.http.request(method, path, content=b"{}" if method != "GET" else None)
    assert_error(resp, status, code)
    if status == 405:
        assert "POST" in resp.headers["allow"]


def test_the_postalytics_token_route(service: Service) -> None:
    assert_accepted(service.post_postalytics(P.postalytics_event(6)))
    assert service.queued()[0]["source"] == "postalytics"


def test_an_unconfigured_source(make_service: Any) -> None:
    svc = make_service({"sources": {"lob": None, "postalytics": None}})
    assert_error(svc.post("/webhooks/lob", b"{}"), 404, "source_not_configured")
    assert_error(svc.post(f"/webhooks/postalytics/{PA_TOKEN}", b"{}"), 404, "source_not_configured")


def _break_enqueue(svc: Service, exc: Exception) -> None:
    async def enqueue(events: Any) -> tuple[int, int]:
        raise exc

    svc._server.server.config.app.state.receiver.queue.enqueue = enqueue


def test_redis_unavailable_is_503_with_retry_after(make_service: Any) -> None:
    svc = make_service()
    _break_enqueue(svc, redis.exceptions.ConnectionError("down"))
    resp = svc.post("/webhooks/lob", *_lob(svc))
    assert_error(resp, 503, "redis_unavailable")
    assert resp.headers["retry-after"] == "17"


def test_an_unexpected_error_is_500_and_closes_the_connection(make_service: Any) -> None:
    svc = make_service()
    _break_enqueue(svc, RuntimeError("boom: internal detail"))
    resp = svc.post("/webhooks/lob", *_lob(svc))
    body = assert_error(resp, 500, "internal_error")
    assert resp.headers["connection"] == "close" and "boom" not in resp.text
    assert "the event was not accepted" in body["detail"]  # the provider sends it again


class _Broken:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("boom: internal detail")


def test_an_unexpected_error_outside_the_webhooks_does_not_speak_of_an_event(make_service: Any) -> None:
    svc = make_service()
    svc._server.server.config.app.state.receiver.pieces = _Broken()
    resp = httpx.get(svc.url + "/v1/mailpieces/lob/ltr_1", headers={"Authorization": f"Bearer {API_TOKEN}"})
    body = assert_error(resp, 500, "internal_error")
    assert body["detail"] == "unexpected error (logged by the server); retry later"
    assert resp.headers["connection"] == "close" and "boom" not in resp.text


def _raw(svc: Service, request: bytes) -> tuple[bytes, dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", int(svc.url.rsplit(":", 1)[1])), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while True:
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    return head.split(b"\r\n")[0], json.loads(rest[:length])
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    # a length httptools cannot represent is malformed HTTP (a JSON 400 from receiver.server); a big one is 413
    (b"POST /webhooks/lob HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999999999\r\n\r\n{}", 400,
     "invalid_http"),
    (b"POST /webhooks/lob HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n{}", 413, "body_too_large"),
    (b"POST /webhooks/lob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 401, "missing_signature"),
    (b"POST /webhooks/postgrid HTTP/1.0\r\n\r\n", 400, "invalid_body"),
])
def test_raw_requests(service: Service, request_bytes: bytes, status: int, code: str) -> None:
    status_line, body = _raw(service, request_bytes)
    assert status_line.split()[1] == str(status).encode() and body["error"] == code, body


def _series(svc: Service) -> dict[str, float]:
    out = {}
    for line in svc.http.get("/metrics").text.splitlines():
        if line.startswith(("postrelay_http_requests_total{", "postrelay_events_received_total{",
                            "postrelay_events_rejected_total{", "postrelay_signature_failures_total{",
                            "postrelay_ingest_seconds_count")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_counters(make_service: Any) -> None:
    svc = make_service()
    ok = _lob(svc)
    svc.post("/webhooks/lob", *ok)
    svc.post("/webhooks/lob", *ok)  # duplicate
    svc.post("/webhooks/lob", b"{}", {"Lob-Signature": "00", "Lob-Signature-Timestamp": str(int(svc.clock()))})
    svc.post(f"/webhooks/postalytics/{PA_TOKEN}", signing.to_bytes(P.postalytics_event(6)))
    svc.post("/webhooks/postalytics/not-the-token-0000", b"{}")
    svc.post("/webhooks/nope", b"{}")
    svc.http.get("/webhooks/lob")
    got = _series(svc)
    assert got['postrelay_http_requests_total{path="/webhooks/lob",status="200"}'] == 2
    assert got['postrelay_http_requests_total{path="/webhooks/lob",status="401"}'] == 1
    assert got['postrelay_http_requests_total{path="/webhooks/lob",status="405"}'] == 1
    assert got['postrelay_http_requests_total{path="/webhooks/postalytics/{token}",status="200"}'] == 1
    assert got['postrelay_http_requests_total{path="/webhooks/postalytics/{token}",status="401"}'] == 1
    assert got['postrelay_http_requests_total{path="/webhooks/{source}",status="404"}'] == 1
    assert got['postrelay_events_received_total{outcome="accepted",source="lob"}'] == 1
    assert got['postrelay_events_received_total{outcome="duplicate",source="lob"}'] == 1
    assert got['postrelay_signature_failures_total{source="lob"}'] == 1
    assert got['postrelay_signature_failures_total{source="postalytics"}'] == 1
    assert got["postrelay_ingest_seconds_count"] == 6  # every webhook POST, the unknown source too
