"""`where` filters (routes, follow-ups, triggers): dotted paths and expected values, one semantics everywhere."""

from __future__ import annotations

from typing import Any


def matches_value(actual: Any, expected: Any) -> bool:
    """Filter semantics: a list means "any of"; strings compare case-insensitively; else equality."""
    if isinstance(expected, list):
        return any(matches_value(actual, e) for e in expected)
    if isinstance(expected, str) and isinstance(actual, str):
        return actual.casefold() == expected.casefold()
    if isinstance(expected, str) and actual is not None and not isinstance(actual, dict | list):
        return str(actual).casefold() == expected.casefold()
    return actual == expected


def lookup(data: Any, dotted: str) -> Any:
    """Value at a dotted path of plain dicts; None when absent."""
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def matches_where(data: dict[str, Any], where: dict[str, Any]) -> bool:
    """True when every `where` path of `data` has its expected value (`null` expects the path to be absent)."""
    return all(matches_value(lookup(data, path), expected) for path, expected in where.items())
