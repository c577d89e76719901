"""Notices QA (session 14): template values pasted with invisible characters, why a fan-out is waiting, the
template a notice goes out with, and progress that adds up while the audience is still being written."""

from __future__ import annotations

import pytest

from wxapp_backend.notices import broadcast, credits
from wxapp_backend.notices.broadcast_models import Notice, OutboxRow
from wxapp_backend.notices.kinds import get_kind

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


@pytest.fixture
def staff_h(make_staff, staff_headers):
    return staff_headers(make_staff(role="staff"))


@pytest.fixture
def fast(app, monkeypatch):
    extra = app.extensions["wxapp"].settings.extra
    for k, v in {"fanout_rate": 10000, "fanout_burst": 100, "fanout_jobs": 1}.items():
        monkeypatch.setitem(extra, k, v)
    return extra


def _create(client, headers, **kw):
    body = {"title": "稳岗补贴开始申报", "summary": "本周五前提交材料", "audience": {"all": True}}
    body.update(kw)
    return client.post("/api/v1/staff/notices", json=body, headers=headers)


def _with_credit(make_user, n=1):
    from wxapp_backend.db import session_scope

    users = [make_user() for _ in range(n)]
    with session_scope() as s:
        for u in users:
            credits.add_credit(s, u.id, get_kind("notice").template_id)
    return users


# --- 1. template values pasted with invisible characters ------------------------------------------------------

def test_template_values_are_cleaned_of_invisible_characters_before_they_go_out(app_ctx, client, make_user, staff_h,
                                                                                run_jobs, standin, fast):
    """A value pasted from a web page or a chat kept its zero-width space, NUL and line break: it passed the length
    check and went to every subscriber as typed (WeChat refuses control characters with 47003)."""
    _with_credit(make_user)
    resp = _create(client, staff_h, template_fields={"thing1": " 稳岗补贴\u200b开始申报\x00 ",
                                                     "time2": "2025-03-01\n09:00", "thing3": "请于本周五前\r\n提交"})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["template_fields"] == {"thing1": "稳岗补贴开始申报", "time2": "2025-03-01 09:00",
                                                  "thing3": "请于本周五前 提交"}
    client.post(f"/api/v1/staff/notices/{resp.get_json()['id']}/publish", json={}, headers=staff_h)
    run_jobs()
    data = standin.calls_to(SUBSCRIBE)[0].body["data"]
    assert data["thing1"]["value"] == "稳岗补贴开始申报" and data["time2"]["value"] == "2025-03-01 09:00"


def test_a_template_value_of_invisible_characters_only_is_refused(app_ctx, client, make_user, staff_h):
    make_user()
    resp = _create(client, staff_h, template_fields={"thing1": "\u200b\u200b", "time2": "2025-03-01 09:00"})
    assert resp.status_code == 422 and "template_fields.thing1" in resp.get_json()["fields"]


# --- 2. why a fan-out waits -------------------------------------------------------------------------------------

def test_progress_says_why_rows_wait_after_45009_and_a_busy_wechat(published_notice, app_ctx, client, run_jobs,
                                                                    standin, make_staff, console_login, db):
    """After WeChat's daily quota ran out (45009) every row waited 'pending' until the cool-down ended, and the
    progress view showed only “等待发送” with 失败原因 “无”: nothing said why or that it would carry on by itself."""
    from wxapp_backend.db import session_scope

    nid = published_notice(3)
    standin.fail_next(SUBSCRIBE, 45009)
    run_jobs()
    with session_scope() as s:
        p = broadcast.progress(s, nid)
    assert p["subscribe"]["pending"] == 3 and p["failures"] == []
    assert p["waiting"] == [{"errcode": 45009, "detail": broadcast.QUOTA_WAIT_DETAIL, "count": 3}]
    assert sum(p["subscribe"].values()) == p["subscribe_total"] == 3
    console_login(make_staff(role="dept"))
    page = client.get(f"/console/notices/{nid}").get_data(as_text=True)
    assert "等待原因" in page and broadcast.QUOTA_WAIT_DETAIL in page
    assert client.get(f"/console/notices/{nid}/progress.json").get_json()["waiting"][0]["count"] == 3


