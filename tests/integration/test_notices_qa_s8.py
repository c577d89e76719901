"""Notices QA: bad composer input, stale subscribe-message fields, failure summaries, test recipients."""

from __future__ import annotations

import pytest

from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope
from wxapp_backend.notices import credits
from wxapp_backend.notices.broadcast_models import Notice, StaffTestRecipient
from wxapp_backend.notices.kinds import get_kind

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


@pytest.fixture
def staff_h(make_staff, staff_headers):
    return staff_headers(make_staff(role="staff"))


def _create(client, headers, **kw):
    body = {"title": "稳岗补贴开始申报", "summary": "本周五前提交材料", "page": "pages/notice/detail",
            "audience": {"all": True}}
    body.update(kw)
    return client.post("/api/v1/staff/notices", json=body, headers=headers)


# --- composer input ------------------------------------------------------------------------------------

def test_a_missing_related_activity_is_422_not_500(app_ctx, client, make_user, staff_h, make_staff, console_login,
                                                   db):
    make_user()
    resp = _create(client, staff_h, activity_id=99999)
    assert resp.status_code == 422, resp.get_data(as_text=True)
    assert "activity_id" in resp.get_json()["fields"]
    nid = _create(client, staff_h).get_json()["id"]
    resp = client.patch(f"/api/v1/staff/notices/{nid}", json={"activity_id": 99999}, headers=staff_h)
    assert resp.status_code == 422 and "activity_id" in resp.get_json()["fields"]
    csrf = console_login(make_staff(role="staff"))
    page = client.post("/console/notices/new", data={"csrf_token": csrf, "title": "午间一小时开课",
                                                     "audience_all": "1", "activity_id": "99999"})
    assert page.status_code == 422 and "相关活动" in page.get_data(as_text=True)
    assert db.query(Notice).count() == 1


@pytest.mark.parametrize("value", [None, True, {"a": 1}, ["稳岗补贴"]])
def test_template_values_that_are_not_text_are_refused(app_ctx, client, make_user, staff_h, value):
    # str() used to turn them into "None", "True", "{'a': 1}": text WeChat takes and users would read.
    make_user()
    resp = _create(client, staff_h, template_fields={"thing1": value, "time2": "2025-03-01 09:00"})
    assert resp.status_code == 422, resp.get_json()
    assert "template_fields.thing1" in resp.get_json()["fields"]


def test_numbers_are_still_taken_for_number_fields(app_ctx, client, make_user, staff_h, monkeypatch):
    # Keys the notice template lacks are refused (a 47003 for every subscriber): a template with a number field.
    from dataclasses import replace

    from wxapp_backend.notices import kinds

    notice = replace(kinds.DEFAULT_KINDS["notice"], fields={"thing1": "title", "number2": "count", "time3": "time"},
                     defaults={})
    monkeypatch.setattr(kinds, "current_kinds", lambda: {**kinds.DEFAULT_KINDS, "notice": notice})
    make_user()
    resp = _create(client, staff_h, template_fields={"thing1": "稳岗补贴", "number2": 120})
    assert resp.status_code == 201 and resp.get_json()["template_fields"]["number2"] == "120"


def test_editing_the_title_updates_the_subscribe_message_made_from_it(app_ctx, client, make_user, staff_h):
    make_user()
    n = _create(client, staff_h).get_json()
    assert n["template_fields"]["thing1"] == "稳岗补贴开始申报"
    resp = client.patch(f"/api/v1/staff/notices/{n['id']}", json={"title": "一次性扩岗补助开始申报",
                                                                   "summary": "月底前提交"}, headers=staff_h)
    assert resp.status_code == 200
    fields = resp.get_json()["template_fields"]
    assert fields["thing1"] == "一次性扩岗补助开始申报" and fields["thing3"] == "月底前提交"


def test_editing_the_title_keeps_values_staff_wrote_themselves(app_ctx, client, make_user, staff_h):
    make_user()
    given = {"thing1": "补贴申报提醒", "time2": "2025-03-01 09:00", "thing3": "请尽快提交"}
    n = _create(client, staff_h, template_fields=given).get_json()
    resp = client.patch(f"/api/v1/staff/notices/{n['id']}", json={"title": "新的标题"}, headers=staff_h)
    assert resp.status_code == 200 and resp.get_json()["template_fields"] == given


# --- progress ------------------------------------------------------------------------------------------

