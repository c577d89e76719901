"""Notices QA (session 17): template-field lines the console dropped without a word, 重新启动发送 pressed on a
notice that is not going out (a draft, or one finished meanwhile in another tab), titles nobody can read, and a
fan-out that asked WeChat once per subscriber after it had refused the notice's page or template for everyone."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from wxapp_backend.audit import AuditLog
from wxapp_backend.notices import broadcast
from wxapp_backend.notices.broadcast_models import Notice, OutboxRow
from wxapp_backend.notices.models import SubscribeCredit

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


def _console_create(client, csrf, template_fields: str):
    return client.post("/console/notices/new", data={
        "csrf_token": csrf, "kind": "policy", "title": "稳岗补贴开始申报", "summary": "本周五前提交材料",
        "audience_all": "1", "template_fields": template_fields})


# --- 1. template-field lines the console dropped ------------------------------------------------------------

def test_full_width_equals_and_colons_from_a_chinese_input_method_are_read(app_ctx, client, make_staff,
                                                                           console_login, db):
    """“thing1＝…” (the ＝ a Chinese input method types) and “thing3：…” were dropped without a word: the notice went
    out with values made from the title, not the ones the staff member wrote."""
    csrf = console_login(make_staff(role="staff"))
    resp = _console_create(client, csrf, "thing1＝补贴申报截止提醒\nthing3：请带好营业执照")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    fields = db.scalars(select(Notice)).one().template_fields
    assert fields["thing1"] == "补贴申报截止提醒" and fields["thing3"] == "请带好营业执照", fields


def test_a_template_field_line_without_a_field_name_is_refused_in_chinese(app_ctx, client, make_staff,
                                                                          console_login, db):
    """A line that names no field (“请带好营业执照”) was dropped and the draft saved as if it were not there."""
    csrf = console_login(make_staff(role="staff"))
    resp = _console_create(client, csrf, "thing1=补贴申报截止提醒\n请带好营业执照")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422, page
    assert "第 2 行" in page and "请带好营业执照" in page
    assert db.scalars(select(Notice)).all() == []
    # The same form, corrected, saves (its one-time token was not used up by the refused post).
    resp = _console_create(client, csrf, "thing1=补贴申报截止提醒\nthing3=请带好营业执照")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert db.scalars(select(Notice)).one().template_fields["thing3"] == "请带好营业执照"


def test_a_template_field_written_twice_is_refused_on_edit(app_ctx, client, make_staff, console_login, db,
                                                           staff_headers):
    """Two lines for thing1: the last quietly won; the staff member meant one of them."""
    staff = make_staff(role="staff")
    nid = client.post("/api/v1/staff/notices", headers=staff_headers(staff), json={
        "title": "稳岗补贴开始申报", "audience": {"all": True}}).get_json()["id"]
    csrf = console_login(staff)
    resp = client.post(f"/console/notices/{nid}/edit", data={
        "csrf_token": csrf, "kind": "policy", "title": "稳岗补贴开始申报", "summary": "", "audience_all": "1",
        "template_fields": "thing1=补贴申报截止提醒\nthing1=补贴申报开始"})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422, page
    assert "thing1" in page and "两次" in page
    db.expire_all()
    assert db.get(Notice, nid).template_fields["thing1"] == "稳岗补贴开始申报"


# --- 2. 重新启动发送 on a notice that is not going out ------------------------------------------------------------

def _resumed(db, nid: int) -> list[AuditLog]:
    return list(db.scalars(select(AuditLog).where(AuditLog.action == "notice.resumed",
                                                  AuditLog.target_id == str(nid))))


def test_restarting_a_draft_says_it_was_never_published_and_records_nothing(app_ctx, client, make_user, make_staff,
                                                                           console_login, staff_headers, db):
    """The button answered “已重新启动发送” for a draft nobody had published, and the audit log said it was restarted."""
    make_user()
    staff = make_staff(role="staff")
    nid = client.post("/api/v1/staff/notices", headers=staff_headers(staff), json={
        "title": "稳岗补贴开始申报", "audience": {"all": True}}).get_json()["id"]
    csrf = console_login(staff)
    page = client.post(f"/console/notices/{nid}/resume", data={"csrf_token": csrf},
                       follow_redirects=True).get_data(as_text=True)
    assert "已重新启动发送" not in page and "还是草稿" in page, page
    assert _resumed(db, nid) == []
    db.expire_all()
    assert db.get(Notice, nid).status == "draft"


def test_restarting_a_notice_finished_in_another_tab_says_it_is_done(app_ctx, client, published_notice, run_jobs,
                                                                     make_staff, console_login, db):
    """A progress page left open in another tab: pressed after the notice had finished, the button said the sending
    was restarted (“收回 0 条”) and logged a restart of a finished notice."""
    nid = published_notice(2)
    run_jobs()
    db.expire_all()
    assert db.get(Notice, nid).status == "done"
    csrf = console_login(make_staff(role="staff"))
    page = client.post(f"/console/notices/{nid}/resume", data={"csrf_token": csrf},
                       follow_redirects=True).get_data(as_text=True)
    assert "已重新启动发送" not in page and "已全部发送完成" in page, page
    assert _resumed(db, nid) == []


# --- 3. a title nobody can read --------------------------------------------------------------------------------

def test_a_title_that_shows_nothing_or_breaks_the_line_is_refused(app_ctx, client, make_user, make_staff,
                                                                 staff_headers, db):
    """Hangul fillers, a blank braille pattern or a lone variation selector passed as a title: every inbox got a
    message with a blank title, and the subscribe message's thing1 showed nothing. A line break split the inbox
    list's one-line title in two."""
    make_user()
    h = staff_headers(make_staff(role="staff"))
    for title in ("\u3164\u3164", "\u2800", "\ufe0f", "稳岗补贴\n开始申报"):
        resp = client.post("/api/v1/staff/notices", headers=h, json={"title": title, "audience": {"all": True}})
        body = resp.get_json()
        assert resp.status_code == 422, (title, body)
        assert "title" in body["fields"] and "标题" in body["message"]
    assert db.scalars(select(Notice)).all() == []
    nid = client.post("/api/v1/staff/notices", headers=h, json={"title": "稳岗补贴🎉开始申报",
                                                                "audience": {"all": True}}).get_json()["id"]
    resp = client.patch(f"/api/v1/staff/notices/{nid}", headers=h, json={"title": "\u3164"})
    assert resp.status_code == 422 and "title" in resp.get_json()["fields"]
    db.expire_all()
    assert db.get(Notice, nid).title == "稳岗补贴🎉开始申报"


