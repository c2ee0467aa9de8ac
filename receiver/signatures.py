"""HMAC helpers shared by the providers: constant-time, raw bytes, several secrets, timestamp tolerance."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Iterable

from postrelay.receiver.errors import unauthorized

_KEYED: dict[str, hmac.HMAC] = {}
_MAX_KEYED = 64  # secrets come from the config: a handful; the bound only guards against misuse


def hmac_sha256_hex(secret: str, message: bytes) -> str:
    """hex(HMAC-SHA256(secret, message)). The key schedule is computed once per secret and `.copy()`'d."""
    keyed = _KEYED.get(secret)
    if keyed is None:
        keyed = hmac.new(secret.encode(), digestmod=hashlib.sha256)
        if len(_KEYED) < _MAX_KEYED:
            _KEYED[secret] = keyed
    mac = keyed.copy()
    mac.update(message)
    return mac.hexdigest()


def any_hex_signature_matches(secrets: Iterable[str], message: bytes, candidates: Iterable[str]) -> bool:
    """True if some candidate equals hex HMAC of `message` under some secret (compare_digest each)."""
    expected = [hmac_sha256_hex(s, message) for s in secrets]
    ok = False
    for cand in candidates:
        c = cand.strip().lower().encode()
        for exp in expected:
            ok |= hmac.compare_digest(exp.encode(), c)
    return ok


def timestamp_seconds(raw: str, header: str) -> float:
    """Parse a signature timestamp given in seconds or milliseconds (values past year 5138 are ms)."""
    try:
        value = float(raw.strip())
    except ValueError:
        raise unauthorized("invalid_timestamp", f"{header} is not a number") from None
    if not math.isfinite(value) or value < 0:  # NaN, inf (`1e400`) or negative
        raise unauthorized("invalid_timestamp", f"{header} is not a valid timestamp")
    return value / 1000.0 if value > 1e11 else value


def check_tolerance(ts: float, now: float, tolerance: float, header: str) -> None:
    """Reject a timestamp further than `tolerance` seconds from now, in either direction."""
    if abs(now - ts) > tolerance:
        raise unauthorized(
            "timestamp_out_of_tolerance",
            f"{header} is {int(now - ts)} s from the receiver's clock; tolerance is {int(tolerance)} s",
        )
