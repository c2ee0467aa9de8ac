"""Forged and replayed webhooks, per provider: wrong secret, truncated, another scheme, outside the window,
a signature for another body, JWTs with `alg: none` / RS / ES algorithms, and JWTs signed with the right
secret but expired, not yet valid or with malformed claims. Every one is a 401 (or a 400 for an unparsable
body) with nothing stored; a replay inside the window is accepted as a duplicate, stored once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import jwt
import pytest

from postrelay.core import keys
from tests.receiver.harness import GENERIC_SECRETS, LOB_SECRETS, PA_TOKEN, PG_SECRETS, Service, assert_error
from tests.support import payloads as P
from tests.support import signing

LOB_EVENT = P.lob_event("letter.mailed", P.lob_mailpiece("letter"))
PG_EVENT = P.postgrid_status_update("letter", "printing")
GENERIC_EVENT = P.generic_event()
OTHER_BODY = signing.to_bytes({**GENERIC_EVENT, "type": "returned_to_sender"})


def _post_lob(svc: Service, body: bytes, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return svc.post("/webhooks/lob", body, headers)


def _lob(svc: Service, secret: str = LOB_SECRETS[0], ts: float | None = None, body: bytes | None = None,
         mutate: Callable[[dict[str, str]], dict[str, str]] = lambda h: h, sign_body: bytes | None = None):
    body = body if body is not None else signing.to_bytes(LOB_EVENT)
    headers = signing.lob_headers(sign_body if sign_body is not None else body, secret,
                                  svc.clock() if ts is None else ts)
    return svc.post("/webhooks/lob", body, mutate(headers))


def _pg_json(svc: Service, secret: str = PG_SECRETS[0], ts: float | None = None, body: bytes | None = None,
             mutate: Callable[[dict[str, str]], dict[str, str]] = lambda h: h, sign_body: bytes | None = None):
    body = body if body is not None else signing.to_bytes(PG_EVENT)
    headers = {"Content-Type": "application/json",
               "PostGrid-Signature": signing.postgrid_signature(sign_body if sign_body is not None else body, secret,
                                                                svc.clock() if ts is None else ts)}
    return svc.post("/webhooks/postgrid", body, mutate(headers))


def _generic(svc: Service, secret: str = GENERIC_SECRETS[0], ts: float | None = None, body: bytes | None = None,
             mutate: Callable[[dict[str, str]], dict[str, str]] = lambda h: h, sign_body: bytes | None = None):
    body = body if body is not None else signing.to_bytes(GENERIC_EVENT)
    headers = signing.standard_webhooks_headers(sign_body if sign_body is not None else body, secret, "msg_sec_1",
                                                svc.clock() if ts is None else ts)
    return svc.post("/webhooks/generic", body, mutate(headers))


SENDERS = {"lob": _lob, "postgrid_json": _pg_json, "generic": _generic}
WRONG_SECRETS = {"lob": "lob_secret_attacker_guess_000", "postgrid_json": "pg_secret_attacker_guess_00000000",
                 "generic": signing.make_whsec(b"attacker")}
SIG_HEADER = {"lob": "Lob-Signature", "postgrid_json": "PostGrid-Signature", "generic": "webhook-signature"}
TOLERANCE = {"lob": 300, "postgrid_json": 8 * 3600, "generic": 300}


def _nothing_stored(svc: Service) -> None:
    assert svc.stream_len() == 0


@pytest.mark.parametrize("kind", SENDERS)
def test_valid_signature_is_accepted(service: Service, kind: str) -> None:
    assert SENDERS[kind](service).status_code == 200


@pytest.mark.parametrize("kind", SENDERS)
def test_wrong_secret(service: Service, kind: str) -> None:
    assert_error(SENDERS[kind](service, secret=WRONG_SECRETS[kind]), 401, "invalid_signature")
    _nothing_stored(service)


@pytest.mark.parametrize("kind", SENDERS)
@pytest.mark.parametrize("cut", [1, 8, 40])
def test_truncated_signature(service: Service, kind: str, cut: int) -> None:
    header = SIG_HEADER[kind]
    resp = SENDERS[kind](service, mutate=lambda h: {**h, header: h[header][:-cut]})
    assert_error(resp, 401)
    _nothing_stored(service)


@pytest.mark.parametrize("kind", SENDERS)
def test_signature_for_another_body(service: Service, kind: str) -> None:
    assert_error(SENDERS[kind](service, sign_body=OTHER_BODY), 401, "invalid_signature")
    _nothing_stored(service)


@pytest.mark.parametrize("kind", SENDERS)
@pytest.mark.parametrize("direction", [-1, 1])
def test_replayed_outside_the_window(service: Service, kind: str, direction: int) -> None:
    resp = SENDERS[kind](service, ts=service.clock() + direction * (TOLERANCE[kind] + 5))
    assert_error(resp, 401, "timestamp_out_of_tolerance")
    _nothing_stored(service)


@pytest.mark.parametrize("kind", SENDERS)
def test_replayed_inside_the_window_is_a_duplicate(service: Service, kind: str) -> None:
    assert SENDERS[kind](service).json()["accepted"] >= 1
    service.clock.advance(TOLERANCE[kind] - 10)
    again = SENDERS[kind](service, ts=service.clock() - (TOLERANCE[kind] - 10))
    assert again.status_code == 200 and again.json()["accepted"] == 0 and again.json()["duplicates"] >= 1
    assert service.stream_len() == len(service.queued()) >= 1


def _sha1_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha1).hexdigest()


def test_other_schemes_are_refused(service: Service) -> None:
    body = signing.to_bytes(LOB_EVENT)
    ts = str(int(service.clock()))
    # Lob: SHA-1 instead of SHA-256; base64 instead of hex; the signature in PostGrid's header format
    for sig in (_sha1_hex(LOB_SECRETS[0], ts.encode() + b"." + body),
                base64.b64encode(bytes.fromhex(signing.hmac_hex(LOB_SECRETS[0], ts.encode() + b"." + body))).decode(),
                f"t={ts},v1={signing.hmac_hex(LOB_SECRETS[0], ts.encode() + b'.' + body)}"):
        assert_error(service.post("/webhooks/lob", body, {"Lob-Signature": sig, "Lob-Signature-Timestamp": ts}), 401)
    # PostGrid: a v0 scheme, an X-PostGrid-Signature header, a Lob-style header
    pg = signing.to_bytes(PG_EVENT)
    v1 = signing.hmac_hex(PG_SECRETS[0], ts.encode() + b"." + pg)
    for headers in ({"PostGrid-Signature": f"t={ts},v0={v1}"}, {"X-PostGrid-Signature": f"t={ts},v1={v1}"},
                    {"Lob-Signature": v1, "Lob-Signature-Timestamp": ts}):
        assert_error(service.post("/webhooks/postgrid", pg, {"Content-Type": "application/json", **headers}), 401)
    # Standard Webhooks: a v1a (asymmetric) or v2 label on a valid HMAC, or the HMAC without a label
    gb = signing.to_bytes(GENERIC_EVENT)
    good = signing.standard_webhooks_headers(gb, GENERIC_SECRETS[0], "msg_x", service.clock())
    mac = good["webhook-signature"].split(",", 1)[1]
    for sig in (f"v1a,{mac}", f"v2,{mac}", mac, f"v1,{mac}"[:-2] + "=="):
        assert_error(service.post("/webhooks/generic", gb, {**good, "webhook-signature": sig}), 401)
    _nothing_stored(service)


def test_postalytics_wrong_truncated_or_extended_token(service: Service) -> None:
    body = signing.to_bytes(P.postalytics_event(6))
    for token in ("pa_tok_attacker_guess_000000", PA_TOKEN[:-1], PA_TOKEN + "x", PA_TOKEN.upper(), PA_TOKEN[:8]):
        assert_error(service.post(f"/webhooks/postalytics/{token}", body, {"Content-Type": "application/json"}), 401)
    _nothing_stored(service)


# --- JWTs (PostGrid's default format) ---------------------------------------------------------------------------


def _jwt_post(svc: Service, token: bytes):  # type: ignore[no-untyped-def]
    return svc.post("/webhooks/postgrid", token, {"Content-Type": "application/jwt"})


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "RS256", "RS512", "ES256", "ES384", "PS256", "EdDSA", "HS512"])
def test_jwt_other_algorithms_are_refused(service: Service, alg: str) -> None:
    good = signing.postgrid_jwt(PG_EVENT, PG_SECRETS[0], iat=service.clock())
    signature = base64.urlsafe_b64decode(good.rsplit(b".", 1)[1] + b"==")  # a valid HS256 MAC, relabelled
    for sig in (b"", signature):
        assert_error(_jwt_post(service, signing.forged_jwt(PG_EVENT, {"alg": alg, "typ": "JWT"}, sig)), 401)
    _nothing_stored(service)


def test_jwt_hs256_key_confusion_with_a_public_key_header(service: Service) -> None:
    """An attacker signs HS256 with a 'public key' and points `jwk`/`kid`/`jku` at it: only our secrets count."""
    attacker = "attacker-chosen-key-0123456789abcdef"
    for extra in ({"kid": "../../etc/passwd"}, {"jku": "https://attacker.example/jwks.json"},
                  {"jwk": {"kty": "oct", "k": base64.urlsafe_b64encode(attacker.encode()).decode()}}):
        token = jwt.encode({**PG_EVENT, "iat": int(service.clock())}, attacker, algorithm="HS256", headers=extra).encode()
        assert_error(_jwt_post(service, token), 401)
    _nothing_stored(service)


@pytest.mark.parametrize(("claims", "code"), [
    ({"exp": -8 * 3600 - 60}, "timestamp_out_of_tolerance"),
    ({"nbf": 8 * 3600 + 60}, "timestamp_out_of_tolerance"),
    ({"iat": -8 * 3600 - 60}, "timestamp_out_of_tolerance"),
    ({"iat": 8 * 3600 + 60}, "timestamp_out_of_tolerance"),
])
def test_jwt_right_secret_but_out_of_time(service: Service, claims: dict[str, int], code: str) -> None:
    now = int(service.clock())
    token = jwt.encode({**PG_EVENT, **{k: now + v for k, v in claims.items()}}, PG_SECRETS[0], algorithm="HS256")
    assert_error(_jwt_post(service, token.encode()), 401, code)
    _nothing_stored(service)


@pytest.mark.parametrize("claims", [
    {"exp": "tomorrow"}, {"iat": None, "nbf": [1]}, {"exp": True}, {"iat": {"$date": 1}}, {"nbf": "NaN"},
    {"exp": 1e400},
])
def test_jwt_right_secret_malformed_time_claims(service: Service, claims: dict) -> None:
    token = jwt.encode({**PG_EVENT, **claims}, PG_SECRETS[0], algorithm="HS256").encode()
    assert_error(_jwt_post(service, token), 401)
    _nothing_stored(service)


@pytest.mark.parametrize("payload", [b"[]", b"42", b'"a string"', b"not json", b"\xff\xfe", b"{" * 5000,
                                     json.dumps({"type": "letter.updated"}).encode()])
def test_jwt_right_secret_malformed_claims_body(service: Service, payload: bytes) -> None:
    head = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(payload).rstrip(b"=")
    mac = hmac.new(PG_SECRETS[0].encode(), head + b"." + body, hashlib.sha256).digest()
    token = head + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")
    resp = _jwt_post(service, token)
    assert resp.status_code in {400, 401}, resp.text
    assert_error(resp, resp.status_code)
    _nothing_stored(service)


def test_jwt_signed_with_right_secret_and_valid_claims_is_accepted(service: Service) -> None:
    token = signing.postgrid_jwt(PG_EVENT, PG_SECRETS[0], iat=service.clock(), exp=service.clock() + 60)
    assert _jwt_post(service, token).status_code == 200
    assert service.redis.xlen(keys.INGEST_STREAM) == 1
