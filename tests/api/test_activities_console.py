"""Console pages for activities: editor with Chinese errors, registrations, XLSX export, statistics, nav."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

from openpyxl import load_workbook

from wxapp_backend.activities import services
from wxapp_backend.activities.models import Activity
from wxapp_backend.db import session_scope


def _form(csrf, **kw):
    start = datetime.now(UTC) + timedelta(days=2, hours=8)
    data = {"csrf_token": csrf, "category": "cfo_salon", "title": "财务经理沙龙", "address": "服务中心 2 楼",
            "starts_at": start.strftime("%Y-%m-%dT%H:%M"), "ends_at": (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
            "capacity": "2", "waitlist_enabled": "on", "status": "published",
            "questions": '[{"key":"company","label":"公司名称","type":"text","required":true}]'}
    data.update(kw)
    return data


def test_editor_creates_and_reports_errors(client, make_staff, console_login, db):
    csrf = console_login(make_staff(role="staff"))
    assert "新建活动" in client.get("/console/activities/new").get_data(as_text=True)
    bad = client.post("/console/activities/new", data=_form(csrf, capacity="0"))
    assert bad.status_code == 422 and "名额必须大于 0" in bad.get_data(as_text=True)
    bad = client.post("/console/activities/new", data=_form(csrf, questions="not json"))
    assert bad.status_code == 422 and "JSON" in bad.get_data(as_text=True)
    ok = client.post("/console/activities/new", data=_form(csrf))
    assert ok.status_code == 302
    a = db.query(Activity).one()
    assert a.questions[0]["key"] == "company" and a.capacity == 2
    edit = client.post(f"/console/activities/{a.id}/edit", data=_form(csrf, capacity="5", title="沙龙（改）"))
    assert edit.status_code == 302
    db.expire_all()
    assert db.get(Activity, a.id).capacity == 5
    page = client.get("/console/activities").get_data(as_text=True)
    assert "沙龙（改）" in page and 'href="/console/checkin"' in page


def test_registrations_page_export_and_stats(client, make_staff, console_login, make_user, app_ctx):
    csrf = console_login(make_staff(role="staff"))
    client.post("/console/activities/new", data=_form(csrf, questions=""))
    users = [make_user(nickname=name) for name in ("=cmd|' /C calc'!A0", "张三", "李四")]
    with session_scope() as s:
        aid = s.query(Activity).one().id
        for u in users:
            services.register(s, activity_id=aid, user_id=u.id)
    page = client.get(f"/console/activities/{aid}/registrations").get_data(as_text=True)
    assert "张三" in page and "候补中" in page
    resp = client.get(f"/console/activities/{aid}/registrations.xlsx")
    assert resp.status_code == 200
    ws = load_workbook(io.BytesIO(resp.data)).active
    values = [row for row in ws.iter_rows(values_only=True)]
    assert values[0][0] == "报名编号" and len(values) == 4
    # formula injection neutralised: stored as text (never a formula), shown as typed
    assert values[1][1] == "=cmd|' /C calc'!A0" and ws.cell(row=2, column=2).data_type == "s"
    # cancelling from the console promotes the waitlist
    first = values[1][0]
    client.post(f"/console/registrations/{first}/cancel", data={"csrf_token": csrf})
    page = client.get(f"/console/activities/{aid}/registrations").get_data(as_text=True)
    assert page.count("报名成功") == 2
    assert client.get("/console/activities/stats").status_code == 200
