"""Console refusals read as refusals: flashed with the "error" category (role=alert, the warning colour), while a
done action stays a plain status message (session 16, after the browser pass moved the appeal and publish ones)."""

from __future__ import annotations

import re

ALERT = re.compile(r'<div class="flash error" role="alert">([^<]*)</div>')
STATUS = re.compile(r'<div class="flash" role="status">([^<]*)</div>')


def test_a_mistyped_test_recipient_is_flashed_as_a_refusal(client, make_user, make_staff, console_login):
    csrf = console_login(make_staff(role="staff"))
    resp = client.post("/console/notices/test-recipient", data={"csrf_token": csrf, "user_id": "abc"})
    assert resp.status_code == 302
    page = client.get("/console/notices").get_data(as_text=True)
    assert ALERT.findall(page) == ["用户编号应为正整数，测试接收人没有改动。"], page
    # A done change is still a status message.
    resp = client.post("/console/notices/test-recipient", data={"csrf_token": csrf, "user_id": str(make_user().id)})
    page = client.get("/console/notices").get_data(as_text=True)
    assert STATUS.findall(page) == ["测试接收人已保存。"] and not ALERT.findall(page), page


def test_editing_a_published_notice_is_flashed_as_a_refusal(client, make_staff, console_login, db):
    from wxapp_backend.notices.broadcast_models import Notice

    staff = make_staff(role="staff")
    console_login(staff)
    n = Notice(title="停水通知", summary="明天停水", audience={"all": True}, status="done", created_by=staff.id)
    db.add(n)
    db.commit()
    resp = client.get(f"/console/notices/{n.id}/edit")
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert ALERT.findall(page) == ["通知已发布，不能再修改。"], page
