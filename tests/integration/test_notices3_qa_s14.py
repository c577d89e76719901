"""Notices QA (session 14, third pass): template keys the template does not have, progress while the audience is
still being written, a draft's template replaced before publishing, the list's roles, and a one-user notification
during WeChat's daily-quota cool-down."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from wxapp_backend.db import session_scope
from wxapp_backend.notices import broadcast, credits, kinds
from wxapp_backend.notices.broadcast_models import Notice
from wxapp_backend.notices.kinds import get_kind

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


@pytest.fixture
def staff_h(make_staff, staff_headers):
    return staff_headers(make_staff(role="staff"))


def _create(client, headers, **kw):
    body = {"title": "稳岗补贴开始申报", "summary": "本周五前提交材料", "audience": {"all": True}}
    body.update(kw)
    return client.post("/api/v1/staff/notices", json=body, headers=headers)


def _configure(monkeypatch, **notice_changes):
    configured = {**kinds.DEFAULT_KINDS, "notice": replace(kinds.DEFAULT_KINDS["notice"], **notice_changes)}
    monkeypatch.setattr(kinds, "current_kinds", lambda: configured)
    return configured["notice"]


# --- 1. template keys the notice template does not have -------------------------------------------------------

def test_a_template_key_the_template_does_not_have_is_refused(app_ctx, client, make_user, staff_h, db):
    """thing9 passed WeChat's per-type checks and went to every subscriber, each answered 47003."""
    make_user()
    resp = _create(client, staff_h, template_fields={"thing1": "稳岗补贴", "time2": "2025-03-01 09:00",
                                                     "thing9": "请尽快提交"})
    assert resp.status_code == 422, resp.get_json()
    body = resp.get_json()
    assert "template_fields.thing9" in body["fields"] and "thing1" in body["message"]
    assert db.query(Notice).count() == 0
    nid = _create(client, staff_h).get_json()["id"]
    resp = client.patch(f"/api/v1/staff/notices/{nid}", json={"template_fields": {"thing1": "稳岗补贴", "thing9": "x"}},
                        headers=staff_h)
    assert resp.status_code == 422 and "template_fields.thing9" in resp.get_json()["fields"]


# --- 2. progress while the audience is still being written ----------------------------------------------------

def test_progress_is_not_100_percent_while_the_audience_is_still_being_written(published_notice, app_ctx, run_jobs,
                                                                              standin, db, monkeypatch):
    nid = published_notice(5, fanout_expand_batch=2, fanout_job_budget=0)
    real = broadcast._expand_range
    batches = []

    def first_batch_then_die(*args, **kwargs):
        if batches:
            raise RuntimeError("expansion worker killed")
        batches.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(broadcast, "_expand_range", first_batch_then_die)
    run_jobs(max_jobs=1)  # the first 2 users written
    run_jobs(max_jobs=1)  # and sent, while 3 more are still to be written
    assert standin.count(SUBSCRIBE) == 2
    db.expire_all()
    p = broadcast.progress(db, nid)
    assert p["status"] == "expanding" and p["subscribe_done"] == 2
    assert p["percent"] == 40.0, p
    monkeypatch.setattr(broadcast, "_expand_range", real)
    broadcast.expand_notice(nid)
    run_jobs()
    db.expire_all()
    assert broadcast.progress(db, nid)["percent"] == 100.0


# --- 3. a draft with staff-written values whose template was replaced ------------------------------------------

def test_a_draft_with_own_values_goes_out_with_the_template_configured_now(app_ctx, client, make_user, staff_h, db,
                                                                          run_jobs, standin, monkeypatch):
    user = make_user()
    given = {"thing1": "补贴申报提醒", "time2": "2025-03-01 09:00", "thing3": "请尽快提交"}
    nid = _create(client, staff_h, template_fields=given).get_json()["id"]
    _configure(monkeypatch, template_id="REAL-notice-s14")
    with session_scope() as s:
        credits.add_credit(s, user.id, "REAL-notice-s14")
    monkeypatch.setitem(app_ctx.extensions["wxapp"].settings.extra, "fanout_jobs", 1)
    assert client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=staff_h).status_code == 200
    run_jobs()
    db.expire_all()
    assert db.get(Notice, nid).template_id == "REAL-notice-s14"
    (call,) = standin.calls_to(SUBSCRIBE)
    assert call.body["template_id"] == "REAL-notice-s14"
    assert {k: v["value"] for k, v in call.body["data"].items()}["thing1"] == "补贴申报提醒"