def test_progress_lists_rows_waiting_for_a_retry_after_minus_1(published_notice, app, app_ctx, run_jobs, standin,
                                                               monkeypatch):
    from wxapp_backend.db import session_scope

    monkeypatch.setitem(app.extensions["wxapp"].settings.extra, "fanout_backoff_override", 3600)
    nid = published_notice(2)
    standin.fail_next(SUBSCRIBE, -1)
    run_jobs()
    with session_scope() as s:
        p = broadcast.progress(s, nid)
    assert p["subscribe"]["sent"] == 1 and p["subscribe"]["pending"] == 1
    assert [(w["errcode"], w["count"]) for w in p["waiting"]] == [(-1, 1)] and "稍后重试" in p["waiting"][0]["detail"]


# --- 3. an activity's time in the subscribe message -------------------------------------------------------------

def _activity_draft(client, make_activity, make_staff, console_login, db):
    """A notice announcing an activity, composed the way the activity page's “通知订阅者” fills it in."""
    import re
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    start = (datetime.now(UTC) + timedelta(days=4)).replace(second=0, microsecond=0)
    aid = make_activity(category="fitness", title="午间瑜伽", starts_at=start).id
    csrf = console_login(make_staff(role="staff"))
    composer = client.get(f"/console/notices/new?activity_id={aid}").get_data(as_text=True)
    fields = re.search(r'<textarea name="template_fields"[^>]*>([^<]*)</textarea>', composer).group(1)
    summary = re.search(r'<textarea name="summary"[^>]*>([^<]*)</textarea>', composer).group(1)
    resp = client.post("/console/notices/new", data={
        "csrf_token": csrf, "kind": "activity", "activity_id": str(aid), "title": "新活动：午间瑜伽",
        "summary": summary, "audience_all": "1", "template_fields": fields.replace("&#10;", "\n")})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    from wxapp_backend.wechat.templates import format_time

    return db.scalars(select(Notice)).one().id, format_time(start), csrf


def test_publishing_keeps_the_activity_start_as_the_subscribe_message_time(app_ctx, client, make_activity, make_user,
                                                                           make_staff, console_login, db, run_jobs,
                                                                           standin, fast):
    """The composer wrote the activity's start as time2; publishing made the values again from the title and
    summary (they matched) and time2 became the moment of publishing: subscribers read “12月7日 05:30” for a class
    on the 11th at noon."""
    _with_credit(make_user)
    nid, when, csrf = _activity_draft(client, make_activity, make_staff, console_login, db)
    assert db.get(Notice, nid).template_fields["time2"] == when
    client.post(f"/console/notices/{nid}/publish", data={"csrf_token": csrf})
    db.expire_all()
    assert db.get(Notice, nid).template_fields["time2"] == when
    run_jobs()
    (call,) = standin.calls_to(SUBSCRIBE)
    assert call.body["data"]["time2"]["value"] == when


def test_editing_the_title_keeps_the_activity_start_and_the_test_send_shows_it(app_ctx, client, make_activity,
                                                                                make_user, make_staff, console_login,
                                                                                db, staff_headers, run_jobs, standin):
    nid, when, csrf = _activity_draft(client, make_activity, make_staff, console_login, db)
    staff = make_staff(role="staff")
    h = staff_headers(staff)
    resp = client.patch(f"/api/v1/staff/notices/{nid}", json={"title": "新活动：午间瑜伽（加场）"}, headers=h)
    assert resp.status_code == 200
    fields = resp.get_json()["template_fields"]
    assert fields["thing1"] == "新活动：午间瑜伽（加场）" and fields["time2"] == when
    me = _with_credit(make_user)[0]
    assert client.put("/api/v1/staff/me/test-recipient", json={"user_id": me.id}, headers=h).status_code == 200
    assert client.post(f"/api/v1/staff/notices/{nid}/test", json={}, headers=h).get_json()["sent"] is True
    run_jobs()
    (call,) = standin.calls_to(SUBSCRIBE)
    assert call.body["data"]["time2"]["value"] == when


