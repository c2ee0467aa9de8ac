"""The HTTP edge (issue 18, points 5, 7, 11): bounded request heads (431), client aborts, JSON for every answer
the app controls, no path segment echoed. Real uvicorn on loopback, spoken to over raw sockets where a client
library would not send such requests."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.receiver.harness import (
    GENERIC_SECRETS,
    PA_TOKEN,
    Service,
    UvicornThread,
    assert_accepted,
    assert_error,
    start_service,
)
from tests.support import payloads as P
from tests.support import signing


def _port(svc: Service) -> int:
    return int(svc.url.rsplit(":", 1)[1])


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer: (status, lower-cased headers, body) — read until Content-Length or EOF."""
    data = b""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
            if "content-length" in headers and len(rest) >= int(headers["content-length"]):
                return int(lines[0].split()[1]), headers, rest[:int(headers["content-length"])]
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            assert sep, f"connection closed without an answer: {data[:200]!r}"
            return int(lines[0].split()[1]), headers, rest
        data += chunk


def _raw(svc: Service, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", _port(svc)), timeout=10) as sock:
        sock.sendall(request)
        return _read_answer(sock)


def _json_error(answer: tuple[int, dict[str, str], bytes], status: int, code: str) -> dict[str, Any]:
    got, headers, body = answer
    assert got == status, (got, body)
    assert headers["content-type"].startswith("application/json")
    parsed = json.loads(body)
    assert set(parsed) == {"error", "detail"} and parsed["error"] == code, parsed
    return parsed


def _metric(svc: Service, prefix: str) -> float:
    total = 0.0
    for line in svc.http.get("/metrics").text.splitlines():
        if line.startswith(prefix):
            total += float(line.rpartition(" ")[2])
    return total


def _head(extra: bytes, path: bytes = b"/webhooks/lob") -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + extra


@pytest.fixture(params=["httptools", "h11"])
def parser_service(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Service]:
    """The receiver as `postrelay serve` runs it, with either HTTP parser."""
    svc = start_service(redis_url, h11=request.param == "h11")
    yield svc
    svc.close()


# --- point 5: request heads are bounded before authentication ---------------------------------------------


def test_an_oversized_header_is_431_json_before_the_head_is_complete(parser_service: Service) -> None:
    """The head never ends (no blank line): the answer comes once the limit is passed, not after it all."""
    request = _head(b"X-Pad: " + b"a" * 40_000)  # 32 KiB is the default limit
    answer = _raw(parser_service, request)
    body = _json_error(answer, 431, "headers_too_large")
    assert "32768" in body["detail"]
    assert answer[1]["connection"] == "close"
    assert parser_service.http.get("/healthz").status_code == 200


def test_a_complete_head_over_the_limit_is_431(parser_service: Service) -> None:
    request = _head(b"X-Pad: " + b"a" * 40_000 + b"\r\nContent-Length: 2\r\n\r\n{}")
    _json_error(_raw(parser_service, request), 431, "headers_too_large")
    assert parser_service.stream_len() == 0


def test_a_huge_header_is_refused_without_reading_it(service: Service) -> None:
    """64 MiB of header: the server answers and closes after about the limit (plus a read buffer)."""
    sent = 0
    chunk = b"a" * 65536
    with socket.create_connection(("127.0.0.1", _port(service)), timeout=10) as sock:
        sock.sendall(_head(b"X-Pad: "))
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert sent < 8 * 1024 * 1024, "the server kept reading the header"
    assert service.http.get("/healthz").status_code == 200


def test_too_many_header_fields_is_431(service: Service) -> None:
    fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(101))
    body = _json_error(_raw(service, _head(fields + b"Content-Length: 2\r\n\r\n{}")), 431, "headers_too_large")
    assert "100 header fields" in body["detail"]


def test_heads_within_the_limits_are_served(service: Service) -> None:
    fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(90)) + b"X-Pad: " + b"a" * 30_000 + b"\r\n"
    answer = _raw(service, _head(fields + b"Content-Length: 2\r\n\r\n{}"))
    _json_error(answer, 401, "missing_signature")  # through to the provider's check


def test_the_limits_are_configurable(make_service: Any) -> None:
    svc = make_service({"server": {"max_header_bytes": 8192, "max_headers": 20}})
    _json_error(_raw(svc, _head(b"X-Pad: " + b"a" * 9000 + b"\r\n\r\n")), 431, "headers_too_large")
    fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(21))
    _json_error(_raw(svc, _head(fields + b"Content-Length: 2\r\n\r\n{}")), 431, "headers_too_large")
    _json_error(_raw(svc, _head(b"X-Pad: " + b"a" * 7000 + b"\r\nContent-Length: 2\r\n\r\n{}")), 401,
                "missing_signature")


def test_a_long_webhook_id_is_refused_not_stored(service: Service) -> None:
    event = P.generic_event()
    body, headers = signing.generic_signed(event, GENERIC_SECRETS[0], "m" * 201, service.clock())
    assert "201" not in assert_error(service.post("/webhooks/generic", body, headers), 400, "invalid_header")["detail"]
    assert service.stream_len() == 0
    body, headers = signing.generic_signed(event, GENERIC_SECRETS[0], "m" * 200, service.clock())
    assert_accepted(service.post("/webhooks/generic", body, headers))
    assert service.queued()[0]["source_event_id"] == "m" * 200


