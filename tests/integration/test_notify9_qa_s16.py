"""Notices QA (session 16, notify9): a fan-out that meets a credential WeChat will not take (the access token cannot
be fetched, or is refused again after its one refresh)."""

from __future__ import annotations

import pytest

from wxapp_backend.notices import broadcast
from wxapp_backend.notices.broadcast_models import OutboxRow
from wxapp_backend.notices.models import SubscribeCredit

SUBSCRIBE = "/cgi-bin/message/subscribe/send"
STABLE_TOKEN = "/cgi-bin/stable_token"


def _rows(db, nid):
    db.expire_all()
    return db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe").order_by(OutboxRow.id).all()


@pytest.mark.parametrize("fault", ["fetch", "refused"])
def test_a_credential_wechat_refuses_holds_the_fan_out_instead_of_failing_everyone(
    published_notice, run_jobs, standin, db, app, redis_client, monkeypatch, fault
):
    """The mini-program's AppSecret reset in WeChat's admin (stable_token answers 40125) or a token refused again after
    its one refresh (40001): nothing is wrong with any recipient, yet every row of the fan-out failed for good as
    “微信拒绝发送”, in seconds, and once the secret was fixed nothing could send them. They wait (credit kept, no try
    spent), staff read why, and they go out once the credential works."""
    monkeypatch.setitem(app.extensions["wxapp"].settings.extra, "fanout_backoff_override", 0)
    nid = published_notice(3)
    for key in redis_client.scan_iter("*token*"):
        redis_client.delete(key)  # no cached token: the fan-out fetches one
    if fault == "fetch":
        standin.fail_next(STABLE_TOKEN, 40125)  # the others read the failure it left
    else:
        standin.fail_next(SUBSCRIBE, 40001, times=2)
    broadcast.expand_notice(nid)
    broadcast.send_notice(nid)
    rows = _rows(db, nid)
    assert [r.status for r in rows] == ["pending"] * 3, [(r.status, r.detail) for r in rows]
    assert all(r.attempts == 0 for r in rows)
    assert all(c.credits == 1 for c in db.query(SubscribeCredit).all())
    with app.app_context():
        waiting = broadcast.progress(db, nid)["waiting"]
    assert waiting and "凭证" in waiting[0]["detail"] and waiting[0]["count"] == 3
    # The credential works again: the next turn sends each once.
    for key in redis_client.scan_iter("*token*"):
        redis_client.delete(key)
    broadcast.send_notice(nid)
    run_jobs()
    rows = _rows(db, nid)
    assert [r.status for r in rows] == ["sent"] * 3
    taken = [c.body["touser"] for c in standin.calls_to(SUBSCRIBE) if c.errcode == 0]
    assert len(taken) == len(set(taken)) == 3  # each once


REFUSED_REPORT = "failed:user refuse to accept the msg"


def test_a_delivery_report_that_arrives_before_the_chunk_is_written_down_still_counts(
    published_notice, standin, db, app, monkeypatch
):
    """WeChat's subscribe_msg_sent_event comes within moments of a send, while the fan-out marks a chunk's sends (and
    their msgids) only when the whole chunk is done: a report arriving meanwhile found no row with its msgid and was
    dropped, for good (the webhook answered it). The console's 已送达 / 用户拒收 then disagreed with what WeChat said,
    and a refusal left the user's credit in place for the next notice."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits
    from wxapp_backend.wechat.client import WeChatAPI

    nid = published_notice(2, fanout_send_chunk=25)
    broadcast.expand_notice(nid)
    template = broadcast._get(db, nid).template_id
    real = WeChatAPI.send_subscribe
    reports = iter(["success", REFUSED_REPORT])

    def send_and_report(self, openid, template_id, data, page="", **kw):
        resp = real(self, openid, template_id, data, page, **kw)
        with session_scope() as s:  # the webhook, on another machine, while the chunk is still going
            credits.apply_sent_event(
                s,
                openid,
                {"TemplateId": template_id, "MsgID": str(resp["msgid"]), "ErrorStatus": next(reports)},
            )
        return resp

    monkeypatch.setattr(WeChatAPI, "send_subscribe", send_and_report)
    broadcast.send_notice(nid)
    rows = _rows(db, nid)
    assert [r.status for r in rows] == ["sent", "sent"]
    assert [r.delivery for r in rows] == ["success", REFUSED_REPORT]
    with app.app_context():
        assert broadcast.progress(db, nid)["delivery"] == {
            "delivered": 1,
            "refused_by_user": 1,
            "delivery_failed": 0,
        }
    refused = db.query(SubscribeCredit).filter_by(user_id=rows[1].user_id, template_id=template).one()
    assert refused.credits == 0


def _appeal_accepted_for(user, template: str, number: str) -> int:
    """A one-user notification (诉求已受理) for a user holding one credit of `template`; its id."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.services import notify

    with session_scope() as s:
        credits.add_credit(s, user.id, template)
        return notify(
            s,
            user.id,
            "appeal_accepted",
            {"number": number},
            "pages/appeals/detail?id=1",
            title="诉求已受理",
            body="我们已受理您的诉求。",
        ).id