def test_a_draft_made_from_its_text_still_says_when_it_was_published(app_ctx, client, make_user, staff_h, db):
    from datetime import timedelta

    from wxapp_backend.db import session_scope, utcnow
    from wxapp_backend.wechat.templates import format_time

    make_user()
    nid = _create(client, staff_h).get_json()["id"]
    earlier = utcnow() - timedelta(days=3)
    with session_scope() as s:  # a draft written three days ago
        n = s.get(Notice, nid)
        n.template_fields = {**n.template_fields, "time2": format_time(earlier)}
        s.flush()
        s.execute(Notice.__table__.update().where(Notice.id == nid).values(created_at=earlier, updated_at=earlier))
    client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=staff_h)
    db.expire_all()
    assert db.get(Notice, nid).template_fields["time2"] == format_time(db.get(Notice, nid).published_at)


def test_a_notice_about_an_activity_goes_out_with_its_start_as_it_is_when_published(app_ctx, client, make_activity,
                                                                                   make_user, staff_h, db):
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities.models import Activity
    from wxapp_backend.db import session_scope
    from wxapp_backend.wechat.templates import format_time

    make_user()
    start = (datetime.now(UTC) + timedelta(days=5)).replace(second=0, microsecond=0)
    aid = make_activity(title="楼宇音乐会", starts_at=start, status="published").id
    n = _create(client, staff_h, kind="activity", activity_id=aid).get_json()
    assert n["template_fields"]["time2"] == format_time(start)
    moved = start + timedelta(days=1, hours=2)
    with session_scope() as s:  # moved after the draft was written
        a = s.get(Activity, aid)
        a.starts_at, a.ends_at = moved, moved + timedelta(hours=2)
    assert client.post(f"/api/v1/staff/notices/{n['id']}/publish", json={}, headers=staff_h).status_code == 200
    db.expire_all()
    assert db.get(Notice, n["id"]).template_fields["time2"] == format_time(moved)


# --- 4. template values for some keys only ----------------------------------------------------------------------

def test_values_given_for_some_template_keys_go_out_with_the_rest_made_from_the_text(app_ctx, client, make_user,
                                                                                     make_staff, staff_headers,
                                                                                     run_jobs, standin, db, fast):
    """Staff wrote thing1 only: the test send (made through the kind) filled time2 and thing3 and arrived, the
    published notice sent {thing1} alone, which WeChat refuses for every subscriber (47003: data.time2 is empty)."""
    staff = make_staff(role="staff")
    h = staff_headers(staff)
    me, other = _with_credit(make_user, 2)
    keys = list(get_kind("notice").fields)
    nid = _create(client, h, template_fields={"thing1": "稳岗补贴开始申报"}).get_json()["id"]
    assert client.put("/api/v1/staff/me/test-recipient", json={"user_id": me.id}, headers=h).status_code == 200
    assert client.post(f"/api/v1/staff/notices/{nid}/test", json={}, headers=h).get_json()["sent"] is True
    run_jobs()
    assert sorted(standin.calls_to(SUBSCRIBE)[0].body["data"]) == sorted(keys)
    from wxapp_backend.db import session_scope

    with session_scope() as s:  # the test send spent the staff member's credit: they accept once more
        credits.add_credit(s, me.id, get_kind("notice").template_id)
    assert client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=h).status_code == 200
    run_jobs()
    calls = standin.calls_to(SUBSCRIBE)[1:]
    assert len(calls) == 2
    for call in calls:
        assert sorted(call.body["data"]) == sorted(keys)
        assert call.body["data"]["thing1"]["value"] == "稳岗补贴开始申报"
        assert call.body["data"]["thing3"]["value"] == "本周五前提交材料"
    db.expire_all()
    assert db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe", status="sent").count() == 2


