"""Staff console as a whole, as a demanding user meets it: roles, exports, bad parameters, sessions and tokens."""

from __future__ import annotations

import io
import re
from datetime import datetime

from openpyxl import load_workbook

from wxapp_backend.appeals import services as appeal_services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.appeals.models import Appeal
from wxapp_backend.audit import SYSTEM
from wxapp_backend.auth.models import StaffUser
from wxapp_backend.auth.services import set_staff_password
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


def _card(page: str, title: str) -> str:
    m = re.search(rf'<span class="label">{title}</span><span class="value">([^<]*)</span>'
                  r'<span class="hint">([^<]*)</span>', page)
    assert m, title
    return m.group(1) + "|" + m.group(2)


def test_dept_dashboard_counts_only_its_own_departments_appeals(client, make_user, make_staff, console_login):
    """A department account's queue shows its own appeals; the dashboard cards above it must not show the whole
    centre's open, overdue and escalated counts (other departments' business) as if they were its own."""
    user = make_user(nickname="张三")
    ids = [_submit(user.id, f"第{i}件：公司门口的路灯坏了很久没人修") for i in range(4)]
    with session_scope() as s:
        for appeal_id, dept in zip(ids, ("税务所", "城运中心", "城运中心", "城运中心"), strict=True):
            appeal = s.get(Appeal, appeal_id)
            appeal.department = dept
            appeal.given_to = dept  # given out (交办) to it: a department's view (appeals6, s13)
            appeal.overdue = dept == "城运中心"
            appeal.escalated = dept == "城运中心"
    console_login(make_staff(role="dept", department="税务所"))
    page = client.get("/console/").get_data(as_text=True)
    assert _card(page, "在办诉求") == "1|其中超期 0 件"
    assert _card(page, r"办不成事（在办）").startswith("0|")
    queue = client.get("/console/appeals?open_only=true").get_data(as_text=True)
    assert "第0件" in queue and "第1件" not in queue  # the queue it links to agrees


def test_a_password_reset_ends_scripted_api_tokens_as_it_ends_console_sessions(client, make_staff, console_login):
    """`seed-demo --reset-admin-password` is what the centre runs when the admin password has leaked: whoever
    logged in with the old password must be out everywhere, not only in the console."""
    admin = make_staff(role="admin")
    resp = client.post("/api/v1/staff/login", json={"username": admin.username, "password": admin.plain_password})
    headers = {"Authorization": f"Bearer {resp.get_json()['token']}"}
    assert client.get("/api/v1/staff/appeals", headers=headers).status_code == 200
    console_login(admin)
    with session_scope() as s:
        set_staff_password(s, s.get(StaffUser, admin.id), "N3w-passw0rd", SYSTEM)
    assert client.get("/console/").status_code == 302  # the console session is over
    resp = client.get("/api/v1/staff/appeals", headers=headers)
    assert resp.status_code == 401, resp.get_json()
    assert resp.get_json()["error"] == "invalid_token"
    resp = client.post("/api/v1/staff/login", json={"username": admin.username, "password": "N3w-passw0rd"})
    fresh = {"Authorization": f"Bearer {resp.get_json()['token']}"}
    assert client.get("/api/v1/staff/appeals", headers=fresh).status_code == 200


def test_a_disabled_account_is_out_of_the_console_and_the_api_at_once(client, make_staff, console_login,
                                                                      staff_headers):
    staff = make_staff(role="staff")
    headers = staff_headers(staff)
    console_login(staff)
    assert client.get("/console/appeals").status_code == 200
    with session_scope() as s:
        s.get(StaffUser, staff.id).active = False
    assert client.get("/console/appeals").status_code == 302
    assert client.get("/api/v1/staff/appeals", headers=headers).status_code == 401
    resp = client.post("/api/v1/staff/login", json={"username": staff.username, "password": staff.plain_password})
    assert resp.status_code == 401


def test_logout_ends_the_session_for_a_copy_of_the_cookie_too(client, make_staff, console_login):
    """"您已安全退出" on a shared office PC: a copy of the cookie taken before (another browser profile, a
    proxy log) must not go on working for the 12 hours after, nor be refreshed by use for ever."""
    token = console_login(make_staff(role="admin"))
    copied = client.get_cookie("wxapp_console").value
    assert client.post("/console/logout", data={"csrf_token": token}).status_code == 302
    client.set_cookie("wxapp_console", copied)
    resp = client.get("/console/jobs")
    assert resp.status_code == 302 and "/console/login" in resp.headers["Location"]


def test_chat_simulator_sends_what_staff_typed_even_with_cdata_end_or_control_characters(client, make_staff,
                                                                                         console_login, app):
    """Text pasted from Word carries \\x0b, and "]]>" is ordinary text to a user: WeChat delivers both (escaped),
    so the simulator must too, instead of answering "［消息被拒绝］微信消息不是合法的 XML"."""
    token = console_login(make_staff(role="staff"))
    for text in ("办理营业执照]]>需要什么材料", "办理营业执照\x0b需要什么材料"):
        assert client.post("/console/chat", data={"csrf_token": token, "text": text}).status_code == 302
        page = client.get("/console/chat").get_data(as_text=True)
        assert "消息被拒绝" not in page, text
        client.post("/console/chat", data={"csrf_token": token, "action": "clear"})


def test_the_login_redirect_keeps_the_page_without_a_dangling_question_mark(client):
    from urllib.parse import parse_qs, urlsplit

    bare = client.get("/console/appeals")
    assert bare.status_code == 302
    assert parse_qs(urlsplit(bare.headers["Location"]).query)["next"] == ["/console/appeals"]
    with_query = client.get("/console/appeals?status=submitted")
    assert parse_qs(urlsplit(with_query.headers["Location"]).query)["next"] == ["/console/appeals?status=submitted"]
