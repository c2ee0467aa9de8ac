"""Property-based tests: every parser and normalizer, and every endpoint over HTTP, on hostile input.

Whatever the bytes and headers: an HTTPError with a client status (400/401/404/408/413), never another
exception (a 500); and whatever is accepted must survive the trip through the ingest stream (the worker
parses it back), or an answered-200 event would never reach its timeline.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers
from starlette.requests import Request

from postrelay.core import keys
from postrelay.core.config import ConfigError, load_config, parse_config
from postrelay.core.events import CanonicalEvent
from postrelay.core.timeline import _apply_args
from postrelay.receiver.body import read_body
from postrelay.receiver.errors import HTTPError
from postrelay.receiver.providers import generic, lob, postalytics, postgrid
from tests.receiver.harness import API_TOKEN, GENERIC_SECRETS, LOB_SECRETS, PA_TOKEN, PG_SECRETS, Service
from tests.security.strategies import (
    BODIES,
    HEADER_VALUES,
    JSON,
    SCALARS,
    mutated,
    nested,
    nested_text,
    round_trips,
    to_bytes,
)
from tests.support import payloads, signing

SOAK = os.environ.get("POSTRELAY_SOAK", "") not in ("", "0")
EXAMPLES = 600 if SOAK else 120
FAST = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
HTTP = settings(max_examples=EXAMPLES // 3, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
NOW = payloads.NOW_TS
RECEIVED = datetime.fromtimestamp(NOW, UTC)
SETTINGS = parse_config({"sources": {"postgrid": {"secrets": PG_SECRETS}, "lob": {"secrets": LOB_SECRETS},
                                     "postalytics": {"token": PA_TOKEN}, "generic": {"secrets": GENERIC_SECRETS}}}).sources
CLIENT_ERRORS = {400, 401}


def _through(fn: Any, *args: Any) -> Any:
    """Run a receiver step: returns its result, or None for an HTTPError with a client status."""
    try:
        return fn(*args)
    except HTTPError as exc:
        assert exc.status in CLIENT_ERRORS, (exc.status, exc.code, exc.detail)
        assert exc.detail and exc.code
        return None


def _accepts(provider: Any, payload: Any) -> None:
    normalized = _through(provider.normalize, payload, RECEIVED)
    if normalized is not None:
        for event in normalized.events:
            round_trips(event)
            _apply_args(event, 86400.0)  # the timeline script's arguments build for every accepted event


# --- verify() on any bytes and headers -------------------------------------------------------------------------


@FAST
@given(body=BODIES, sig=st.none() | HEADER_VALUES, ts=st.none() | HEADER_VALUES | st.integers().map(str))
def test_lob_verify_any_bytes(body: bytes, sig: str | None, ts: str | None) -> None:
    headers = Headers({k: v for k, v in {"lob-signature": sig, "lob-signature-timestamp": ts}.items() if v is not None})
    _through(lob.verify, body, headers, SETTINGS.lob, NOW)


@FAST
@given(body=BODIES, header=st.none() | HEADER_VALUES | st.builds(lambda t, v: f"t={t},v1={v}", HEADER_VALUES, HEADER_VALUES))
def test_postgrid_verify_any_bytes(body: bytes, header: str | None) -> None:
    headers = Headers({"postgrid-signature": header} if header is not None else {})
    _through(postgrid.verify, body, headers, SETTINGS.postgrid, NOW)


@FAST
@given(body=BODIES, wid=st.none() | HEADER_VALUES, ts=st.none() | HEADER_VALUES | st.integers().map(str),
       sig=st.none() | HEADER_VALUES | HEADER_VALUES.map(lambda v: f"v1,{v}"))
def test_generic_verify_any_bytes(body: bytes, wid: str | None, ts: str | None, sig: str | None) -> None:
    raw = {"webhook-id": wid, "webhook-timestamp": ts, "webhook-signature": sig}
    _through(generic.verify, body, Headers({k: v for k, v in raw.items() if v is not None}), SETTINGS.generic, NOW)


@FAST
@given(body=BODIES, token=st.text(max_size=40))
def test_postalytics_verify_any_bytes(body: bytes, token: str) -> None:
    _through(postalytics.verify, body, token, SETTINGS.postalytics)


# --- correctly signed hostile bodies: verify, then normalize -----------------------------------------------------


@FAST
@given(body=BODIES)
def test_signed_garbage_is_a_400_for_every_provider(body: bytes) -> None:
    lob_payload = _through(lob.verify, body, Headers(signing.lob_headers(body, LOB_SECRETS[0], NOW)), SETTINGS.lob, NOW)
    if lob_payload is not None:
        _accepts(lob, lob_payload)
    pg = _through(postgrid.verify, body, Headers(signing.postgrid_json(body, PG_SECRETS[0], NOW)[1]), SETTINGS.postgrid,
                  NOW)
    if pg is not None:
        _accepts(postgrid, pg)
    try:
        headers = Headers(signing.standard_webhooks_headers(body, GENERIC_SECRETS[0], "msg_prop", NOW))
    except UnicodeDecodeError:  # the signing library needs text; the receiver answers such bodies 400
        headers = None
    if headers is not None:
        g = _through(generic.verify, body, headers, SETTINGS.generic, NOW)
        if g is not None:
            _accepts(generic, g)
    pa = _through(postalytics.verify, body, PA_TOKEN, SETTINGS.postalytics)
    if pa is not None:
        _accepts(postalytics, pa)


@FAST
@given(st.data())
def test_mutated_lob_events(data: st.DataObject) -> None:
    base = payloads.lob_event("letter.in_transit", payloads.lob_mailpiece(
        "letter", tracking_events=[payloads.lob_tracking_event("In Transit", "2024-05-05T10:00:00Z")]))
    event = data.draw(mutated(base))
    body = to_bytes(event)
    payload = _through(lob.verify, body, Headers(signing.lob_headers(body, LOB_SECRETS[0], NOW)), SETTINGS.lob, NOW)
    if payload is not None:
        _accepts(lob, payload)


@FAST
@given(data=st.data(), fmt=st.sampled_from(["json", "jwt"]))
def test_mutated_postgrid_events(data: st.DataObject, fmt: str) -> None:
    base = data.draw(st.sampled_from([
        payloads.postgrid_status_update("letter", "printing"),
        payloads.postgrid_imb_update("postcard", "out_for_delivery"),
        payloads.postgrid_tracker_visit(),
    ]))
    event = data.draw(mutated(base))
    if fmt == "jwt":
        try:
            body = signing.postgrid_jwt(event, PG_SECRETS[0], iat=NOW)
        except (TypeError, ValueError):
            assume(False)
        headers = Headers({})
    else:
        body, headers_dict = signing.postgrid_json(to_bytes(event), PG_SECRETS[0], NOW)
        headers = Headers(headers_dict)
    payload = _through(postgrid.verify, body, headers, SETTINGS.postgrid, NOW)
    if payload is not None:
        _accepts(postgrid, payload)


@FAST
@given(st.data())
def test_mutated_postalytics_events(data: st.DataObject) -> None:
    base = payloads.postalytics_event(data.draw(st.sampled_from([6, "ProcessedForDelivery", 11, "7", "Error"])),
                                      meta_fields={"crm_id": "C-1"})
    payload = _through(postalytics.verify, to_bytes(data.draw(mutated(base))), PA_TOKEN, SETTINGS.postalytics)
    if payload is not None:
        _accepts(postalytics, payload)


@FAST
@given(st.data())
def test_mutated_generic_events(data: st.DataObject) -> None:
    event = data.draw(mutated(payloads.generic_event()))
    body = to_bytes(event)
    headers = Headers(signing.standard_webhooks_headers(body, GENERIC_SECRETS[0], "msg_mut", NOW))
    payload = _through(generic.verify, body, headers, SETTINGS.generic, NOW)
    if payload is not None:
        _accepts(generic, payload)


@pytest.mark.parametrize("depth", [10, 60, 62, 63, 150, 199, 250, 600, 5000])
def test_deep_metadata_is_accepted_only_if_the_worker_can_read_it_back(depth: int) -> None:
    """Regression: metadata ~200 levels deep was answered 200 and then dropped as poison by the dispatcher
    (pydantic's JSON parser stops at 200 levels); ~500 levels was a 500 (its serializer stops earlier)."""
    deep = nested_text(depth).encode()
    body = to_bytes(payloads.generic_event(metadata={"x": "__DEEP__"})).replace(b'"__DEEP__"', deep)
    headers = Headers(signing.standard_webhooks_headers(body, GENERIC_SECRETS[0], "msg_deep", NOW))
    payload = _through(generic.verify, body, headers, SETTINGS.generic, NOW)
    if depth + 2 <= 64:  # the event object and its metadata are two levels
        assert payload is not None
        for e in generic.normalize(payload, RECEIVED).events:
            round_trips(e)
    else:
        assert payload is None
    lob_body = to_bytes(payloads.lob_event("letter.mailed", payloads.lob_mailpiece("letter", metadata={"x": "__DEEP__"})))
    lob_body = lob_body.replace(b'"__DEEP__"', deep)
    lob_payload = _through(lob.verify, lob_body, Headers(signing.lob_headers(lob_body, LOB_SECRETS[0], NOW)), SETTINGS.lob,
                           NOW)
    if lob_payload is not None:
        _accepts(lob, lob_payload)
    if depth < 900:  # PyJWT's own json.dumps/loads: deeper claims cannot even be signed
        jwt_body = signing.postgrid_jwt({**payloads.postgrid_status_update("letter", "printing"), "extra": nested(depth)},
                                        PG_SECRETS[0], iat=NOW)
        pg_payload = _through(postgrid.verify, jwt_body, Headers({}), SETTINGS.postgrid, NOW)
        assert (pg_payload is None) == (depth + 1 > 64)
        if pg_payload is not None:
            _accepts(postgrid, pg_payload)


# --- the body reader ------------------------------------------------------------------------------------------


def _request(headers: list[tuple[bytes, bytes]], chunks: list[bytes], delay: float = 0.0) -> Request:
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if delay:
            await asyncio.sleep(delay)
        if not pending:
            return {"type": "http.request", "body": b"", "more_body": False}
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


@FAST
@given(length=st.none() | st.text(max_size=30) | st.integers(0, 10**30).map(str) | st.just("1" * 5000)
       | st.sampled_from(["²", "١٢", "+5", " 5", "5 ", "-1", "0x10", "1_000"]),
       chunks=st.lists(st.binary(max_size=700), max_size=6))
def test_read_body_any_content_length_and_chunks(length: str | None, chunks: list[bytes]) -> None:
    """Regression: a Content-Length of non-ASCII digits ("²") or over 4300 digits was a 500."""
    headers = [] if length is None else [(b"content-length", length.encode("latin-1", "replace"))]
    try:
        body = asyncio.run(read_body(_request(headers, chunks), 2048, 5.0))
    except HTTPError as exc:
        assert exc.status in {400, 413}, exc.status
    else:
        assert body == b"".join(chunks) and len(body) <= 2048


def test_read_body_slow_sender_is_cut_at_the_timeout() -> None:
    with pytest.raises(HTTPError) as err:
        asyncio.run(read_body(_request([], [b"a"] * 50, delay=0.05), 10_000, 0.5))
    assert err.value.status == 408


# --- the config loader ----------------------------------------------------------------------------------------


@FAST
@given(data=st.dictionaries(st.sampled_from(["server", "sources", "delivery", "destinations", "routes", "followups",
                                             "followup_estimates", "x"]),
                            JSON | st.dictionaries(st.text(max_size=10), JSON, max_size=4), max_size=4))
def test_config_any_document_is_a_config_or_a_config_error(data: dict[str, Any]) -> None:
    try:
        parse_config(data)
    except ConfigError as exc:
        assert str(exc)


@FAST
@given(text=st.text(max_size=200) | st.sampled_from(["[server]\nport = 99999", "[[routes]]\nto = 1", "a = ${X",
                                                      "[sources.lob]\nsecrets = ['${POSTRELAY_NOPE}']"]))
def test_config_loader_any_file(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # lone surrogates make the file invalid UTF-8
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc)


@FAST
@given(raw=st.binary(max_size=100))
def test_config_loader_any_bytes(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    """Regression: a config file that is not UTF-8 raised UnicodeDecodeError (a traceback at start-up)."""
    path = tmp_path_factory.mktemp("cfgb") / "c.toml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(exc)


# --- every endpoint over HTTP ------------------------------------------------------------------------------------

PATHS = ["/webhooks/postgrid", "/webhooks/lob", "/webhooks/generic", f"/webhooks/postalytics/{PA_TOKEN}",
         "/webhooks/postalytics/wrong-token-0000", "/webhooks/unknown"]
SIGNATURE_HEADERS = ["PostGrid-Signature", "Lob-Signature", "Lob-Signature-Timestamp", "webhook-id",
                     "webhook-timestamp", "webhook-signature", "Content-Type", "Authorization", "Content-Encoding"]


def _assert_client_error(resp: Any, allowed: set[int]) -> None:
    assert resp.status_code in allowed, (resp.status_code, resp.text[:300])
    if resp.status_code != 200:
        body = resp.json()
        assert set(body) == {"error", "detail"}, body


@HTTP
@given(path=st.sampled_from(PATHS), body=BODIES,
       headers=st.dictionaries(st.sampled_from(SIGNATURE_HEADERS), HEADER_VALUES.map(lambda v: v.strip()), max_size=4))
def test_webhook_endpoints_any_bytes_and_headers(service: Service, path: str, body: bytes,
                                                 headers: dict[str, str]) -> None:
    resp = service.post(path, body, {k: v.encode("latin-1") for k, v in headers.items()})
    _assert_client_error(resp, {200, 400, 401, 404, 408, 413})


@HTTP
@given(body=BODIES, fmt=st.sampled_from(["lob", "generic", "postgrid", "postalytics"]))
def test_correctly_signed_garbage_over_http_never_500s(service: Service, body: bytes, fmt: str) -> None:
    if fmt == "lob":
        resp = service.post("/webhooks/lob", body, signing.lob_headers(body, LOB_SECRETS[0], service.clock()))
    elif fmt == "postgrid":
        resp = service.post("/webhooks/postgrid", body, signing.postgrid_json(body, PG_SECRETS[0], service.clock())[1])
    elif fmt == "postalytics":
        resp = service.post(f"/webhooks/postalytics/{PA_TOKEN}", body, {"Content-Type": "application/json"})
    else:
        try:
            headers = signing.standard_webhooks_headers(body, GENERIC_SECRETS[0], "msg_http", service.clock())
        except UnicodeDecodeError:
            headers = {"webhook-id": "x", "webhook-timestamp": str(int(service.clock())), "webhook-signature": "v1,AA=="}
        resp = service.post("/webhooks/generic", body, headers)
    _assert_client_error(resp, {200, 400, 401})
    for _, fields in service.redis.xrange(keys.INGEST_STREAM):
        CanonicalEvent.model_validate_json(fields[b"e"])  # whatever was accepted, the worker can read


@HTTP
@given(source=st.text(max_size=20), piece=st.text(max_size=40),
       auth=st.none() | HEADER_VALUES | st.just(f"Bearer {API_TOKEN}"), query=st.none() | SCALARS.map(str))
def test_read_api_any_path_and_auth(service: Service, source: str, piece: str, auth: str | None,
                                    query: str | None) -> None:
    from urllib.parse import quote

    url = f"/v1/mailpieces/{quote(source, safe='') or 'x'}/{quote(piece, safe='') or 'y'}"
    headers = {"Authorization": auth.strip().encode("latin-1")} if auth is not None else {}
    params = {"token": query} if query is not None else None
    resp = service.http.get(url, headers=headers, params=params)
    _assert_client_error(resp, {200, 400, 401, 404})


@HTTP
@given(method=st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "OPTIONS"]), path=st.sampled_from(
    [*PATHS, "/healthz", "/readyz", "/metrics", "/openapi.json", "/", "/v1/mailpieces/lob", "/%00", "/.."]),
    query=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
def test_any_method_and_path(service: Service, method: str, path: str, query: dict[str, str]) -> None:
    resp = service.http.request(method, path, params=query)
    # 307: Starlette's trailing-slash redirect (e.g. /v1/mailpieces/lob -> /v1/mailpieces/lob/)
    assert resp.status_code in {200, 307, 400, 401, 404, 405, 503}, (resp.status_code, resp.text[:200])
    assert resp.status_code != 500
    if resp.status_code >= 400 and resp.headers.get("content-type", "").startswith("application/json"):
        assert "error" in resp.json()


def test_json_strategy_sanity() -> None:
    """The strategies above do produce the nasty cases (guards against a silently weakened strategy)."""
    assert JSON is not None and nested(3) == [{"a": [1]}]