# --- 5. the inbox read page by page -----------------------------------------------------------------------------

def _tell(user, n, start=0):
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices.services import notify

    with session_scope() as s:
        for i in range(start, start + n):
            notify(s, user.id, "notice", {"title": f"通知{i}"}, title=f"通知{i}")


def test_the_inbox_continues_after_the_last_item_read_whatever_arrived_or_was_read(app_ctx, client, make_user,
                                                                                   user_token):
    """Pages by number shifted under the reader: a notice that arrived while they scrolled repeated the last item of
    page 1 on page 2, and marking page 1 read (只看未读) made page 2 skip three unread ones."""
    user = make_user()
    h = user_token(user)
    _tell(user, 6)
    first = client.get("/api/v1/me/inbox?per_page=3", headers=h).get_json()["items"]
    assert [i["title"] for i in first] == ["通知5", "通知4", "通知3"]
    _tell(user, 1, start=6)  # arrives while the user scrolls
    nxt = client.get(f"/api/v1/me/inbox?per_page=3&before_id={first[-1]['id']}", headers=h).get_json()
    assert [i["title"] for i in nxt["items"]] == ["通知2", "通知1", "通知0"]
    unread = client.get("/api/v1/me/inbox?per_page=3&unread=1", headers=h).get_json()["items"]
    for item in unread:
        assert client.post(f"/api/v1/me/inbox/{item['id']}/read", headers=h).status_code == 200
    rest = client.get(f"/api/v1/me/inbox?per_page=3&unread=1&before_id={unread[-1]['id']}", headers=h).get_json()
    assert [i["title"] for i in rest["items"]] == ["通知3", "通知2", "通知1"] and rest["unread"] == 4


def test_a_bad_before_id_is_a_clear_422(app_ctx, client, make_user, user_token):
    h = user_token(make_user())
    resp = client.get("/api/v1/me/inbox?before_id=abc", headers=h)
    assert resp.status_code == 422 and "before_id" in resp.get_json()["fields"]


# --- 6. announcing an activity only verified contacts may join --------------------------------------------------

def _subscribers(make_user, make_enterprise):
    from wxapp_backend.activities.models import CategorySubscription
    from wxapp_backend.db import session_scope

    ent = make_enterprise()
    verified = make_user(enterprise_id=ent.id, binding_state="verified")
    pending = make_user(enterprise_id=ent.id, binding_state="pending")
    plain = make_user()
    with session_scope() as s:
        for u in (verified, pending, plain):
            s.add(CategorySubscription(user_id=u.id, category="fitness"))
    return verified, pending, plain


