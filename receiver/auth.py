"""Bearer tokens with roles for the JSON API and the console: `read` looks, `operate` also changes things."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from starlette.datastructures import Headers

from postrelay.core.config import ServerConfig
from postrelay.receiver.errors import HTTPError, unauthorized

Role = Literal["read", "operate"]
_RANK: dict[str, int] = {"read": 1, "operate": 2}


@dataclass(frozen=True)
class Principal:
    """Who a request acts as: the token's name and role."""

    name: str
    role: Role

    def may(self, role: Role) -> bool:
        """True when this principal's role covers `role` (`operate` covers `read`)."""
        return _RANK[self.role] >= _RANK[role]


def known_tokens(server: ServerConfig) -> list[tuple[str, str, Role]]:
    """Every configured token as (name, secret, role); `[server] api_token` is an operate token."""
    found: list[tuple[str, str, Role]] = [(t.name, t.token, t.role) for t in server.tokens]
    if server.api_token:
        found.append(("api_token", server.api_token, "operate"))
    return found


def identify(server: ServerConfig, token: str) -> Principal | None:
    """The principal whose secret equals `token`, compared in constant time against every token; else None."""
    given = token.strip().encode()
    match: Principal | None = None
    for name, secret, role in known_tokens(server):
        if hmac.compare_digest(secret.encode(), given) and match is None:
            match = Principal(name, role)
    return match


def bearer(server: ServerConfig, headers: Headers, role: Role = "read") -> Principal:
    """Authorize `Authorization: Bearer <token>` for `role`: 401 (no/invalid token) or 403 (role too low)."""
    if not known_tokens(server):
        raise unauthorized("api_disabled", "the API needs [server] api_token or [[server.tokens]] in the config")
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("missing_token", "send Authorization: Bearer <api_token>")
    principal = identify(server, token)
    if principal is None:
        raise unauthorized("invalid_token", "the bearer token is not valid")
    if not principal.may(role):
        raise HTTPError(403, "forbidden", f"token {principal.name!r} has role {principal.role!r}; this needs {role!r}")
    return principal