# --- point 7: a client that disconnects mid-body is a client abort ----------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "postrelay.http", "postrelay.receiver")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def test_a_client_disconnecting_mid_body_is_a_client_abort(service: Service, records: _Records) -> None:
    aborts = 'postrelay_client_aborts_total{path="/webhooks/lob"}'
    before = _metric(service, aborts)
    internal = _metric(service, 'postrelay_events_rejected_total{reason="internal_error"')
    http500 = _metric(service, 'postrelay_http_requests_total{path="/webhooks/lob",status="500"}')
    with socket.create_connection(("127.0.0.1", _port(service)), timeout=10) as sock:
        sock.sendall(_head(b"Content-Length: 1000\r\n\r\n") + b'{"partial": ')
    deadline = time.monotonic() + 10
    while _metric(service, aborts) < before + 1:
        assert time.monotonic() < deadline, "the abort was not counted"
        time.sleep(0.02)
    assert _metric(service, 'postrelay_events_rejected_total{reason="internal_error"') == internal
    assert _metric(service, 'postrelay_http_requests_total{path="/webhooks/lob",status="500"}') == http500
    messages = [(r.name, r.getMessage()) for r in records.records]
    assert not [r for r in records.records if r.exc_info or r.levelno >= logging.ERROR], messages
    deadline = time.monotonic() + 10
    while not [r for r in records.records if r.name == "postrelay.http" and getattr(r, "status", None) == 499
               and getattr(r, "error", None) == "client_disconnected" and getattr(r, "route", None) == "/webhooks/lob"]:
        assert time.monotonic() < deadline, messages
        time.sleep(0.02)


# --- point 11: JSON wherever the app answers, no secret echoed --------------------------------------------


@pytest.mark.parametrize(("method", "path", "location"), [
    ("POST", "/webhooks/lob/", "/webhooks/lob"), ("GET", "/healthz/", "/healthz"),
    ("POST", f"/webhooks/postalytics/{PA_TOKEN}/", f"/webhooks/postalytics/{PA_TOKEN}"),
])
def test_a_trailing_slash_is_a_307_with_a_json_body(service: Service, method: str, path: str, location: str) -> None:
    resp = service.http.request(method, path, content=b"{}" if method == "POST" else None, follow_redirects=False)
    body = assert_error(resp, 307, "trailing_slash")
    assert resp.headers["location"] == service.url + location
    assert PA_TOKEN not in body["detail"]


@pytest.mark.parametrize("path", [
    f"/webhooks/postalytics/{PA_TOKEN}/extra", f"/webhook/postalytics/{PA_TOKEN}", f"/webhooks/{PA_TOKEN}",
    f"/{PA_TOKEN}", f"/v1/mailpieces/{PA_TOKEN}", f"/webhooks/lob/{PA_TOKEN}",
])
def test_a_404_never_echoes_a_path_segment_that_may_be_a_secret(service: Service, path: str) -> None:
    resp = service.post(path, b"{}")
    body = assert_error(resp, 404)
    assert PA_TOKEN not in resp.text and PA_TOKEN[:12] not in body["detail"]


def test_a_404_names_the_route_literals(service: Service) -> None:
    body = assert_error(service.post(f"/webhooks/postalytics/{PA_TOKEN}/extra", b"{}"), 404, "not_found")
    assert body["detail"] == "no route for POST /webhooks/postalytics/…/…"


def _upgrade(path: str) -> bytes:
    key = base64.b64encode(b"0123456789abcdef")
    return (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")


@pytest.mark.parametrize(("path", "status", "code"), [
    ("/webhooks/lob", 405, "method_not_allowed"), ("/nope", 404, "not_found"), ("/healthz", 200, None),
])
def test_a_websocket_upgrade_is_plain_http(service: Service, path: str, status: int, code: str | None) -> None:
    answer = _raw(service, _upgrade(path))
    if code is None:
        assert answer[0] == status and json.loads(answer[2]) == {"status": "ok"}
    else:
        _json_error(answer, status, code)


def test_a_websocket_offered_by_the_server_is_refused_with_json(service: Service) -> None:
    """Under a server that does offer websockets (e.g. uvicorn's default `ws="auto"`), the app refuses them."""
    app = service._server.server.config.app
    server = UvicornThread(app, {"ws": "websockets-sansio"}).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(_upgrade("/webhooks/lob"))
            answer = _read_answer(sock)
    finally:
        server.stop()
    _json_error(answer, 404, "not_found")
    assert "Sec-WebSocket-Accept".lower() not in answer[1]


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n", b"POST /webhooks/lob HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /webhooks/lob HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
])
def test_malformed_http_is_a_json_400(parser_service: Service, request_bytes: bytes) -> None:
    _json_error(_raw(parser_service, request_bytes), 400, "invalid_http")
