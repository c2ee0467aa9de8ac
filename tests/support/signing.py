"""Sign webhook bodies exactly as each provider does, so tests go through the receiver's real verification.

- PostGrid `jwt` format: the body is a JWT (HS256) whose claims are the event (PyJWT).
- PostGrid `json` format: `PostGrid-Signature: t=<timestamp>,v1=hex(HMAC-SHA256(secret, t + "." + body))`,
  with `t` in seconds or milliseconds.
- Lob: `Lob-Signature` = hex(HMAC-SHA256(secret, timestamp + "." + body)) and `Lob-Signature-Timestamp`.
- Standard Webhooks (generic source): `webhook-id`, `webhook-timestamp`, `webhook-signature`, signed by the
  `standardwebhooks` package itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import jwt
from standardwebhooks.webhooks import Webhook


def to_bytes(body: Any) -> bytes:
    """JSON-encode `body` unless it already is bytes/str."""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, separators=(",", ":")).encode()


def hmac_hex(secret: str, message: bytes) -> str:
    """hex(HMAC-SHA256(secret, message))."""
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


# --- PostGrid -------------------------------------------------------------------------------------------


def postgrid_jwt(event: dict[str, Any], secret: str, *, iat: float | None = None, exp: float | None = None,
                 nbf: float | None = None, extra_headers: dict[str, Any] | None = None) -> bytes:
    """The body PostGrid posts in its default `jwt` format: the event as HS256 JWT claims."""
    claims = dict(event)
    if iat is not None:
        claims["iat"] = int(iat)
    if exp is not None:
        claims["exp"] = int(exp)
    if nbf is not None:
        claims["nbf"] = int(nbf)
    return jwt.encode(claims, secret, algorithm="HS256", headers=extra_headers).encode()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged_jwt(event: dict[str, Any], header: dict[str, Any], signature: bytes = b"") -> bytes:
    """A JWT with an arbitrary header (e.g. `alg: none` or `RS256`) and signature, as an attacker would send."""
    head = _b64url(json.dumps(header, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(event, separators=(",", ":")).encode())
    return f"{head}.{payload}.{_b64url(signature)}".encode()


def postgrid_signature(body: bytes, secret: str, timestamp: float, *, millis: bool = False) -> str:
    """`PostGrid-Signature` header value; `t` in seconds, or milliseconds when `millis`."""
    t = str(int(timestamp * 1000)) if millis else str(int(timestamp))
    return f"t={t},v1={hmac_hex(secret, t.encode() + b'.' + body)}"


def postgrid_json(event: Any, secret: str, timestamp: float, *, millis: bool = False) -> tuple[bytes, dict[str, str]]:
    """Body and headers for PostGrid's `json` format."""
    body = to_bytes(event)
    headers = {"Content-Type": "application/json",
               "PostGrid-Signature": postgrid_signature(body, secret, timestamp, millis=millis)}
    return body, headers


# --- Lob ------------------------------------------------------------------------------------------------


def lob_headers(body: bytes, secret: str, timestamp: float, *, millis: bool = False) -> dict[str, str]:
    """`Lob-Signature` and `Lob-Signature-Timestamp` for `body`."""
    ts = str(int(timestamp * 1000)) if millis else str(int(timestamp))
    return {"Content-Type": "application/json", "Lob-Signature-Timestamp": ts,
            "Lob-Signature": hmac_hex(secret, ts.encode() + b"." + body)}


def lob_signed(event: Any, secret: str, timestamp: float, *, millis: bool = False) -> tuple[bytes, dict[str, str]]:
    """Body and headers for a Lob webhook."""
    body = to_bytes(event)
    return body, lob_headers(body, secret, timestamp, millis=millis)


# --- Standard Webhooks (generic source) -------------------------------------------------------------------


def make_whsec(seed: bytes) -> str:
    """A Standard Webhooks secret: `whsec_` + base64 of 24+ key bytes."""
    return "whsec_" + base64.b64encode(hashlib.sha256(seed).digest()).decode()


def standard_webhooks_headers(body: bytes, secret: str, msg_id: str, timestamp: float) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp`, `webhook-signature` as the standardwebhooks package signs them."""
    when = datetime.fromtimestamp(int(timestamp), UTC)
    try:
        signature = Webhook(secret).sign(msg_id, when, body.decode())
    except UnicodeDecodeError:  # the package signs text; sign non-UTF-8 bytes by hand, the same way
        key = base64.b64decode(secret.removeprefix("whsec_"))
        mac = hmac.new(key, f"{msg_id}.{int(timestamp)}.".encode() + body, hashlib.sha256).digest()
        signature = "v1," + base64.b64encode(mac).decode()
    return {"Content-Type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(int(timestamp)), "webhook-signature": signature}


def generic_signed(event: Any, secret: str, msg_id: str, timestamp: float) -> tuple[bytes, dict[str, str]]:
    """Body and headers for the generic source."""
    body = to_bytes(event)
    return body, standard_webhooks_headers(body, secret, msg_id, timestamp)
