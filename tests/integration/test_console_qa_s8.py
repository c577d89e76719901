"""Staff console as a whole, as a demanding user meets it: roles, exports, bad parameters, sessions and tokens."""

from __future__ import annotations

import io
from datetime import datetime

from openpyxl import load_workbook

from wxapp_backend.appeals import services as appeal_services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.db import session_scope

FORMULA = '=HYPERLINK("http://evil.example/","点此查看附件")'


def _submit(user_id: int, content: str, **kw):
    with session_scope() as s:
        appeal, _ = appeal_services.submit_appeal(s, user_id, appeal_services.Intake(
            content=content, contact_name="张三", contact_phone="13800138000", **kw))
        return appeal.id


def _formula_cells(data: bytes) -> list[str]:
    book = load_workbook(io.BytesIO(data))
    return [f"{ws.title}!{c.coordinate}={c.value}" for ws in book.worksheets for row in ws.iter_rows() for c in row
            if c.data_type == "f"]


def test_appeal_report_exports_never_write_a_formula(client, make_user, make_staff, console_login, staff_headers):
    """An enterprise writes the appeal text (and names its company when binding): text that starts with "="
    must reach staff's Excel as text, not as a formula that runs (or phones home) when the file is opened."""
    user = make_user(nickname="张三")
    _submit(user.id, FORMULA, enterprise_name="=1+1")
    admin = make_staff(role="admin")
    console_login(admin)
    week = datetime.now(TZ).date().isocalendar()
    label = f"{week[0]}-W{week[1]:02d}"
    for url in (f"/console/appeals/report.xlsx?week={label}", "/console/appeals/issues.xlsx"):
        resp = client.get(url)
        assert resp.status_code == 200, url
        assert _formula_cells(resp.data) == [], url
        book = load_workbook(io.BytesIO(resp.data))
        texts = [c.value for ws in book.worksheets for row in ws.iter_rows() for c in row]
        assert FORMULA in texts, url  # kept as the enterprise wrote it
    for url in (f"/api/v1/staff/reports/weekly?week={label}&format=xlsx",
                "/api/v1/staff/reports/enterprise-issues?format=xlsx"):
        resp = client.get(url, headers=staff_headers(admin))
        assert resp.status_code == 200, url
        assert _formula_cells(resp.data) == [], url


def test_weekly_report_for_a_week_of_year_one_is_a_chinese_error_not_a_500(client, make_staff, console_login,
                                                                           staff_headers):
    admin = make_staff(role="admin")
    console_login(admin)
    for week in ("0001-W01", "9999-W52"):
        resp = client.get(f"/console/appeals/report?week={week}")
        assert resp.status_code == 422, (week, resp.status_code)
        assert "年份" in resp.get_data(as_text=True)
        resp = client.get(f"/api/v1/staff/reports/weekly?week={week}", headers=staff_headers(admin))
        assert resp.status_code == 422, (week, resp.status_code)
        assert resp.get_json()["fields"].get("week")
