"""Business-day calendar: weekends, US federal and Canadian federal holidays, year ends, rolling rules."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from postrelay.core.durations import Delay, parse_delay
from postrelay.workers.calendar import add_business_days, calendar_for, due_at, is_business_day


def at(y: int, m: int, d: int, hh: int = 14, mm: int = 30) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (at(2025, 3, 3), 1, at(2025, 3, 4)),     # Mon -> Tue
        (at(2025, 3, 7), 1, at(2025, 3, 10)),    # Fri -> Mon over the weekend
        (at(2025, 3, 6), 3, at(2025, 3, 11)),    # Thu + 3 -> Tue
        (at(2025, 3, 3), 10, at(2025, 3, 17)),   # two full weeks
        (at(2025, 3, 3), 0, at(2025, 3, 3)),     # 0 on a business day: unchanged
    ],
)
def test_weekends(start: datetime, n: int, expected: datetime) -> None:
    assert add_business_days(start, n, "US") == expected
    assert add_business_days(start, n, "CA") == expected


def test_start_on_weekend_rolls_forward_first() -> None:
    sat, sun = at(2025, 3, 8), at(2025, 3, 9)
    assert add_business_days(sat, 0, "US") == at(2025, 3, 10)   # Sat + 0 -> Mon
    assert add_business_days(sat, 1, "US") == at(2025, 3, 11)   # Sat + 1 -> Tue (Mon is day 0)
    assert add_business_days(sun, 2, "US") == at(2025, 3, 12)


def test_start_on_holiday_rolls_forward_first() -> None:
    thanksgiving = at(2025, 11, 27)
    assert add_business_days(thanksgiving, 0, "US") == at(2025, 11, 28)
    assert add_business_days(thanksgiving, 1, "US") == at(2025, 12, 1)


def test_us_thanksgiving() -> None:
    assert not is_business_day(date(2025, 11, 27), "US")
    assert add_business_days(at(2025, 11, 26), 1, "US") == at(2025, 11, 28)
    assert add_business_days(at(2025, 11, 25), 2, "US") == at(2025, 11, 28)


def test_us_july_4th_observed_on_friday_and_monday() -> None:
    # 2020: 4 July is a Saturday, observed Friday 3 July.
    assert not is_business_day(date(2020, 7, 3), "US")
    assert add_business_days(at(2020, 7, 2), 1, "US") == at(2020, 7, 6)
    # 2021: 4 July is a Sunday, observed Monday 5 July.
    assert not is_business_day(date(2021, 7, 5), "US")
    assert add_business_days(at(2021, 7, 2), 1, "US") == at(2021, 7, 6)
    # 2025: a Friday, no shifting.
    assert add_business_days(at(2025, 7, 3), 1, "US") == at(2025, 7, 7)


def test_us_christmas_and_year_boundary() -> None:
    assert add_business_days(at(2025, 12, 24), 1, "US") == at(2025, 12, 26)
    # Wed 31 Dec 2025 + 1 skips New Year's Day (Thu) -> Fri 2 Jan 2026.
    assert add_business_days(at(2025, 12, 31), 1, "US") == at(2026, 1, 2)
    assert add_business_days(at(2025, 12, 23), 6, "US") == at(2026, 1, 2)
    # New Year's Day 2022 (Sat) is observed on Fri 31 Dec 2021: the observed date lies in the prior year.
    assert not is_business_day(date(2021, 12, 31), "US")
    assert add_business_days(at(2021, 12, 30), 1, "US") == at(2022, 1, 3)


def test_canada_is_not_the_us() -> None:
    assert is_business_day(date(2025, 11, 27), "CA")     # US Thanksgiving
    assert is_business_day(date(2025, 7, 4), "CA")
    assert not is_business_day(date(2025, 10, 13), "CA")    # Canadian Thanksgiving...
    assert not is_business_day(date(2025, 10, 13), "US")    # ...is also Columbus Day
    assert is_business_day(date(2025, 9, 30), "US")         # Truth and Reconciliation is Canadian only
    assert is_business_day(date(2025, 12, 26), "US")        # no Boxing Day in the US


def test_canada_holidays() -> None:
    assert not is_business_day(date(2025, 7, 1), "CA")          # Canada Day
    assert add_business_days(at(2025, 6, 30), 1, "CA") == at(2025, 7, 2)
    assert not is_business_day(date(2025, 5, 19), "CA")         # Victoria Day
    assert add_business_days(at(2025, 5, 16), 1, "CA") == at(2025, 5, 20)
    assert not is_business_day(date(2025, 10, 13), "CA")        # Thanksgiving (October)
    assert add_business_days(at(2025, 10, 10), 1, "CA") == at(2025, 10, 14)
    assert not is_business_day(date(2025, 12, 26), "CA")        # Boxing Day
    assert add_business_days(at(2025, 12, 24), 1, "CA") == at(2025, 12, 29)
    assert add_business_days(at(2025, 12, 24), 1, "US") == at(2025, 12, 26)
    assert not is_business_day(date(2025, 9, 30), "CA")         # Truth and Reconciliation
    assert not is_business_day(date(2025, 11, 11), "CA")        # Remembrance Day
    assert is_business_day(date(2025, 2, 17), "CA")             # Family Day is provincial only


def test_canada_observed_and_year_boundary() -> None:
    # Canada Day 2023 is a Saturday, observed Monday 3 July.
    assert not is_business_day(date(2023, 7, 3), "CA")
    # Boxing Day 2020 (Sat) -> observed Mon 28 Dec; Fri 1 Jan 2021 New Year's.
    assert add_business_days(at(2020, 12, 24), 1, "CA") == at(2020, 12, 29)
    assert add_business_days(at(2020, 12, 31), 1, "CA") == at(2021, 1, 4)


def test_keeps_time_of_day_and_timezone() -> None:
    tz = ZoneInfo("America/New_York")
    start = datetime(2025, 3, 7, 9, 15, tzinfo=tz)  # Friday before the DST switch (Sun 9 Mar)
    out = add_business_days(start, 1, "US")
    assert out.timetz() == time(9, 15, tzinfo=tz)
    assert out.date() == date(2025, 3, 10)
    assert out.utcoffset() == timedelta(hours=-4)  # wall clock kept across DST
    naive = datetime(2025, 3, 7, 23, 59)
    assert add_business_days(naive, 1, "US") == datetime(2025, 3, 10, 23, 59)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        add_business_days(at(2025, 3, 3), -1, "US")
    with pytest.raises(ValueError):
        add_business_days(at(2025, 3, 3), 1, "UK")
    with pytest.raises(ValueError):
        is_business_day(date(2025, 3, 3), "us")
    with pytest.raises(ValueError):
        calendar_for("CA", "MX")


@pytest.mark.parametrize(
    ("country", "explicit", "expected"),
    [
        ("CA", None, "CA"), ("ca", None, "CA"), ("CAN", None, "CA"), ("Canada", None, "CA"),
        ("US", None, "US"), ("GB", None, "US"), (None, None, "US"), ("", None, "US"),
        ("US", "CA", "CA"), ("CA", "us", "US"), (None, " ca ", "CA"),
    ],
)
def test_calendar_for(country: str | None, explicit: str | None, expected: str) -> None:
    assert calendar_for(country, explicit) == expected


def test_due_at() -> None:
    start = at(2025, 11, 26)  # Wednesday before Thanksgiving
    assert due_at(start, parse_delay("2 business days"), "US") == at(2025, 12, 1)
    assert due_at(start, parse_delay("2 business days"), "CA") == at(2025, 11, 28)
    assert due_at(start, parse_delay("36h"), "US") == start + timedelta(hours=36)
    assert due_at(start, Delay(), "US") == start
    assert due_at(start, Delay(seconds=3600, business_days=1), "US") == at(2025, 11, 28, 15, 30)