def test_failure_reasons_add_up_across_users(app_ctx, client, make_user, staff_h, run_jobs, standin, app,
                                             monkeypatch):
    # WeChat ends every errmsg with a per-call "rid: ...": grouping by the raw text gave one line per user.
    for k, v in {"fanout_rate": 10000, "fanout_burst": 100, "fanout_jobs": 1}.items():
        monkeypatch.setitem(app.extensions["wxapp"].settings.extra, k, v)
    template = get_kind("notice").template_id
    users = [make_user() for _ in range(3)]
    with session_scope() as s:
        for u in users:
            credits.add_credit(s, u.id, template)
    nid = _create(client, staff_h).get_json()["id"]
    standin.fail_next(SUBSCRIBE, 47003, times=3)
    client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=staff_h)
    run_jobs()
    prog = client.get(f"/api/v1/staff/notices/{nid}/progress", headers=staff_h).get_json()
    assert prog["finished"] and prog["subscribe"]["failed"] == 3
    assert len(prog["failures"]) == 1, prog["failures"]
    assert prog["failures"][0]["errcode"] == 47003 and prog["failures"][0]["count"] == 3
    assert "rid" not in prog["failures"][0]["detail"]


# --- test recipient ------------------------------------------------------------------------------------

def test_a_mistyped_test_recipient_does_not_clear_the_saved_one(app_ctx, client, make_user, make_staff,
                                                                console_login, db):
    staff = make_staff(role="staff")
    user = make_user()
    csrf = console_login(staff)
    client.post("/console/notices/test-recipient", data={"csrf_token": csrf, "user_id": str(user.id)},
                follow_redirects=True)
    resp = client.post("/console/notices/test-recipient", data={"csrf_token": csrf, "user_id": "12a"},
                       follow_redirects=True)
    assert "已保存" not in resp.get_data(as_text=True) and "没有改动" in resp.get_data(as_text=True)
    db.expire_all()
    assert db.get(StaffTestRecipient, staff.id).user_id == user.id


def test_setting_the_test_recipient_is_audited(app_ctx, client, make_user, make_staff, staff_headers, db):
    # Test sends go to whoever is set here, so who set whom must be on record.
    staff = make_staff(role="staff")
    h = staff_headers(staff)
    user = make_user()
    assert client.put("/api/v1/staff/me/test-recipient", json={"user_id": user.id}, headers=h).status_code == 200
    assert client.put("/api/v1/staff/me/test-recipient", json={"user_id": None}, headers=h).status_code == 200
    rows = db.query(AuditLog).filter(AuditLog.action.like("notice.test_recipient%")).order_by(AuditLog.id).all()
    assert [(r.actor_id, r.data.get("user_id")) for r in rows] == [(str(staff.id), user.id), (str(staff.id), None)]


# --- notify() ------------------------------------------------------------------------------------------

def test_a_field_given_as_none_takes_the_kinds_default_not_the_word_none(app_ctx, make_user, standin):
    from wxapp_backend.notices.jobs import deliver_notification
    from wxapp_backend.notices.services import notify

    user = make_user()
    template = get_kind("activity_reminder").template_id
    with session_scope() as s:
        credits.add_credit(s, user.id, template)
        nid = notify(s, user.id, "activity_reminder",
                     {"title": "午间一小时瑜伽", "time": "2025-10-16T12:00:00+08:00", "place": None, "note": None},
                     "pages/activity/detail?id=1", title="活动提醒：午间一小时瑜伽").id
    assert deliver_notification(nid) == "sent_subscribe"
    data = standin.calls_to(SUBSCRIBE)[-1].body["data"]
    assert data["thing3"]["value"] == "详见活动页面" and data["thing4"]["value"] == "请准时参加"


def test_publishing_a_draft_days_later_sends_the_publishing_time(app_ctx, client, make_user, staff_h, db):
    """The subscribe message's time value made from the draft said when the draft was started, not when the
    notice went out; values staff wrote themselves are left as they are."""
    from wxapp_backend.wechat.templates import field_type

    make_user()
    made = _create(client, staff_h).get_json()
    own = _create(client, staff_h, title="自填", template_fields={"thing1": "自填标题", "time2": "2025-01-01 09:00",
                                                               "thing3": "自填说明"}).get_json()
    times = [k for k in made["template_fields"] if field_type(k) in ("time", "date")]
    assert times, made["template_fields"]
    with session_scope() as s:  # the drafts were started three days ago
        for nid in (made["id"], own["id"]):
            n = s.get(Notice, nid)
            n.template_fields = {**n.template_fields, **{k: "2025-01-01 09:00" for k in times}}
    for nid in (made["id"], own["id"]):
        assert client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=staff_h).status_code == 200
    db.expire_all()
    sent = db.get(Notice, made["id"]).template_fields
    assert all(sent[k] != "2025-01-01 09:00" for k in times) and sent["thing1"] == "稳岗补贴开始申报", sent
    assert db.get(Notice, own["id"]).template_fields["time2"] == "2025-01-01 09:00"
