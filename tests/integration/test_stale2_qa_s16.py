"""Sixteenth QA pass (stale2): the stale-page check on the other console edit forms two staff can share —
knowledge-base entries (already had one), activities, notice drafts and staff accounts."""

from __future__ import annotations

import re

from tests.integration.test_ent6_qa_s16 import _form_fields, _second_browser
from tests.integration.test_kb2_qa_s11 import kb  # noqa: F401 - that pass's fixture
from wxapp_backend.activities.models import Activity
from wxapp_backend.auth.models import StaffUser
from wxapp_backend.notices.broadcast_models import Notice


def _fields(page: str) -> dict[str, str]:
    """The posted form's values as a browser sends them (pass ent6's helper, unticked boxes left out)."""
    forms = [
        seg.split('<form method="post"')[-1].split(">", 1)[1]
        for seg in page.split("</form>")
        if '<form method="post"' in seg
    ]
    form = max(forms, key=lambda f: f.count("name="))  # the edit form, not the layout's log-out button
    form = re.sub(r'<input type="checkbox"(?![^>]*\bchecked\b)[^>]*>', "", form)
    return _form_fields('class="form" id="f">' + form + "</form>")


def _two_pages(app, client, console_login, make_staff, url, role="staff"):
    console_login(make_staff(role=role))
    other = _second_browser(app, make_staff(role=role))
    mine = _fields(client.get(url).get_data(as_text=True))
    theirs = _fields(other.get(url).get_data(as_text=True))
    return other, mine, theirs


def test_a_kb_entry_saved_from_a_stale_page_is_refused_but_a_double_click_is_not(
    app, client, kb, make_staff, console_login, db
):
    url = "/console/kb/talent-foreign-work-permit/edit"
    other, mine, theirs = _two_pages(app, client, console_login, make_staff, url)
    assert other.post(url, data={**theirs, "category": "同事改的分类"}).status_code == 302
    r = client.post(url, data={**mine, "window": "全年受理"})
    assert r.status_code == 409 and "同事改的分类" in r.get_data(as_text=True)
    # the colleague's double click: the same save again is no conflict
    assert other.post(url, data={**theirs, "category": "同事改的分类"}).status_code == 302


def test_an_activity_saved_from_a_stale_page_is_refused_not_written_over(
    app, client, make_activity, make_staff, console_login, db
):
    a = make_activity(title="楼宇音乐会", address="中心大厦")
    url = f"/console/activities/{a.id}/edit"
    other, mine, theirs = _two_pages(app, client, console_login, make_staff, url)
    assert "updated_at" in mine
    r = other.post(url, data={**theirs, "address": "新华大厦大堂"})
    assert r.status_code == 302, r.get_data(as_text=True)
    assert other.post(url, data={**theirs, "address": "新华大厦大堂"}).status_code == 302  # double click
    r = client.post(url, data={**mine, "title": "楼宇新年音乐会"})
    assert r.status_code == 409, r.status_code
    page = r.get_data(as_text=True)
    assert "其他同事修改" in page and "新华大厦大堂" in page.split('id="edit-conflict"')[1], page
    db.expire_all()
    assert (db.get(Activity, a.id).title, db.get(Activity, a.id).address) == ("楼宇音乐会", "新华大厦大堂")
    again = _fields(page)
    assert again["title"] == "楼宇新年音乐会"
    r = client.post(url, data={**again, "address": "新华大厦大堂"})
    assert r.status_code == 302, r.get_data(as_text=True)
    db.expire_all()
    assert (db.get(Activity, a.id).title, db.get(Activity, a.id).address) == (
        "楼宇新年音乐会",
        "新华大厦大堂",
    )


def test_a_notice_draft_saved_from_a_stale_page_is_refused_not_written_over(
    app, client, make_staff, console_login, db
):
    from wxapp_backend.audit import Actor
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import broadcast

    author = make_staff(role="staff")
    with session_scope() as s:
        n = broadcast.create_notice(
            s,
            Actor("staff", author.id, role="staff"),
            {"kind": "policy", "title": "稳岗补贴申报", "summary": "三月开始", "audience": {"all": True}},
        )
        nid = n.id
    url = f"/console/notices/{nid}/edit"
    other, mine, theirs = _two_pages(app, client, console_login, make_staff, url)
    assert "updated_at" in mine
    assert other.post(url, data={**theirs, "summary": "同事改的摘要"}).status_code == 302
    assert other.post(url, data={**theirs, "summary": "同事改的摘要"}).status_code == 302  # double click
    r = client.post(url, data={**mine, "title": "稳岗补贴申报开始"})
    assert r.status_code == 409, r.status_code
    page = r.get_data(as_text=True)
    assert "其他同事修改" in page and "同事改的摘要" in page.split('id="edit-conflict"')[1], page
    db.expire_all()
    assert (db.get(Notice, nid).title, db.get(Notice, nid).summary) == ("稳岗补贴申报", "同事改的摘要")
    again = _fields(page)
    assert again["title"] == "稳岗补贴申报开始"
    assert client.post(url, data={**again, "summary": "同事改的摘要"}).status_code == 302
    db.expire_all()
    assert (db.get(Notice, nid).title, db.get(Notice, nid).summary) == ("稳岗补贴申报开始", "同事改的摘要")


