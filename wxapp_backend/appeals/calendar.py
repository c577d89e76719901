"""Working-day calendar for SLA clocks: Chinese holidays, make-up workdays, office hours in Asia/Shanghai.

Sources, strongest first: the staff-edited holiday table (overrides), chinesecalendar where it has data,
Monday-Friday beyond its range. Nothing here touches the database or raises for an unknown year.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Asia/Shanghai")
DAY_START = time(9, 0)
DAY_END = time(17, 30)
DAY_MINUTES = (DAY_END.hour * 60 + DAY_END.minute) - (DAY_START.hour * 60 + DAY_START.minute)  # 510

try:  # optional: the package knows the State Council's holiday notices year by year
    import chinese_calendar as _cc
except ImportError:  # pragma: no cover - the fallback is exercised by tests through unknown years
    _cc = None


def _library_workday(day: date) -> bool | None:
    if _cc is None:
        return None
    try:
        return bool(_cc.is_workday(day))
    except (NotImplementedError, KeyError, ValueError):  # outside the years it knows
        return None


def library_knows(year: int) -> bool:
    """Whether chinesecalendar has the State Council's holiday notice for `year`."""
    return _library_workday(date(year, 1, 1)) is not None


def missing_holiday_years(overrides: Mapping[date, bool], today: date) -> list[int]:
    """Years whose holidays no source knows, that SLA clocks need now: this year, and from November on (when the
    State Council publishes the next year's notice) the next one. The library's data ends with the last notice
    it was released after; then only the staff's table knows the Spring Festival, else it counts as working days."""
    years = [today.year] + ([today.year + 1] if today.month >= 11 else [])
    return [y for y in years if not library_knows(y) and not any(d.year == y for d in overrides)]


class WorkCalendar:
    """Which days are working days, and arithmetic in working minutes between 9:00 and 17:30."""

    def __init__(self, overrides: Mapping[date, bool] | None = None, *, use_library: bool = True) -> None:
        self.overrides = dict(overrides or {})
        self.use_library = use_library

    def is_workday(self, day: date) -> bool:
        if day in self.overrides:
            return self.overrides[day]
        if self.use_library:
            known = _library_workday(day)
            if known is not None:
                return known
        return day.weekday() < 5

    def source(self, day: date) -> str:
        """Where the answer for `day` comes from: table, library or weekday (shown in the console)."""
        if day in self.overrides:
            return "table"
        if self.use_library and _library_workday(day) is not None:
            return "library"
        return "weekday"

    # --- arithmetic ------------------------------------------------------------------------------

    def _next_open(self, local: datetime) -> datetime:
        """The first working instant at or after `local` (Shanghai time)."""
        for _ in range(3700):  # ten years of days: never loops forever on a mad table
            d = local.date()
            start = datetime.combine(d, DAY_START, TZ)
            end = datetime.combine(d, DAY_END, TZ)
            if self.is_workday(d):
                if local < start:
                    return start
                if local < end:
                    return local
            local = datetime.combine(d + timedelta(days=1), DAY_START, TZ)
        raise ValueError("no working day within ten years")

    def add_working_minutes(self, start: datetime, minutes: int) -> datetime:
        """The instant `minutes` working minutes after `start`; ends on a day's 17:30 rather than next 9:00."""
        local = _local(start)
        if minutes <= 0:
            return local.astimezone(UTC)
        remaining = minutes
        local = self._next_open(local)
        for _ in range(3700 * 2):
            end = datetime.combine(local.date(), DAY_END, TZ)
            left_today = int((end - local).total_seconds() // 60)
            if remaining <= left_today:
                return (local + timedelta(minutes=remaining)).astimezone(UTC)
            remaining -= left_today
            local = self._next_open(end)
        raise ValueError("deadline too far away")

    def add_working_days(self, start: datetime, days: int) -> datetime:
        return self.add_working_minutes(start, days * DAY_MINUTES)

    def working_minutes_between(self, start: datetime, end: datetime) -> int:
        """Working minutes from `start` to `end`; negative when `end` is earlier."""
        a, b = _local(start), _local(end)
        if b < a:
            return -self.working_minutes_between(end, start)
        total = 0
        d = a.date()
        while d <= b.date():
            if self.is_workday(d):
                lo = max(a, datetime.combine(d, DAY_START, TZ))
                hi = min(b, datetime.combine(d, DAY_END, TZ))
                if hi > lo:
                    total += int((hi - lo).total_seconds() // 60)
            d += timedelta(days=1)
        return total


def _local(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the working calendar")
    return value.astimezone(TZ)


def local_date(value: datetime) -> date:
    return _local(value).date()