def test_a_draft_whose_own_values_the_new_template_lacks_is_refused_clearly(app_ctx, client, make_user, staff_h, db,
                                                                           monkeypatch):
    make_user()
    given = {"thing1": "补贴申报提醒", "time2": "2025-03-01 09:00", "thing3": "请尽快提交"}
    nid = _create(client, staff_h, template_fields=given).get_json()["id"]
    _configure(monkeypatch, template_id="REAL-notice-s14b", fields={"thing1": "title", "date2": "time"},
               defaults={})
    resp = client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=staff_h)
    assert resp.status_code == 409, resp.get_json()
    body = resp.get_json()
    assert body["error"] == "template_changed" and "thing3" in body["message"]
    db.expire_all()
    assert db.get(Notice, nid).status == "draft"


# --- 4. the list's roles -----------------------------------------------------------------------------------------

def test_a_department_account_may_list_notices_as_in_the_console(app_ctx, client, make_user, staff_h, make_staff,
                                                                 staff_headers):
    make_user()
    nid = _create(client, staff_h).get_json()["id"]
    dept_h = staff_headers(make_staff(role="dept"))
    assert client.get(f"/api/v1/staff/notices/{nid}", headers=dept_h).status_code == 200
    resp = client.get("/api/v1/staff/notices", headers=dept_h)
    assert resp.status_code == 200, resp.get_json()
    assert [n["id"] for n in resp.get_json()["items"]] == [nid]
    assert _create(client, dept_h).status_code == 403


# --- 5. a one-user notification during the daily quota's cool-down ----------------------------------------------

def test_a_notification_with_credit_waits_for_the_quota_instead_of_ending_inbox_only(app, app_ctx, make_user,
                                                                                    standin, db, monkeypatch):
    """The fan-out keeps its rows for when the quota's cool-down ends; one user's notification ended inbox_only, its
    subscribe message never sent although the user had accepted it."""
    from rq.registry import ScheduledJobRegistry

    from wxapp_backend.notices.jobs import deliver_notification
    from wxapp_backend.notices.models import Notification, NotificationAttempt
    from wxapp_backend.notices.services import notify

    template = get_kind("appeal_accepted").template_id
    user = make_user()
    with session_scope() as s:
        credits.add_credit(s, user.id, template)
    monkeypatch.setitem(app.extensions["wxapp"].settings.extra, "wechat_quota_cooldown", 600)
    standin.fail_next(SUBSCRIBE, 45009)
    with session_scope() as s:
        nid = notify(s, user.id, "appeal_accepted", {"number": "SQ20251016-0001"}, "pages/appeal/detail?id=1",
                     title="诉求已受理").id
    assert deliver_notification(nid) == "pending"
    db.expire_all()
    assert db.get(Notification, nid).status == "pending"
    assert ScheduledJobRegistry(queue=app.extensions["wxapp"].queue).get_job_ids(), "a retry after the cool-down"
    assert deliver_notification(nid) == "pending"  # still cooling down: WeChat is not called, no new attempt
    assert standin.count(SUBSCRIBE) == 1
    assert len(db.scalars(select(NotificationAttempt).where(NotificationAttempt.notification_id == nid)).all()) == 1
    with session_scope() as s:
        assert credits.available(s, user.id, template)
    app.extensions["wxapp"].redis.delete(*app.extensions["wxapp"].redis.keys("wxapp:wechat:quota:*"))
    assert deliver_notification(nid) == "sent_subscribe"
    assert standin.count(SUBSCRIBE) == 2