# --- 4. a refusal that holds for every subscriber ---------------------------------------------------------------

@pytest.mark.parametrize("errcode,reason", [(41030, "页面路径无效"), (40037, "模板编号无效")])
def test_a_page_or_template_wechat_refuses_stops_the_fan_out_after_the_first_refusal(
        published_notice, run_jobs, standin, db, errcode, reason):
    """A mistyped page (pages/notice/detial) or a template deleted in the admin console: WeChat refuses the same
    notice for every subscriber, yet each one was sent and refused in turn, a call of the day's quota apiece (10,000
    subscribers, 10,000 refusals) and minutes of “发送中” before staff learnt why."""
    nid = published_notice(4, fanout_send_chunk=2)
    standin.fail_next(SUBSCRIBE, errcode)
    run_jobs()
    assert standin.count(SUBSCRIBE) == 1
    db.expire_all()
    rows = db.scalars(select(OutboxRow).where(OutboxRow.notice_id == nid, OutboxRow.channel == "subscribe")).all()
    assert [r.status for r in rows] == ["failed"] * 4 and {r.errcode for r in rows} == {errcode}
    # No credit spent: WeChat took none of them.
    assert {c.credits for c in db.scalars(select(SubscribeCredit))} == {1}
    p = broadcast.progress(db, nid)
    assert p["finished"] and p["subscribe"]["failed"] == 4
    assert all(reason in f["detail"] for f in p["failures"]), p["failures"]
    assert any("其余" in f["detail"] for f in p["failures"]), p["failures"]
    (halted,) = db.scalars(select(AuditLog).where(AuditLog.action == "notice.send_halted",
                                                  AuditLog.target_id == str(nid)))
    assert halted.data["errcode"] == errcode and halted.data["failed"] == 3