def test_a_report_that_arrives_before_a_one_user_send_is_written_down_lands_on_it(
    make_user, standin, db, monkeypatch
):
    """The same for a one-user notification: the attempt's msgid is written after WeChat answers."""
    from sqlalchemy import select

    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.jobs import deliver_notification
    from wxapp_backend.notices.models import NotificationAttempt
    from wxapp_backend.wechat.client import WeChatAPI

    user = make_user()
    template = "PLACEHOLDER-appeal-progress"
    nid = _appeal_accepted_for(user, template, "SQ20261207-0001")
    real = WeChatAPI.send_subscribe

    def send_and_report(self, openid, template_id, data, page="", **kw):
        resp = real(self, openid, template_id, data, page, **kw)
        with session_scope() as s:
            credits.apply_sent_event(
                s, openid, {"TemplateId": template_id, "MsgID": str(resp["msgid"]), "ErrorStatus": "success"}
            )
        return resp

    monkeypatch.setattr(WeChatAPI, "send_subscribe", send_and_report)
    assert deliver_notification(nid) == "sent_subscribe"
    db.expire_all()
    attempt = db.scalars(select(NotificationAttempt).where(NotificationAttempt.notification_id == nid)).one()
    assert attempt.msgid and attempt.delivery == "success"


def test_a_notification_whose_token_fetch_is_refused_is_retried_not_ended_inbox_only(
    make_user, standin, db, redis_client
):
    """A one-user notification (an appeal's progress, a reminder) with the user's credit met the same refused credential: the
    subscribe try failed, the customer-service try met the same refusal, and it ended 仅站内信 for good, never tried
    again once the secret was fixed. The credential is the account's: the job retries on the same claim (RQ's retries)
    and the message goes out once."""
    from sqlalchemy import select

    from wxapp_backend.notices.jobs import deliver_notification
    from wxapp_backend.notices.models import Notification, NotificationAttempt
    from wxapp_backend.wechat.client import WeChatAPIError

    user = make_user()
    template = "PLACEHOLDER-appeal-progress"
    nid = _appeal_accepted_for(user, template, "SQ20261207-0002")
    for key in redis_client.scan_iter("*token*"):
        redis_client.delete(key)
    standin.fail_next(STABLE_TOKEN, 40125)
    with pytest.raises(WeChatAPIError):  # RQ retries the job
        deliver_notification(nid)
    db.expire_all()
    assert db.get(Notification, nid).status == "pending"
    for key in redis_client.scan_iter("*token*"):
        redis_client.delete(key)  # fixed (the failed fetch is remembered a few seconds only)
    assert deliver_notification(nid) == "sent_subscribe"
    attempts = db.scalars(select(NotificationAttempt).where(NotificationAttempt.notification_id == nid)).all()
    assert [(a.channel, a.outcome) for a in attempts] == [("subscribe", "ok")]
    assert len(standin.calls_to(SUBSCRIBE)) == 1


def test_progress_says_why_rows_were_skipped(
    published_notice, make_user, make_staff, db, app, client, console_login
):
    """跳过 counted 无额度、已不在推送对象中或活动已取消 together, with no reason per row anywhere staff could read: a
    fan-out that skipped half its audience could not say whether they had unsubscribed or run out of credit."""
    from wxapp_backend.auth.models import User

    users = [make_user() for _ in range(3)]
    nid = published_notice(users)
    broadcast.expand_notice(nid)
    db.get(User, users[0].id).blocked = True  # left the audience after publishing
    db.query(SubscribeCredit).filter_by(user_id=users[1].id).one().credits = 0  # spent meanwhile
    db.commit()
    broadcast.send_notice(nid)
    with app.app_context():
        p = broadcast.progress(db, nid)
    assert p["subscribe"]["skipped"] == 2 and p["subscribe"]["sent"] == 1
    reasons = {r["detail"]: r["count"] for r in p["skipped_reasons"]}
    assert reasons == {broadcast.LEFT_AUDIENCE: 1, "没有订阅消息额度（仅站内信）": 1}
    console_login(make_staff(role="staff"))
    page = client.get(f"/console/notices/{nid}").get_data(as_text=True)
    assert broadcast.LEFT_AUDIENCE in page and "没有订阅消息额度（仅站内信）" in page


def test_an_activity_moved_while_its_notice_goes_out_is_sent_with_its_new_start(
    make_activity, make_user, make_staff, standin, db, app, monkeypatch
):
    """The subscribe message's time is the activity's start, made when the notice was published; staff moved the
    activity while the fan-out was still going (a large audience, a quota wait): the rest of the subscribers were
    invited, in WeChat's own card, to the old time (the 活动调整 notice reaches registrants only)."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities.models import Activity
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.kinds import get_kind
    from wxapp_backend.wechat.templates import field_type, format_time

    for k, v in {"fanout_rate": 10000, "fanout_burst": 100, "fanout_jobs": 1}.items():
        monkeypatch.setitem(app.extensions["wxapp"].settings.extra, k, v)
    start = (datetime.now(UTC) + timedelta(days=5)).replace(second=0, microsecond=0)
    aid = make_activity(title="楼宇音乐会", starts_at=start, status="published").id
    users = [make_user() for _ in range(2)]
    kind = get_kind("notice")
    actor = broadcast.Actor("staff", make_staff(role="staff").id, role="staff")
    with session_scope() as s:
        for u in users:
            credits.add_credit(s, u.id, kind.template_id)
        nid = broadcast.create_notice(
            s,
            actor,
            {
                "title": "楼宇音乐会报名开始",
                "summary": "周五晚上见",
                "audience": {"all": True},
                "activity_id": aid,
            },
        ).id
    with session_scope() as s:
        broadcast.publish(s, actor, nid)
    broadcast.expand_notice(nid)
    moved = start + timedelta(days=1, hours=2)
    with session_scope() as s:  # moved while the notice is going out
        a = s.get(Activity, aid)
        a.starts_at, a.ends_at = moved, moved + timedelta(hours=2)
    broadcast.send_notice(nid)
    time_key = next(k for k in kind.fields if field_type(k) == "time")
    sent = [c.body["data"][time_key]["value"] for c in standin.calls_to(SUBSCRIBE)]
    assert sent == [format_time(moved)] * 2
