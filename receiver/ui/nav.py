"""The console's navigation: (endpoint name, label) in order. Features that add pages append to `NAV`
(e.g. tracking links and mailings add their own entries when they land)."""

from __future__ import annotations

NAV: list[tuple[str, str]] = [
    ("overview", "Overview"),
    ("mailpieces", "Mailpieces"),
    ("campaigns", "Campaigns"),
    ("deliveries", "Deliveries"),
    ("followups", "Follow-ups"),
    ("mailings", "Mailings"),
]
