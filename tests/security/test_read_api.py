"""The read API: a bearer token in the Authorization header only, compared in constant time."""

from __future__ import annotations

import hmac

import pytest

from postrelay.receiver import auth as receiver_auth
from tests.receiver.harness import API_TOKEN, Service, assert_error
from tests.support import payloads as P


@pytest.fixture
def stored(service: Service) -> Service:
    assert service.post_generic(P.generic_event(piece_id="mp_read")).status_code == 200
    service.apply_queued()
    assert service.get_piece("generic", "mp_read").status_code == 200
    return service


def test_no_token(stored: Service) -> None:
    assert_error(stored.get_piece("generic", "mp_read", token=None), 401, "missing_token")


@pytest.mark.parametrize("token", ["wrong-token-0123456789abcdef", API_TOKEN[:-1], API_TOKEN + "x", API_TOKEN.upper(),
                                   API_TOKEN[:4], "a", "\u00e9" * 8])
def test_wrong_token(stored: Service, token: str) -> None:
    resp = stored.http.get("/v1/mailpieces/generic/mp_read", headers={"Authorization": f"Bearer {token}".encode()})
    assert_error(resp, 401)
    assert API_TOKEN not in resp.text


@pytest.mark.parametrize("header", [f"Basic {API_TOKEN}", f"Token {API_TOKEN}", API_TOKEN, f"Bearer{API_TOKEN}"])
def test_other_schemes(stored: Service, header: str) -> None:
    assert_error(stored.http.get("/v1/mailpieces/generic/mp_read", headers={"Authorization": header}), 401)


@pytest.mark.parametrize("param", ["token", "api_token", "access_token", "bearer", "Authorization"])
def test_token_in_the_query_string_is_not_accepted(stored: Service, param: str) -> None:
    resp = stored.http.get("/v1/mailpieces/generic/mp_read", params={param: API_TOKEN})
    assert_error(resp, 401, "missing_token")
    resp = stored.http.get("/v1/mailpieces/generic/mp_read", params={param: f"Bearer {API_TOKEN}"})
    assert_error(resp, 401, "missing_token")


def test_token_in_a_cookie_is_not_accepted(stored: Service) -> None:
    stored.http.cookies.set("token", API_TOKEN)
    try:
        assert_error(stored.http.get("/v1/mailpieces/generic/mp_read"), 401, "missing_token")
    finally:
        stored.http.cookies.clear()


def test_scheme_is_case_insensitive(stored: Service) -> None:
    resp = stored.http.get("/v1/mailpieces/generic/mp_read", headers={"Authorization": f"bearer {API_TOKEN}"})
    assert resp.status_code == 200


def test_read_api_off_without_a_configured_token(make_service) -> None:
    svc = make_service({"server": {"api_token": None}})
    assert_error(svc.get_piece("generic", "x"), 401, "api_disabled")
    assert_error(svc.http.get("/v1/mailpieces/generic/x", headers={"Authorization": f"Bearer {API_TOKEN}"}), 401)


def test_comparison_is_constant_time_for_every_candidate(stored: Service, monkeypatch) -> None:
    """Every wrong token, whatever its length or common prefix, goes through hmac.compare_digest (no early
    exit on length or first differing byte), against the configured token."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(receiver_auth.hmac, "compare_digest", spy)
    candidates = ["x", API_TOKEN[:10], API_TOKEN[:-1] + "!", API_TOKEN + "padding" * 10, API_TOKEN]
    for token in candidates:
        stored.http.get("/v1/mailpieces/generic/mp_read", headers={"Authorization": f"Bearer {token}"})
    assert [b for _, b in calls] == [t.encode() for t in candidates]
    assert all(a == API_TOKEN.encode() for a, _ in calls)
