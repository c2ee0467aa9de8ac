"""Human durations used in the config: `30s`, `5m`, `36h`, `8d`, `14 days`, `2 business days`, `0`."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*")
_BUSINESS = re.compile(r"^\s*(\d+)\s*business\s+days?\s*$")


@dataclass(frozen=True)
class Delay:
    """A follow-up delay: plain seconds, or a count of business days."""

    seconds: float = 0.0
    business_days: int = 0


def parse_seconds(text: str | int | float) -> float:
    """Parse a plain duration into seconds; raises ValueError naming the problem."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError("duration must not be negative")
        return float(text)
    raw = text.strip().lower()
    if raw in {"0", ""}:
        if raw == "":
            raise ValueError("empty duration")
        return 0.0
    total, pos = 0.0, 0
    while pos < len(raw):
        m = _PART.match(raw, pos)
        if not m or m.end() == pos or m.group(2) not in _UNITS:
            raise ValueError(f"cannot parse duration {text!r} (use e.g. '30s', '5m', '36h', '8d')")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total


def parse_delay(text: str | int | float) -> Delay:
    """Parse a follow-up delay: a plain duration or `N business days`."""
    if isinstance(text, str):
        m = _BUSINESS.match(text.lower())
        if m:
            return Delay(business_days=int(m.group(1)))
    return Delay(seconds=parse_seconds(text))


def parse_since(text: str, now: float) -> float:
    """A point in time as epoch seconds: an ISO date or time (UTC unless it says otherwise), or a duration ago
    (`2h`, `3d`); raises ValueError naming the problem."""
    from datetime import UTC, datetime

    raw = text.strip()
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        try:
            return now - parse_seconds(raw)
        except ValueError:
            raise ValueError(f"cannot parse {text!r}: use an ISO date/time (2026-11-20, 2026-11-20T10:00Z) "
                             "or a duration ago (2h, 3d)") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
