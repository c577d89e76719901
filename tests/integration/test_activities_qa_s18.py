"""White-collar activities, a demanding user's QA pass (session 18): waitlist promotions and approvals told after
the news they announce was undone, and the rough edges of registration, check-in and reminders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from wxapp_backend.notices.models import Notification

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


def _reg(client, aid, headers, answers=None):
    resp = client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)
    assert resp.status_code in (200, 201), resp.get_json()
    return resp.get_json()


def _credit(user_id: int, kind: str, n: int = 1) -> None:
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.kinds import get_kind

    with session_scope() as s:
        for _ in range(n):
            credits.add_credit(s, user_id, get_kind(kind).template_id)


def _pending(db, kind: str, user_id: int) -> int:
    return db.scalar(select(Notification.id).where(Notification.kind == kind, Notification.user_id == user_id))


def test_a_waitlist_promotion_whose_delivery_waited_is_not_pushed_after_the_activity_was_cancelled(
        client, new_activity, make_user, user_token, staff, staff_headers, standin, db):
    """A cancel freed the seat and the worker on the waitlist was moved up (“候补成功”); its delivery waited (WeChat's
    daily quota, a retry, the sweep after a lost job) while staff called the activity off. The “活动已取消” notice went
    out, then “候补成功” on top of it: the last word the worker had on WeChat said they had a place, and they came.
    A promotion (or approval) whose registration no longer holds that place stays in 消息 only, as a stale reminder."""
    from wxapp_backend.notices.jobs import deliver_notification

    aid = new_activity(capacity=1)
    first, waiting = make_user(), make_user()
    seat = _reg(client, aid, user_token(first))
    assert _reg(client, aid, user_token(waiting))["status"] == "waitlisted"
    _credit(waiting.id, "waitlist_promoted")
    resp = client.post(f"/api/v1/registrations/{seat['id']}/cancel", headers=user_token(first))
    assert resp.status_code == 200, resp.get_json()
    promoted = _pending(db, "waitlist_promoted", waiting.id)
    assert promoted is not None
    resp = client.patch(f"/api/v1/staff/activities/{aid}", headers=staff_headers(staff),
                        json={"status": "cancelled", "cancel_reason": "场地临时检修"})
    assert resp.status_code == 200, resp.get_json()
    before = len(standin.calls_to(SUBSCRIBE))
    assert deliver_notification(promoted) == "inbox_only"
    assert len(standin.calls_to(SUBSCRIBE)) == before


def test_an_approval_whose_delivery_waited_is_not_pushed_after_the_registration_was_cancelled(
        client, new_activity, make_user, user_token, staff, staff_headers, standin, db):
    """Approved, then cancelled by staff (a duplicate entry) before the approval's push went out: “报名审核通过”
    arriving after “报名已取消” sent the worker to an activity they no longer had a place at."""
    from wxapp_backend.notices.jobs import deliver_notification

    aid = new_activity(capacity=3, requires_approval=True)
    u = make_user()
    rid = _reg(client, aid, user_token(u))["id"]
    _credit(u.id, "registration_approved")
    h = staff_headers(staff)
    assert client.post(f"/api/v1/staff/registrations/{rid}/approve", json={"note": ""}, headers=h).status_code == 200
    approved = _pending(db, "registration_approved", u.id)
    assert client.post(f"/api/v1/staff/registrations/{rid}/cancel", json={}, headers=h).status_code == 200
    before = len(standin.calls_to(SUBSCRIBE))
    assert deliver_notification(approved) == "inbox_only"
    assert len(standin.calls_to(SUBSCRIBE)) == before


def test_a_promotion_still_standing_is_pushed_as_before(client, new_activity, make_user, user_token, standin, db):
    """The control: nothing changed since the promotion, so it goes out on the template the worker allowed."""
    from wxapp_backend.notices.jobs import deliver_notification

    aid = new_activity(capacity=1)
    first, waiting = make_user(), make_user()
    seat = _reg(client, aid, user_token(first))
    _reg(client, aid, user_token(waiting))
    _credit(waiting.id, "waitlist_promoted")
    assert client.post(f"/api/v1/registrations/{seat['id']}/cancel", headers=user_token(first)).status_code == 200
    before = len(standin.calls_to(SUBSCRIBE))
    assert deliver_notification(_pending(db, "waitlist_promoted", waiting.id)) == "sent_subscribe"
    assert len(standin.calls_to(SUBSCRIBE)) == before + 1


def test_a_promotion_delivered_only_after_the_activity_ended_is_not_pushed(
        client, new_activity, make_user, user_token, standin, db, monkeypatch):
    """Moved up before the start, its push waited past the end (the quota's cool-downs last hours): “候补成功” about
    an evening that is over only puzzles the worker (decide() tells no approval made after the end, for that reason)."""
    import wxapp_backend.notices.jobs as notice_jobs
    from wxapp_backend.notices.jobs import deliver_notification

    start = datetime.now(UTC) + timedelta(days=2)
    aid = new_activity(capacity=1, start=start)
    first, waiting = make_user(), make_user()
    seat = _reg(client, aid, user_token(first))
    _reg(client, aid, user_token(waiting))
    _credit(waiting.id, "waitlist_promoted")
    assert client.post(f"/api/v1/registrations/{seat['id']}/cancel", headers=user_token(first)).status_code == 200
    monkeypatch.setattr(notice_jobs, "utcnow", lambda: start + timedelta(hours=3))
    before = len(standin.calls_to(SUBSCRIBE))
    assert deliver_notification(_pending(db, "waitlist_promoted", waiting.id)) == "inbox_only"
    assert len(standin.calls_to(SUBSCRIBE)) == before


def test_a_change_told_after_the_start_does_not_ask_for_a_cancel_the_app_refuses(
        client, new_activity, make_user, user_token, staff, staff_headers, db):
    """Staff pushed the end of a running activity back half an hour. Those yet to arrive were told “……如不能参加，请在
    小程序中取消报名”, and the mini-program then refused the cancel (it has started: 已过取消报名的截止时间). After the start
    the notice gives the new time and place and asks for nothing it cannot do."""
    from tests.integration.test_activities_qa_s10 import _starts_in
    from wxapp_backend.activities.models import Activity
    from wxapp_backend.notices.models import InboxItem

    aid = new_activity(capacity=3)
    coming = make_user()
    rid = _reg(client, aid, user_token(coming))["id"]
    _starts_in(aid, timedelta(minutes=-30))
    ends = (db.get(Activity, aid).ends_at + timedelta(minutes=30)).isoformat()
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"ends_at": ends}, headers=staff_headers(staff))
    assert resp.status_code == 200, resp.get_json()
    body = db.scalar(select(InboxItem.body).where(InboxItem.user_id == coming.id,
                                                  InboxItem.title.startswith("活动调整")))
    assert body is not None and "时间或地点有调整" in body
    # What the notice must not ask for: the cancel is refused once the activity has started.
    assert client.post(f"/api/v1/registrations/{rid}/cancel", headers=user_token(coming)).status_code == 409
    assert "取消报名" not in body, body


def test_a_change_told_before_the_start_still_says_how_to_cancel(client, new_activity, make_user, user_token, staff,
                                                                 staff_headers, db):
    """The control: moved before it starts, the registrant may cancel and is told how."""
    from wxapp_backend.notices.models import InboxItem

    start = datetime.now(UTC) + timedelta(days=2)
    aid = new_activity(capacity=3, start=start)
    u = make_user()
    _reg(client, aid, user_token(u))
    new = start + timedelta(hours=1)
    resp = client.patch(f"/api/v1/staff/activities/{aid}", headers=staff_headers(staff),
                        json={"starts_at": new.isoformat(), "ends_at": (new + timedelta(hours=2)).isoformat()})
    assert resp.status_code == 200, resp.get_json()
    body = db.scalar(select(InboxItem.body).where(InboxItem.user_id == u.id, InboxItem.title.startswith("活动调整")))
    assert body.endswith("如不能参加，请在小程序中取消报名。"), body
