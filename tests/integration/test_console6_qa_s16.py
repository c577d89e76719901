"""Sixteenth pass over the staff console: CSRF on every form, markup typed into names, audit of logins."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope

PROBE = "\"'><x-probe onmouseover=alert(1)>"


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _audit_count() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count(AuditLog.id))) or 0


def _filled(rule) -> str:
    url = re.sub(r"<any\(([a-z_]+)[^>]*>", r"\1", rule.rule)
    url = re.sub(r"<int:[^>]+>", "1", url)
    return re.sub(r"<[^>]+>", "x", url)


def test_every_console_form_refuses_a_missing_wrong_or_borrowed_token(app, client, make_staff, console_login):
    admin = make_staff(role="admin")
    csrf = console_login(admin)
    other = app.test_client()
    borrowed = _csrf(other.get("/console/login").get_data(as_text=True))  # another browser's live token
    routes = [
        r
        for r in app.url_map.iter_rules()
        if r.rule.startswith("/console") and r.methods & {"POST", "PUT", "PATCH", "DELETE"}
    ]
    assert len(routes) >= 30
    before, problems = _audit_count(), []
    for rule in routes:
        for method in sorted(rule.methods & {"POST", "PUT", "PATCH", "DELETE"}):
            for token in (None, "", csrf[:-1] + ("A" if csrf[-1] != "A" else "B"), borrowed, "令牌"):
                data = (
                    {"title": "x", "active": "0"} if token is None else {"csrf_token": token, "active": "0"}
                )
                resp = client.open(_filled(rule), method=method, data=data)
                if resp.status_code != 400:
                    problems.append(f"{method} {rule.rule} token={token!r}: {resp.status_code}")
    assert not problems, "\n".join(problems)
    assert _audit_count() == before
    assert client.get("/console/").status_code == 200  # still logged in: the refusals did not end the login


def test_a_display_name_or_department_with_markup_is_shown_as_text_on_every_page(
    app, client, make_staff, console_login
):
    admin = make_staff(role="admin")
    with session_scope() as s:
        from wxapp_backend.auth.models import StaffUser

        row = s.get(StaffUser, admin.id)
        row.display_name, row.department = PROBE, PROBE
    make_staff(role="dept", department=PROBE)
    console_login(admin)
    problems = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/console") or "GET" not in rule.methods or rule.arguments:
            continue
        resp = client.get(_filled(rule))
        if b"<x-probe" in resp.get_data():
            problems.append(rule.rule)
    assert not problems, problems


def _rows(action: str) -> list[AuditLog]:
    with session_scope() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))


def test_logging_out_of_the_console_or_a_script_is_on_the_audit_log(client, make_staff, console_login):
    """The log said when a login began and never when it ended: who was at the console at a given time could not
    be told from it."""
    dept = make_staff(role="dept")
    csrf = console_login(dept)
    assert client.post("/console/logout", data={"csrf_token": csrf}).status_code == 302
    rows = _rows("staff.logout")
    assert [(r.actor_id, r.target_id, r.data.get("via")) for r in rows] == [
        (str(dept.id), str(dept.id), "console")
    ]
    # Pressed again in another tab: nobody was logged in, nothing more to record.
    page = client.get("/console/login").get_data(as_text=True)
    client.post("/console/logout", data={"csrf_token": _csrf(page)})
    assert len(_rows("staff.logout")) == 1

    token = client.post(
        "/api/v1/staff/login", json={"username": dept.username, "password": dept.plain_password}
    ).get_json()["token"]
    assert (
        client.post("/api/v1/staff/logout", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    )
    assert [r.data.get("via") for r in _rows("staff.logout")] == ["console", "api"]


def test_the_audit_page_names_a_logout_in_chinese():
    from wxapp_backend.console.audit_log import ACTION_LABELS

    assert ACTION_LABELS["staff.logout"] == "工作人员退出登录"


def test_the_registrations_workbook_keeps_text_starting_with_a_formula_sign_as_typed(
    client, make_staff, make_user, make_building, make_enterprise, user_token, staff_headers, console_login
):
    """The list put an apostrophe in front of such text (“'+8613800138000”, “'=1+1”): staff read, and passed on,
    something nobody typed. The other workbooks keep the text as it is, stored as text (never a formula)."""
    import io
    from datetime import UTC, datetime, timedelta

    import openpyxl

    admin = make_staff(role="admin")
    building = make_building(name="=楼")
    enterprise = make_enterprise(name="@企业", building_id=building.id)
    user = make_user(
        nickname="-小王", enterprise_id=enterprise.id, binding_state="verified", building_id=building.id
    )
    start = datetime.now(UTC) + timedelta(days=2)
    resp = client.post(
        "/api/v1/staff/activities",
        headers=staff_headers(admin),
        json={
            "category": "concert",
            "title": "音乐会",
            "address": "大堂",
            "capacity": 5,
            "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=2)).isoformat(),
            "questions": [{"key": "q1", "label": "=备注", "type": "text"}],
        },
    )
    activity_id = resp.get_json()["id"]
    resp = client.post(
        f"/api/v1/activities/{activity_id}/registrations",
        json={"answers": {"q1": "+86 请回电"}},
        headers=user_token(user),
    )
    assert resp.status_code == 201, resp.get_json()
    console_login(admin)
    book = openpyxl.load_workbook(
        io.BytesIO(client.get(f"/console/activities/{activity_id}/registrations.xlsx").data)
    )
    header, row = list(book.active.iter_rows())
    cells = {h.value: c for h, c in zip(header, row, strict=True)}
    assert header[-1].value == "=备注" and header[-1].data_type == "s"
    for name, typed in (("姓名/昵称", "-小王"), ("企业", "@企业"), ("楼宇", "=楼"), ("=备注", "+86 请回电")):
        assert (cells[name].value, cells[name].data_type) == (typed, "s"), name
        assert cells[name].quotePrefix, name  # still text when staff edit the cell in Excel
