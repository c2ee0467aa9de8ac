"""Human durations used in the config: `30s`, `5m`, `36h`, `8d`, `14 days`, `2 business days`, `0`."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_BUSINESS = re.compile(r"^\s*(\d+)\s*business\s+days?\s*$")
# The accepted forms, for error messages.
DURATION_FORMS = "a duration such as '30s', '5m', '36h', '8d' or '14 days' (a bare number is seconds)"
DELAY_FORMS = "'0', a duration such as '36h' or '14 days', or 'N business days'"
# Longer durations are mistakes (`99999999999999d` is not a retention): past them Redis refuses the expiry, so
# every webhook would be a 500; business days are counted one by one, so a huge count would stall the worker.
MAX_SECONDS = 100 * 365 * 86400
MAX_BUSINESS_DAYS = 10_000


class TooLong(ValueError):
    """A well-formed duration or delay past `MAX_SECONDS` / `MAX_BUSINESS_DAYS`."""


@dataclass(frozen=True)
class Delay:
    """A follow-up delay: plain seconds, or a count of business days."""

    seconds: float = 0.0
    business_days: int = 0


def parse_seconds(text: str | int | float, limit: float = MAX_SECONDS) -> float:
    """Parse a plain duration into seconds (at most `limit`: 100 years); raises ValueError naming the problem."""
    total = _seconds(text)
    if total > limit:
        raise TooLong(f"duration {text!r} is longer than 100 years")
    return total


def _seconds(text: str | int | float) -> float:
    if isinstance(text, int | float):
        if not math.isfinite(text):  # TOML has inf and nan
            raise ValueError(f"duration must be a finite number, not {text}")
        if text < 0:
            raise ValueError("duration must not be negative")
        return float(text)
    raw = text.strip().lower()
    if raw == "":
        raise ValueError("empty duration")
    if _NUMBER.fullmatch(raw):  # "30": seconds, as the TOML number 30 is (a "${VAR}" is always a string)
        return float(raw)
    total, pos = 0.0, 0
    while pos < len(raw):
        m = _PART.match(raw, pos)
        if not m or m.end() == pos or m.group(2) not in _UNITS:
            raise ValueError(f"cannot parse duration {text!r}; expected {DURATION_FORMS}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


def parse_delay(text: str | int | float) -> Delay:
    """Parse a follow-up delay: a plain duration or `N business days`."""
    if isinstance(text, str):
        m = _BUSINESS.match(text.lower())
        if m:
            digits = m.group(1)
            if len(digits) > 6 or int(digits) > MAX_BUSINESS_DAYS:
                raise TooLong(f"delay {text!r} is longer than {MAX_BUSINESS_DAYS} business days")
            return Delay(business_days=int(digits))
    return Delay(seconds=parse_seconds(text))


def parse_when(text: str, now: float | None = None) -> datetime:
    """A point in time as the CLI takes it (`--since`, `--until`): `2026-11-01`, `2026-11-01T08:00:00-05:00`
    (no offset: UTC) or a duration ago (`36h`, `3d`); ValueError names the accepted forms."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            if _NUMBER.fullmatch(text.strip()):  # `--since 2026`: a year? seconds? Neither, say so
                raise ValueError(text)
            ago = parse_seconds(text, math.inf)  # too far back: said below
        except ValueError:
            raise ValueError(f"{text!r} is neither an ISO date/time nor a duration such as 36h or 3d") from None
        try:
            return datetime.fromtimestamp((time.time() if now is None else now) - ago, UTC)
        except (ValueError, OverflowError, OSError):  # before the year 1, or past what the platform's time_t holds
            raise ValueError(f"{text!r} is too far in the past; use an ISO date/time or a shorter duration") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
