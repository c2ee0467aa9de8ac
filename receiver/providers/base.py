"""What every provider module shares: the result type, JSON parsing and lenient field readers."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from postrelay.core.events import CanonicalEvent
from postrelay.receiver.errors import bad_request
from postrelay.receiver.providers.countries import country_code

__all__ = ["Normalized", "country_code", "normalize_each", "opt_str", "parse_json", "parse_time"]


@dataclass
class Normalized:
    """Canonical events derived from one request, plus how many provider events carried no tracking."""

    events: list[CanonicalEvent] = field(default_factory=list)
    ignored: int = 0


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_BOM = b"\xef\xbb\xbf"
# Every ASCII digit to b"0", everything else unchanged: a run of 19 digits becomes b"0" * 19 (one C-level pass).
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 19
_VALUE_START = frozenset(b":[,")


def parse_json(body: bytes) -> Any:
    """Parse a JSON body; any failure (syntax, invalid UTF-8, absurd nesting or numbers) is a 400.

    orjson parses (C speed, UTF-8 validated); whatever it refuses (empty, invalid UTF-8, a BOM, `NaN`, too
    deep, ...) and bodies that may hold an integer of 19+ digits (orjson turns integers past 64 bits into
    floats) go through the standard library parser, so every body gets exactly the answer it got before.
    Neither path accepts `NaN`, `Infinity`, `-Infinity` or a number that overflows a double (`1e400`): orjson
    refuses them and the standard path is told to (they would be relayed as `null`).
    """
    if body[:3] == _BOM or _may_hold_big_integer(body):
        return _parse_json_std(body)
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _parse_json_std(body)
    return _check_parsed(value, body)


def _may_hold_big_integer(body: bytes) -> bool:
    """True if some run of 19+ digits may be a JSON number (not only inside a string): a digit run preceded
    (across whitespace and a minus sign) by `:`, `[`, `,` or nothing. Strings like `"ref:1234…"` give a false
    positive, which only costs the slower parser."""
    digits = body.translate(_DIGITS_TO_ZERO)
    pos = digits.find(_LONG_RUN)
    while pos >= 0:
        i = pos - 1
        while i >= 0 and body[i] in b" \t\r\n-":
            i -= 1
        if i < 0 or body[i] in _VALUE_START:
            return True
        end = pos + len(_LONG_RUN)
        while end < len(digits) and digits[end] == 48:  # skip the rest of this run
            end += 1
        pos = digits.find(_LONG_RUN, end)
    return False


def _check_parsed(value: Any, body: bytes) -> Any:
    # No surrogate check: orjson refuses every unpaired surrogate escape (the standard path then answers 400).
    if body.count(b"{") + body.count(b"[") > MAX_DEPTH:  # cheap gate: fewer brackets cannot nest that deep
        ensure_shallow(value)
    return value


def _parse_json_std(body: bytes) -> Any:
    """The standard library's parser with the explicit UTF-8 decoding: the reference behaviour."""
    if not body.strip():
        raise bad_request("invalid_json", "the body is empty")
    try:
        # Decode explicitly: json.loads(bytes) would also accept UTF-16/32 bodies.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise bad_request("invalid_json", "the body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except _NonFinite as exc:
        raise bad_request("invalid_json", f"the body is not valid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise bad_request("invalid_json", f"the body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except (RecursionError, ValueError):
        raise bad_request("invalid_json", "the body is not acceptable JSON (too deeply nested or a huge number)") from None
    if _SURROGATE_ESCAPE.search(text):
        ensure_encodable(value)
    if text.count("{") + text.count("[") > MAX_DEPTH:  # cheap gate: fewer brackets cannot nest that deep
        ensure_shallow(value)
    return value


class _NonFinite(ValueError):
    """`NaN`, `Infinity` or a number beyond a double's range: the stdlib accepts them, JSON (RFC 8259) does not."""


def _no_constant(name: str) -> Any:
    raise _NonFinite(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"the number {text[:40]} is out of range (it would be infinite)")
    return value


MAX_DEPTH = 64
"""Deepest JSON nesting accepted. A canonical event nests a provider's `metadata` two levels down, and the
worker must parse it back from the stream (pydantic's JSON parser stops at 200 levels, its serializer
fails earlier): deeper bodies were answered 200 and then never reached a timeline, or answered 500."""


def ensure_shallow(value: Any, limit: int = MAX_DEPTH) -> None:
    """400 if `value` nests objects/arrays more than `limit` levels deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                raise bad_request("invalid_json", f"the body nests more than {limit} levels deep")
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))


def ensure_encodable(value: Any) -> None:
    """400 if `value` holds a lone UTF-16 surrogate (`"\\ud800"` parses, but cannot be stored as UTF-8) or a
    non-finite number (`NaN`, `Infinity`, `1e400`: e.g. in JWT claims, which PyJWT parses with the stdlib)."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("invalid_json", "the body contains an unpaired UTF-16 surrogate escape") from None
    except ValueError as exc:
        if "Out of range float" in str(exc):
            raise bad_request("invalid_json", "the body is not valid JSON: NaN, Infinity or a number out of "
                                              "range (it would be infinite)") from None
        raise bad_request("invalid_json", "the body is not acceptable JSON") from None
    except RecursionError:
        raise bad_request("invalid_json", "the body is not acceptable JSON") from None


def event_items(payload: Any, what: str) -> list[Any]:
    """One event object or a non-empty list of them."""
    if isinstance(payload, list):
        if not payload:
            raise bad_request("invalid_payload", f"empty list of {what}s")
        return payload
    return [payload]


def normalize_each(payload: Any, what: str, received_at: datetime,
                   one: Callable[[dict[str, Any], datetime], CanonicalEvent | list[CanonicalEvent] | None]) -> Normalized:
    """Apply a provider's one-event normalizer to one event object or a list; events that yield none are ignored.

    A value the canonical model refuses (e.g. a mailpiece id over 200 characters or with a control character)
    rejects the whole request with a 400 naming the event and the field: nothing of it is accepted, so the
    provider's retry (or its dashboard) shows the failure instead of a silently shortened batch.
    """
    out = Normalized()
    items = event_items(payload, what)
    for i, item in enumerate(items):
        try:
            result = one(require_object(item, what), received_at)
        except ValidationError as err:
            where = f"{what} [{i}]" if isinstance(payload, list) else what
            raise bad_request("invalid_payload", f"{where}: {validation_detail(err)}") from None
        if not result:
            out.ignored += 1
        elif isinstance(result, list):
            out.events.extend(result)
        else:
            out.events.append(result)
    return out


def validation_detail(err: ValidationError) -> str:
    """`<canonical field>: <problem>` for the first error (never the value: it may be huge or a secret)."""
    first = err.errors(include_url=False, include_input=False)[0]
    model = {"Mailpiece": "mailpiece", "Recipient": "recipient", "Location": "location"}.get(err.title)
    loc = ".".join([*([model] if model else []), *(str(p) for p in first["loc"])]) or "<event>"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{loc}: {first['msg'].removeprefix('Value error, ')}{more}"


def require_object(value: Any, what: str) -> dict[str, Any]:
    """`value` must be a JSON object."""
    if not isinstance(value, dict):
        raise bad_request("invalid_payload", f"{what} must be a JSON object")
    return value


_NUMBER = (int, float)


def opt_str(value: Any, limit: int = 1000) -> str | None:
    """A short string from a scalar (numbers are stringified); None for anything else or empty."""
    if type(value) is not str:  # (the common case, a str, skips every other test: it runs ~17 times per event)
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, _NUMBER):
            value = str(value)
        elif not isinstance(value, str):
            return None
    value = value.strip()
    if len(value) > limit:
        value = value[:limit]
    return value or None


