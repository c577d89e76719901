"""The SLA working-day calendar: holidays, make-up days, office hours, overrides, fallback."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from wxapp_backend.appeals import calendar as cal_mod
from wxapp_backend.appeals.calendar import DAY_MINUTES, TZ, WorkCalendar


def sh(*args) -> datetime:
    return datetime(*args, tzinfo=TZ)


def test_seven_working_days_over_national_day_2025():
    # Filed 2025-09-30 16:00; holiday 10-01..10-08; 09-28 and 10-11 are make-up workdays.
    cal = WorkCalendar()
    due = cal.add_working_days(sh(2025, 9, 30, 16, 0), 7)
    assert due.astimezone(TZ).date() == date(2025, 10, 16)
    assert cal.is_workday(date(2025, 9, 28)) and cal.is_workday(date(2025, 10, 11))
    assert not any(cal.is_workday(date(2025, 10, d)) for d in range(1, 9))


def test_same_answer_from_the_holiday_table_alone():
    # Without the library: the staff table gives the same deadline.
    table = {date(2025, 10, d): False for d in range(1, 9)}
    table |= {date(2025, 9, 28): True, date(2025, 10, 11): True}
    cal = WorkCalendar(table, use_library=False)
    assert cal.add_working_days(sh(2025, 9, 30, 16, 0), 7).astimezone(TZ).date() == date(2025, 10, 16)


def test_table_overrides_library():
    cal = WorkCalendar({date(2025, 10, 9): False})  # an extra day off staff entered
    assert cal.add_working_days(sh(2025, 9, 30, 16, 0), 7).astimezone(TZ).date() == date(2025, 10, 17)
    assert cal.source(date(2025, 10, 9)) == "table" and cal.source(date(2025, 10, 10)) == "library"


def test_beyond_library_range_falls_back_to_weekdays(monkeypatch):
    cal = WorkCalendar()
    assert cal.source(date(2099, 1, 5)) == "weekday"
    assert cal.is_workday(date(2099, 1, 5)) and not cal.is_workday(date(2099, 1, 3))
    monkeypatch.setattr(cal_mod, "_cc", None)  # the package missing altogether: still no crash
    assert WorkCalendar().is_workday(date(2025, 10, 1)) is True


def test_office_hours():
    cal = WorkCalendar()
    # filed after hours: the clock starts next working morning and ends at 17:30, not 9:00 the day after
    due = cal.add_working_days(sh(2025, 11, 3, 20, 0), 1)
    assert due.astimezone(TZ) == sh(2025, 11, 4, 17, 30)
    due = cal.add_working_days(sh(2025, 11, 3, 8, 0), 1)
    assert due.astimezone(TZ) == sh(2025, 11, 3, 17, 30)
    assert cal.working_minutes_between(sh(2025, 11, 3, 9, 0), sh(2025, 11, 4, 9, 0)) == DAY_MINUTES
    assert cal.working_minutes_between(sh(2025, 11, 7, 17, 0), sh(2025, 11, 10, 9, 30)) == 60  # weekend
    assert cal.working_minutes_between(sh(2025, 11, 4, 9, 0), sh(2025, 11, 3, 9, 0)) == -DAY_MINUTES


def test_naive_datetimes_refused():
    with pytest.raises(ValueError):
        WorkCalendar().add_working_days(datetime(2025, 1, 1), 1)


def test_round_trip_minutes():
    cal = WorkCalendar()
    start = sh(2025, 9, 29, 10, 17)
    for minutes in (1, 100, 509, 510, 511, 3000, 10000):
        end = cal.add_working_minutes(start, minutes)
        assert cal.working_minutes_between(start, end) == minutes