def test_announcing_a_verified_only_activity_reaches_verified_contacts_only(app_ctx, client, make_user,
                                                                           make_enterprise, make_activity, make_staff,
                                                                           console_login, db, run_jobs):
    """The composer filled in for a 仅限已核实的企业联系人 activity named its category only: every subscriber was
    invited, and the unverified ones read “本活动仅限已核实的企业联系人报名” when they tried to register."""
    import re

    from wxapp_backend.notices.models import InboxItem

    verified, pending, plain = _subscribers(make_user, make_enterprise)
    aid = make_activity(category="fitness", title="企业沙龙", verified_only=True).id
    csrf = console_login(make_staff(role="staff"))
    composer = client.get(f"/console/notices/new?activity_id={aid}").get_data(as_text=True)
    assert re.search(r'name="verified_only" checked', composer)
    resp = client.post("/console/notices/new", data={"csrf_token": csrf, "kind": "activity", "activity_id": str(aid),
                                                     "title": "新活动：企业沙龙", "categories": ["fitness"],
                                                     "verified_only": "on"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    n = db.query(Notice).one()
    assert n.audience["verified_only"] is True
    page = client.get(f"/console/notices/{n.id}/edit").get_data(as_text=True)
    assert re.search(r'name="verified_only" checked', page)  # the edit form keeps it
    client.post(f"/console/notices/{n.id}/publish", data={"csrf_token": csrf})
    run_jobs()
    db.expire_all()
    assert [i.user_id for i in db.query(InboxItem).filter_by(ref=f"notice:{n.id}")] == [verified.id]


def test_verified_only_through_the_api_and_alone_as_the_audience(app_ctx, client, make_user, make_enterprise,
                                                                 staff_h):
    verified, pending, plain = _subscribers(make_user, make_enterprise)
    resp = _create(client, staff_h, audience={"categories": ["fitness"], "verified_only": True})
    assert resp.status_code == 201 and resp.get_json()["reach"]["recipients"] == 1
    resp = _create(client, staff_h, audience={"verified_only": True})  # all verified contacts
    assert resp.status_code == 201 and resp.get_json()["reach"]["recipients"] == 1
    resp = _create(client, staff_h, audience={"categories": ["fitness"]})
    assert resp.get_json()["reach"]["recipients"] == 3
    resp = _create(client, staff_h, audience={"verified_only": "maybe"})
    assert resp.status_code == 422 and "audience.verified_only" in resp.get_json()["fields"]


# --- 7. an activity cancelled between publishing and the expansion ---------------------------------------------

def test_an_activity_cancelled_before_the_expansion_puts_no_invitation_in_anyones_inbox(app_ctx, client, make_user,
                                                                                       make_activity, staff_h, db,
                                                                                       run_jobs, standin, fast):
    """Publishing refused a cancelled activity, and the send jobs skipped its subscribe messages, but the expansion
    (queued behind other jobs) still wrote “新活动：… 欢迎报名” into every inbox for an activity cancelled meanwhile."""
    from wxapp_backend.activities.models import Activity
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices.models import InboxItem

    _with_credit(make_user, 3)
    aid = make_activity(title="楼宇音乐会", status="published").id
    nid = _create(client, staff_h, kind="activity", activity_id=aid, title="新活动：楼宇音乐会").get_json()["id"]
    assert client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=staff_h).status_code == 200
    with session_scope() as s:  # a colleague cancels it before the expansion job runs
        s.get(Activity, aid).status = "cancelled"
    run_jobs()
    db.expire_all()
    assert db.query(InboxItem).filter_by(ref=f"notice:{nid}").count() == 0
    assert standin.count(SUBSCRIBE) == 0
    assert db.get(Notice, nid).status == "done"


# --- 8. a template configured after the draft was written -------------------------------------------------------

def test_a_draft_written_before_the_template_was_configured_goes_out_with_the_configured_one(app_ctx, client,
                                                                                          make_user, staff_h, db,
                                                                                          run_jobs, standin, fast,
                                                                                          monkeypatch):
    """NOTIFY_TEMPLATES is re-read when it changes; a draft written before the real template was configured kept the
    placeholder id: its subscribers, who accepted the real template, got nothing but the inbox."""
    from dataclasses import replace

    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import kinds

    user = make_user()
    nid = _create(client, staff_h).get_json()["id"]
    old = db.get(Notice, nid).template_id
    configured = {**kinds.DEFAULT_KINDS, "notice": replace(kinds.DEFAULT_KINDS["notice"], template_id="REAL-notice")}
    monkeypatch.setattr(kinds, "current_kinds", lambda: configured)
    with session_scope() as s:
        credits.add_credit(s, user.id, "REAL-notice")
    assert client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=staff_h).status_code == 200
    run_jobs()
    db.expire_all()
    assert old != "REAL-notice" and db.get(Notice, nid).template_id == "REAL-notice"
    (call,) = standin.calls_to(SUBSCRIBE)
    assert call.body["template_id"] == "REAL-notice" and call.body["touser"] == user.openid
