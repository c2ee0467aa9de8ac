"""Named API tokens with roles: read tokens read, operate tokens also act; the legacy api_token operates."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from postrelay.core.config import ServerConfig
from postrelay.receiver.auth import bearer
from postrelay.receiver.errors import HTTPError

SERVER = ServerConfig(api_token="legacy-token-0123456789",
                      tokens=[{"name": "marketing", "token": "read-token-0123456789", "role": "read"},
                              {"name": "ops", "token": "operate-token-0123456789", "role": "operate"}])


def _auth(value: str, role: str = "read") -> str:
    return bearer(SERVER, Headers({"authorization": value}), role).name  # type: ignore[arg-type]


def test_each_token_is_recognised_by_name() -> None:
    assert _auth("Bearer read-token-0123456789") == "marketing"
    assert _auth("Bearer operate-token-0123456789", "operate") == "ops"
    assert _auth("bearer legacy-token-0123456789", "operate") == "api_token"


@pytest.mark.parametrize(("header", "status", "code"), [
    ("", 401, "missing_token"),
    ("Basic read-token-0123456789", 401, "missing_token"),
    ("Bearer nope-nope-nope-nope-nope", 401, "invalid_token"),
])
def test_bad_tokens_are_401(header: str, status: int, code: str) -> None:
    with pytest.raises(HTTPError) as err:
        _auth(header)
    assert (err.value.status, err.value.code) == (status, code)


def test_read_token_cannot_operate() -> None:
    with pytest.raises(HTTPError) as err:
        _auth("Bearer read-token-0123456789", "operate")
    assert (err.value.status, err.value.code) == (403, "forbidden")
    assert "read-token" not in err.value.detail


def test_no_tokens_means_api_disabled() -> None:
    with pytest.raises(HTTPError) as err:
        bearer(ServerConfig(), Headers({"authorization": "Bearer x" * 3}))
    assert err.value.code == "api_disabled"
