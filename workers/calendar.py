"""Business-day arithmetic for follow-up delays such as `2 business days`.

A business day is a Monday-Friday that is not a public holiday of the calendar:

- ``"US"``: US federal holidays as the `holidays` package publishes them (category ``public``), including
  the observed dates (a Saturday holiday is observed on the Friday before, a Sunday one on the Monday
  after; e.g. Independence Day 2020 -> Fri 3 Jul, 2021 -> Mon 5 Jul). These are the days USPS offices close.
- ``"CA"``: Canadian federal statutory holidays, i.e. the ones federally regulated employers such as
  Canada Post observe under the Canada Labour Code (`holidays` categories ``public`` + ``government``, no
  province): New Year's Day, Good Friday, Victoria Day, Canada Day, Labour Day, National Day for Truth and
  Reconciliation, Thanksgiving, Remembrance Day, Christmas Day and Boxing Day, with their observed dates.
  Provincial-only days (Family Day, Civic Holiday, St-Jean-Baptiste, Easter Monday) are not skipped.

Dates are taken in the start datetime's own timezone; the time of day and tzinfo are kept.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import lru_cache

import holidays

from postrelay.core.durations import Delay

CALENDARS: frozenset[str] = frozenset({"US", "CA"})
_CANADA = frozenset({"CA", "CAN", "CANADA"})


@lru_cache(maxsize=256)
def _holidays(calendar: str, year: int) -> frozenset[date]:
    """The holiday dates of one calendar year (cached; immutable, so safe across threads)."""
    if calendar == "US":
        table = holidays.country_holidays("US", years=year, categories=("public",))
    else:
        table = holidays.country_holidays("CA", years=year, categories=("public", "government"))
    return frozenset(d for d in table if d.year == year)


def _check(calendar: str) -> str:
    if calendar not in CALENDARS:
        raise ValueError(f"unknown business-day calendar {calendar!r}; known: {sorted(CALENDARS)}")
    return calendar


def is_business_day(d: date, calendar: str) -> bool:
    """True when `d` is a Monday-Friday that is not a holiday (observed or actual) of `calendar`."""
    _check(calendar)
    if isinstance(d, datetime):
        d = d.date()
    return d.weekday() < 5 and d not in _holidays(calendar, d.year)


def _next_business_day(d: date, calendar: str) -> date:
    d += timedelta(days=1)
    while not is_business_day(d, calendar):
        d += timedelta(days=1)
    return d


def add_business_days(start: datetime, n: int, calendar: str) -> datetime:
    """`start` moved forward by `n` business days, keeping its time of day and timezone.

    Exact rule (numpy's ``busday_offset(roll="forward")``): if `start`'s date is not a business day it is
    first rolled forward to the next business day (that day counts as day 0), then `n` business days are
    added. So Friday + 1 = Monday, Saturday + 0 = Monday, Saturday + 1 = Tuesday, and with `n == 0` a
    business-day start is returned unchanged. `n` must not be negative.
    """
    _check(calendar)
    if n < 0:
        raise ValueError("business days must not be negative")
    day = start.date()
    if not is_business_day(day, calendar):
        day = _next_business_day(day, calendar)
    for _ in range(n):
        day = _next_business_day(day, calendar)
    return start.replace(year=day.year, month=day.month, day=day.day)


def calendar_for(country: str | None, explicit: str | None) -> str:
    """The calendar to use: `explicit` (``US``/``CA``) wins; else CA for a Canadian piece, US otherwise."""
    if explicit:
        return _check(explicit.strip().upper())
    if country and country.strip().upper() in _CANADA:
        return "CA"
    return "US"


def due_at(start: datetime, delay: Delay, calendar: str) -> datetime:
    """When a follow-up with `delay` is due: business days first (see `add_business_days`), then seconds."""
    when = add_business_days(start, delay.business_days, calendar) if delay.business_days else start
    return when + timedelta(seconds=delay.seconds) if delay.seconds else when