def dict_or_empty(value: Any) -> dict[str, Any]:
    """`value` if it is a dict, else an empty one."""
    return value if isinstance(value, dict) else {}


_US_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y",
               "%Y-%m-%d %H:%M:%S")


def parse_time(value: Any, what: str) -> datetime:
    """A timestamp from ISO 8601 (Z or offset; naive means UTC), US `m/d/Y h:m:s AM`, or epoch seconds/ms."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        secs = value / 1000.0 if value > 1e11 else float(value)
        try:
            return datetime.fromtimestamp(secs, UTC)
        except (OverflowError, OSError, ValueError):
            raise bad_request("invalid_payload", f"{what} is out of range") from None
    if not isinstance(value, str) or not value.strip():
        raise bad_request("invalid_payload", f"{what} is missing or not a timestamp")
    text = value.strip()
    parsed: datetime | None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        parsed = None
        for fmt in _US_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
        if parsed is None:
            raise bad_request("invalid_payload", f"{what} is not a recognised timestamp: {text[:40]!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return to_utc(parsed, what)


def to_utc(value: datetime, what: str) -> datetime:
    """`value` in UTC; 400 when the conversion leaves the datetime range (year 1 / 9999 with an offset)."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise bad_request("invalid_payload", f"{what} is out of range") from None
