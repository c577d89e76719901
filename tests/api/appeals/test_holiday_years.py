"""chinesecalendar knows the State Council's holiday notices up to the year it was released after (2026 for 1.11.0):
from then on the SLA clocks count the Spring Festival as working days unless staff enter it, and nothing said so.
The console now says which years need entering, on the holidays page and as a dashboard card."""

from __future__ import annotations

from datetime import UTC, date, datetime

from wxapp_backend.appeals import console as appeals_console
from wxapp_backend.appeals.calendar import library_knows, missing_holiday_years


def test_the_years_no_source_knows():
    assert not library_knows(2099)
    assert missing_holiday_years({}, date(2099, 6, 1)) == [2099]
    assert missing_holiday_years({}, date(2099, 11, 5)) == [2099, 2100]  # next year's notice comes in November
    assert missing_holiday_years({date(2099, 10, 1): False}, date(2099, 11, 5)) == [2100]
    assert missing_holiday_years({}, date(2020, 11, 5)) == []  # the library knows 2020 and 2021


def test_the_console_asks_for_them(client, make_staff, console_login, monkeypatch):
    monkeypatch.setattr(appeals_console, "utcnow", lambda: datetime(2099, 11, 5, 2, 0, tzinfo=UTC))
    csrf = console_login(make_staff(role="admin"))
    page = client.get("/console/appeal-holidays").get_data(as_text=True)
    assert 'id="missing-years"' in page and "2099、2100 年" in page
    dashboard = client.get("/console/").get_data(as_text=True)
    assert "节假日表待补充" in dashboard and "2099 年、2100 年" in dashboard
    for day in ("2099-10-01", "2100-01-01"):
        resp = client.post("/console/appeal-holidays", data={"csrf_token": csrf, "day": day, "is_workday": "false",
                                                      "name": "节日"})
        assert resp.status_code == 302
    assert 'id="missing-years"' not in client.get("/console/appeal-holidays").get_data(as_text=True)
    assert "节假日表待补充" not in client.get("/console/").get_data(as_text=True)