def test_a_staff_account_saved_from_a_stale_page_is_refused_not_written_over(
    app, client, make_staff, console_login, db
):
    target = make_staff(role="staff")
    url = f"/console/staff/{target.id}/edit"
    other, mine, theirs = _two_pages(app, client, console_login, make_staff, url, role="admin")
    assert "version" in mine  # no updated_at column: a digest of the profile as loaded
    assert other.post(url, data={**theirs, "role": "dept", "department": "营商办"}).status_code == 302
    assert other.post(url, data={**theirs, "role": "dept", "department": "营商办"}).status_code == 302
    r = client.post(url, data={**mine, "display_name": "张三"})
    assert r.status_code == 409, r.status_code
    page = r.get_data(as_text=True)
    assert "其他同事修改" in page and "营商办" in page.split('id="edit-conflict"')[1], page
    db.expire_all()
    row = db.get(StaffUser, target.id)
    assert (row.role, row.display_name) == ("dept", target.username), (row.role, row.display_name)
    again = _fields(page)
    assert again["display_name"] == "张三"
    assert client.post(url, data={**again, "role": "dept", "department": "营商办"}).status_code == 302
    db.expire_all()
    row = db.get(StaffUser, target.id)
    assert (row.role, row.display_name) == ("dept", "张三")


def test_an_activity_page_sent_as_saved_with_a_multi_line_description_is_no_conflict(
    app, client, make_activity, make_staff, console_login, db
):
    """A browser sends a textarea's line breaks as CR LF: a page sent back with what is saved now (a colleague's
    change, made through the API, typed in too) changes nothing and is no conflict."""
    from wxapp_backend.activities import services
    from wxapp_backend.audit import Actor
    from wxapp_backend.db import session_scope

    a = make_activity(title="楼宇音乐会", description="第一行\n第二行", address="中心大厦")
    url = f"/console/activities/{a.id}/edit"
    staff = make_staff(role="staff")
    console_login(staff)
    mine = _fields(client.get(url).get_data(as_text=True))
    with session_scope() as s:
        services.update_activity(s, Actor("staff", staff.id, role="staff"), a.id, {"address": "新华大厦大堂"})
    sent = {**mine, "description": mine["description"].replace("\n", "\r\n"), "address": "新华大厦大堂"}
    r = client.post(url, data=sent)
    assert r.status_code == 302, r.get_data(as_text=True)


def test_a_refused_save_for_another_reason_keeps_the_version_the_page_was_loaded_on(
    app, client, make_activity, make_staff, console_login, db
):
    a = make_activity(title="楼宇音乐会", address="中心大厦")
    url = f"/console/activities/{a.id}/edit"
    other, mine, theirs = _two_pages(app, client, console_login, make_staff, url)
    r = client.post(url, data={**mine, "title": ""})  # refused for the empty name
    assert r.status_code == 422, r.status_code
    again = _fields(r.get_data(as_text=True))
    assert again["updated_at"] == mine["updated_at"]
    assert other.post(url, data={**theirs, "address": "新华大厦大堂"}).status_code == 302
    r = client.post(url, data={**again, "title": "楼宇新年音乐会"})
    assert r.status_code == 409, r.status_code
    db.expire_all()
    assert db.get(Activity, a.id).address == "新华大厦大堂"


def test_a_staff_account_refused_for_another_reason_keeps_its_version(
    app, client, make_staff, console_login, db
):
    target = make_staff(role="staff")
    url = f"/console/staff/{target.id}/edit"
    other, mine, theirs = _two_pages(app, client, console_login, make_staff, url, role="admin")
    assert other.post(url, data={**theirs, "display_name": "李四"}).status_code == 302
    r = client.post(url, data={**mine, "role": "dept", "department": ""})  # 部门账号 needs its department
    assert r.status_code == 422, r.status_code
    again = _fields(r.get_data(as_text=True))
    assert again["version"] == mine["version"]
    r = client.post(url, data={**again, "role": "dept", "department": "营商办"})
    assert r.status_code == 409, r.status_code
    assert "李四" in r.get_data(as_text=True).split('id="edit-conflict"')[1]
    db.expire_all()
    assert (db.get(StaffUser, target.id).role, db.get(StaffUser, target.id).display_name) == ("staff", "李四")
