"""The lean webhook path (receiver.webhook) answers exactly as the Starlette route it bypasses.

Every case is sent to two receivers built from the same config: the normal app (webhook POSTs for configured
sources take `FastWebhooks`) and the same app with the fast path switched off (`app.webhooks = None`, so
Starlette's router, middleware and exception handlers answer, as before). Status, JSON body, the headers a
client can see and what reached Redis must be the same; so must the request counters in /metrics.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.exceptions

from postrelay import keys
from postrelay.config import parse_config
from receiver.app import create_app
from receiver.webhook import WebhookApp
from tests.receiver.harness import (
    LOB_SECRETS,
    PA_TOKEN,
    PG_SECRETS,
    Clock,
    Service,
    UvicornThread,
    base_config,
    merge,
)
from tests.support import payloads as P
from tests.support import signing

VISIBLE_HEADERS = ("content-type", "content-length", "retry-after", "connection", "location")


def _start(redis_url: str, fast: bool, override: dict[str, Any]) -> Service:
    config = parse_config(merge(base_config(redis_url), override))
    clock = Clock()
    app = create_app(config, clock=clock)
    assert isinstance(app, WebhookApp) and app.webhooks is not None
    if not fast:
        app.webhooks = None
    server = UvicornThread(app).start()
    url = f"http://127.0.0.1:{server.port}"
    return Service(url=url, config=config, redis=redis.Redis.from_url(redis_url), clock=clock,
                   http=httpx.Client(base_url=url, timeout=10), _server=server)


@pytest.fixture
def pair(redis_url: str) -> Iterator[tuple[Service, Service]]:
    """(fast, starlette): the same config, Redis and clock; small body limit and timeout for the odd cases."""
    override = {"server": {"max_body_bytes": 4096, "body_timeout": 0.3}}
    fast, slow = _start(redis_url, True, override), _start(redis_url, False, override)
    yield fast, slow
    fast.close()
    slow.close()


def _answer(svc: Service, method: str, path: str, content: Any = b"", headers: dict[str, str] | None = None
            ) -> dict[str, Any]:
    """What a client sees, plus what reached the stream (then Redis is flushed for the other receiver)."""
    if callable(content):
        content = content()
    resp = svc.http.request(method, path, content=content, headers=headers or {}, follow_redirects=False)
    try:
        body: Any = resp.json()
    except ValueError:
        body = resp.content
    stream = [json.loads(fields[b"e"]) for _, fields in svc.redis.xrange(keys.INGEST_STREAM)]
    for event in stream:
        event.pop("received_at")
    seen = sorted(k.decode() for k in svc.redis.keys("pr:{in}:seen:*"))
    svc.redis.flushall()
    headers = {h: resp.headers.get(h) for h in VISIBLE_HEADERS}
    if headers["location"]:  # a redirect names this server's own port
        headers["location"] = headers["location"].replace(svc.url, "")
    return {"status": resp.status_code, "body": body, "stream": stream, "seen": seen, "headers": headers}


def _same(pair: tuple[Service, Service], method: str, path: str, content: Any = b"",
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    fast, slow = pair
    a = _answer(fast, method, path, content, headers)
    b = _answer(slow, method, path, content, headers)
    assert a == b
    return a


def _pg(event: Any, now: float) -> tuple[bytes, dict[str, str]]:
    return signing.postgrid_json(event, PG_SECRETS[0], now)


def _lob(event: Any, now: float) -> tuple[bytes, dict[str, str]]:
    return signing.lob_signed(event, LOB_SECRETS[0], now)


def test_accepted_duplicate_and_ignored_answers_match(pair: tuple[Service, Service]) -> None:
    now = pair[0].clock()
    body, headers = _pg(P.postgrid_status_update("letter", "printing"), now)
    out = _same(pair, "POST", "/webhooks/postgrid", body, headers)
    assert out["status"] == 200 and out["body"] == {"accepted": 1, "duplicates": 0, "ignored": 0}
    assert len(out["stream"]) == 1 and out["headers"]["content-type"] == "application/json"
    for svc in pair:  # a duplicate on each
        svc.post("/webhooks/postgrid", body, headers)
    dup = [svc.post("/webhooks/postgrid", body, headers) for svc in pair]
    assert [r.json() for r in dup] == [{"accepted": 0, "duplicates": 1, "ignored": 0}] * 2
    assert dup[0].headers["content-length"] == dup[1].headers["content-length"]
    for svc in pair:
        svc.redis.flushall()
    billing = signing.postgrid_json({"id": "evt_bill", "type": "invoice.created", "data": {}}, PG_SECRETS[0], now)
    assert _same(pair, "POST", "/webhooks/postgrid", *billing)["body"] == {"accepted": 0, "duplicates": 0,
                                                                           "ignored": 1}


def test_chunked_body_without_content_length(pair: tuple[Service, Service]) -> None:
    body, headers = _lob(P.lob_event("letter.mailed", P.lob_mailpiece()), pair[0].clock())
    out = _same(pair, "POST", "/webhooks/lob", lambda: iter([body[:100], body[100:700], body[700:]]), headers)
    assert out["status"] == 200 and len(out["stream"]) == 1


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_body(pair: tuple[Service, Service], chunked: bool) -> None:
    body = b'{"pad": "' + b"x" * 6000 + b'"}'
    _, headers = _lob({"pad": "x"}, pair[0].clock())
    content = (lambda: iter([body[:3000], body[3000:]])) if chunked else body
    out = _same(pair, "POST", "/webhooks/lob", content, headers)
    assert out["status"] == 413 and out["body"]["error"] == "body_too_large" and not out["stream"]


@pytest.mark.parametrize(("name", "body", "signed"), [
    ("empty", b"", True), ("not-json", b"{nope", True), ("bom", b"\xef\xbb\xbf[]", True),
    ("nan", b'{"id": NaN}', True), ("huge-int", b'{"id": 123456789012345678901234567890}', True),
    ("deep", b"[" * 70 + b"]" * 70, True), ("surrogate", b'{"id": "\\ud800"}', True),
    ("bad-signature", b"{}", False),
])
def test_rejected_bodies(pair: tuple[Service, Service], name: str, body: bytes, signed: bool) -> None:
    now = pair[0].clock()
    headers = {"PostGrid-Signature": signing.postgrid_signature(body if signed else b"other", PG_SECRETS[0], now)}
    out = _same(pair, "POST", "/webhooks/postgrid", body, headers)
    assert out["status"] in (400, 401) and not out["stream"], out


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/webhooks/lob"), ("PUT", "/webhooks/lob"), ("DELETE", "/webhooks/postgrid"), ("PATCH", "/webhooks/x"),
    ("POST", "/webhooks/sendgrid"), ("POST", "/webhooks/lob/"), ("POST", "/webhooks/lob/extra"),
    ("POST", "/webhooks/"), ("POST", "/webhooks"), ("POST", "/webhooks/postalytics"),
    ("POST", f"/webhooks/postalytics/{PA_TOKEN}/extra"), ("POST", "/webhooks/postalytics/wrong-token-123456"),
    ("GET", f"/webhooks/postalytics/{PA_TOKEN}"),
])
def test_routing_answers(pair: tuple[Service, Service], method: str, path: str) -> None:
    _same(pair, method, path, b"{}" if method != "GET" else b"")


def test_postalytics_token_route(pair: tuple[Service, Service]) -> None:
    body = signing.to_bytes(P.postalytics_event(6))
    out = _same(pair, "POST", f"/webhooks/postalytics/{PA_TOKEN}", body, {"Content-Type": "application/json"})
    assert out["status"] == 200 and len(out["stream"]) == 1


def test_unconfigured_source_stays_with_starlette(redis_url: str) -> None:
    svc = _start(redis_url, True, {"sources": {"lob": None}})
    try:
        assert svc.post("/webhooks/lob", b"{}").json()["error"] == "source_not_configured"
        assert svc.post(f"/webhooks/postalytics/{PA_TOKEN}", b"{}").status_code != 404
    finally:
        svc.close()


def _break_enqueue(svc: Service, exc: Exception) -> None:
    async def enqueue(events: Any) -> tuple[int, int]:
        raise exc

    svc._server.server.config.app.state.receiver.queue.enqueue = enqueue  # type: ignore[attr-defined]


def test_redis_unavailable_is_503_with_retry_after(pair: tuple[Service, Service]) -> None:
    for svc in pair:
        _break_enqueue(svc, redis.exceptions.ConnectionError("down"))
    body, headers = _lob(P.lob_event("letter.mailed", P.lob_mailpiece()), pair[0].clock())
    out = _same(pair, "POST", "/webhooks/lob", body, headers)
    assert out["status"] == 503 and out["body"]["error"] == "redis_unavailable"
    assert out["headers"]["retry-after"] == "17"


def test_unexpected_error_is_500_and_closes_the_connection(pair: tuple[Service, Service]) -> None:
    for svc in pair:
        _break_enqueue(svc, RuntimeError("boom: internal detail"))
    body, headers = _lob(P.lob_event("letter.mailed", P.lob_mailpiece()), pair[0].clock())
    out = _same(pair, "POST", "/webhooks/lob", body, headers)
    assert out["status"] == 500 and out["body"]["error"] == "internal_error"
    assert out["headers"]["connection"] == "close" and "boom" not in json.dumps(out["body"])


def _raw(svc: Service, request: bytes) -> bytes:
    port = int(svc.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    break
    return data


@pytest.mark.parametrize("request_bytes", [
    # slow body: 408 after body_timeout
    b"POST /webhooks/lob HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"partial\":",
    # a declared length past the limit: 413 before reading
    b"POST /webhooks/lob HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999999999999\r\n\r\n{}",
    # no Content-Length and no body (HTTP/1.1 without Transfer-Encoding: an empty body)
    b"POST /webhooks/lob HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"POST /webhooks/postgrid HTTP/1.0\r\n\r\n",
])
def test_raw_requests(pair: tuple[Service, Service], request_bytes: bytes) -> None:
    answers = []
    for svc in pair:
        data = _raw(svc, request_bytes)
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(b":") for h in header_lines)}
        headers.pop(b"date", None)
        headers.pop(b"server", None)
        answers.append((status_line, headers, body))
    assert answers[0] == answers[1]
    assert answers[0][0].split()[1] in (b"400", b"401", b"408", b"413")


def _series(svc: Service) -> dict[str, float]:
    out = {}
    for line in svc.http.get("/metrics").text.splitlines():
        if line.startswith(("postrelay_http_requests_total{", "postrelay_events_received_total{",
                            "postrelay_events_rejected_total{", "postrelay_signature_failures_total{",
                            "postrelay_ingest_seconds_count")):
            name, _, value = line.rpartition(" ")
            if 'path="/metrics"' not in name:
                out[name] = float(value)
    return out


def test_counters_match(pair: tuple[Service, Service]) -> None:
    now = pair[0].clock()
    ok = _lob(P.lob_event("letter.mailed", P.lob_mailpiece()), now)
    for svc in pair:
        svc.post("/webhooks/lob", *ok)
        svc.post("/webhooks/lob", *ok)  # duplicate
        svc.post("/webhooks/lob", b"{}", {"Lob-Signature": "00", "Lob-Signature-Timestamp": str(int(now))})
        svc.post("/webhooks/lob", b"x" * 5000)
        svc.post(f"/webhooks/postalytics/{PA_TOKEN}", signing.to_bytes(P.postalytics_event(6)))
        svc.post("/webhooks/postalytics/not-the-token-0000", b"{}")
        svc.post("/webhooks/nope", b"{}")
        svc.http.get("/webhooks/lob")
        svc.redis.flushall()
    fast, slow = (_series(svc) for svc in pair)
    assert fast == slow
    assert fast['postrelay_http_requests_total{path="/webhooks/lob",status="200"}'] == 2
    assert fast['postrelay_http_requests_total{path="/webhooks/postalytics/{token}",status="401"}'] == 1
    assert fast["postrelay_ingest_seconds_count"] == 7  # every webhook request, the unknown source too
