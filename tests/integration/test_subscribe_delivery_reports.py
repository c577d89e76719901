"""WeChat's report of what became of a subscribe message (`subscribe_msg_sent_event`) lands on the send it is about.

`subscribe/send` answering ok means WeChat took the message, not that it reached the user: the delivery report
comes later as an event naming the send's msgid. Each send keeps its msgid (one-user notifications and notice
fan-out alike) and the report is written next to it; a user's refusal also ends their credits for the template,
as a 43101 does.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from wxapp_backend import create_app
from wxapp_backend.db import session_scope
from wxapp_backend.notices import credits
from wxapp_backend.notices.broadcast_models import OutboxRow
from wxapp_backend.notices.jobs import deliver_notification
from wxapp_backend.notices.models import NotificationAttempt, SubscribeCredit
from wxapp_backend.notices.services import notify
from wxapp_backend.wechat.chat import make_push, seal_push
from wxapp_backend.wechat.pipeline import account_from_settings

TEMPLATE = "PLACEHOLDER-appeal-progress"
REFUSED = "failed:user refuse to accept the msg"


@pytest.fixture
def wxa(settings):
    return create_app(settings.with_overrides(wxa_token="wxatoken", wxa_aes_key="", wxa_msg_format="json"))


def _sent_event(application, openid: str, items: list[dict]) -> int:
    acct = account_from_settings(application.extensions["wxapp"].settings, "wxa")
    plain = make_push(acct, openid, event="subscribe_msg_sent_event",
                      extra={"SubscribeMsgSentEvent": {"List": items[0] if len(items) == 1 else items}})
    args, body = seal_push(acct, plain)
    resp = application.test_client().post("/wxa/message?" + urlencode(args), data=body,
                                          content_type="application/json")
    return resp.status_code


def _delivered_attempt(make_user, credits_n: int = 2):
    user = make_user()
    with session_scope() as s:
        for _ in range(credits_n):
            credits.add_credit(s, user.id, TEMPLATE)
        nid = notify(s, user.id, "appeal_accepted", {"number": "SQ20261206-0001"}, "pages/appeals/detail?id=1",
                     title="诉求已受理", body="我们已受理您的诉求。").id
    assert deliver_notification(nid) == "sent_subscribe"
    return user, nid


def _attempt(db, nid) -> NotificationAttempt:
    db.expire_all()
    return db.scalars(select(NotificationAttempt).where(NotificationAttempt.notification_id == nid)).one()


def _credit(db, user) -> int:
    db.expire_all()
    return db.scalar(select(SubscribeCredit.credits).where(SubscribeCredit.user_id == user.id,
                                                           SubscribeCredit.template_id == TEMPLATE))


def test_the_send_keeps_wechats_msgid(make_user, standin, db):
    _, nid = _delivered_attempt(make_user)
    attempt = _attempt(db, nid)
    assert attempt.outcome == "ok" and attempt.msgid and attempt.msgid.isdigit()
    assert attempt.delivery == ""  # no report yet


def test_a_success_report_is_written_on_the_attempt(make_user, standin, db, wxa):
    user, nid = _delivered_attempt(make_user)
    msgid = _attempt(db, nid).msgid
    assert _sent_event(wxa, user.openid, [{"TemplateId": TEMPLATE, "MsgID": msgid, "ErrorCode": 0,
                                           "ErrorStatus": "success"}]) == 200
    assert _attempt(db, nid).delivery == "success"
    assert _credit(db, user) == 1  # untouched


def test_a_refusal_is_written_and_ends_the_credits(make_user, standin, db, wxa):
    user, nid = _delivered_attempt(make_user, credits_n=3)
    msgid = _attempt(db, nid).msgid
    other = {"TemplateId": "PLACEHOLDER-notice", "MsgID": "999", "ErrorCode": 0, "ErrorStatus": "success"}
    assert _sent_event(wxa, user.openid, [{"TemplateId": TEMPLATE, "MsgID": msgid, "ErrorCode": 20004,
                                           "ErrorStatus": REFUSED}, other]) == 200
    attempt = _attempt(db, nid)
    assert attempt.delivery == REFUSED and attempt.outcome == "ok"
    assert _credit(db, user) == 0


def test_a_report_from_another_user_changes_nothing(make_user, standin, db, wxa):
    user, nid = _delivered_attempt(make_user)
    msgid = _attempt(db, nid).msgid
    stranger = make_user()
    assert _sent_event(wxa, stranger.openid, [{"TemplateId": TEMPLATE, "MsgID": msgid, "ErrorCode": 20004,
                                               "ErrorStatus": REFUSED}]) == 200
    assert _attempt(db, nid).delivery == ""
    assert _credit(db, user) == 1


def test_apply_sent_event_reads_one_item_or_many(make_user, standin, db):
    user, nid = _delivered_attempt(make_user)
    msgid = _attempt(db, nid).msgid
    with session_scope() as s:  # the List as an object (one item), with WeChat's own names
        assert credits.apply_sent_event(s, user.openid, {"TemplateId": TEMPLATE, "MsgID": msgid,
                                                         "ErrorCode": "0", "ErrorStatus": "success"}) == 1
    with session_scope() as s:  # unknown msgids, garbage and an unknown user are ignored
        assert credits.apply_sent_event(s, user.openid, [{"MsgID": "123"}, "x", {"ErrorStatus": "success"}]) == 0
        assert credits.apply_sent_event(s, "o-nobody", [{"MsgID": msgid, "ErrorStatus": REFUSED}]) == 0
    assert _attempt(db, nid).delivery == "success"


def test_fan_out_rows_keep_the_msgid_and_take_the_report(make_user, standin, db, wxa):
    user = make_user()
    with session_scope() as s:
        credits.add_credit(s, user.id, "PLACEHOLDER-notice")
    row_id = _fan_out_one(user)
    db.expire_all()
    row = db.get(OutboxRow, row_id)
    assert row.status == "sent" and row.msgid and row.msgid.isdigit()
    assert _sent_event(wxa, user.openid, [{"TemplateId": "PLACEHOLDER-notice", "MsgID": row.msgid,
                                           "ErrorCode": 0, "ErrorStatus": "success"}]) == 200
    db.expire_all()
    assert db.get(OutboxRow, row_id).delivery == "success"


def _fan_out_one(user) -> int:
    """One subscribe row for `user`, sent through the fan-out's own chunk sender."""
    from flask import current_app

    from wxapp_backend.notices import broadcast
    from wxapp_backend.notices.broadcast_models import Notice
    from wxapp_backend.wechat.client import get_api

    with session_scope() as s:
        notice = Notice(title="楼宇停电通知", summary="周六上午 9:00-11:00 停电检修", status="sending")
        s.add(notice)
        s.flush()
        row = OutboxRow(notice_id=notice.id, user_id=user.id, channel="subscribe", status="claimed",
                        lease_token="t" * 32)
        s.add(row)
        s.flush()
        row_id = row.id
    limiter = broadcast.RateLimiter(current_app.extensions["wxapp"].redis, 1000.0, key="test-delivery")
    outcome = broadcast._send_one(get_api("wxa"), limiter, row_id, "t" * 32, user.id, user.openid,
                                  "PLACEHOLDER-notice", {"thing1": "楼宇停电通知"}, "pages/notice/detail")
    assert outcome == "sent", json.dumps(outcome)
    return row_id


def test_the_notice_progress_counts_the_reports(make_user, standin, db, wxa):
    from wxapp_backend.notices.broadcast import progress

    users = [make_user() for _ in range(3)]
    rows = []
    for u in users:
        with session_scope() as s:
            credits.add_credit(s, u.id, "PLACEHOLDER-notice")
        rows.append(_fan_out_one(u))
    db.expire_all()
    reports = ["success", REFUSED, "failed:system failed"]
    for u, row_id, status in zip(users, rows, reports, strict=True):
        msgid = db.get(OutboxRow, row_id).msgid
        assert _sent_event(wxa, u.openid, [{"TemplateId": "PLACEHOLDER-notice", "MsgID": msgid,
                                            "ErrorCode": 0 if status == "success" else 20004,
                                            "ErrorStatus": status}]) == 200
    db.expire_all()
    # One notice per row here: each notice counts its own report only.
    expected = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    for row_id, (ok, refused, failed) in zip(rows, expected, strict=True):
        got = progress(db, db.get(OutboxRow, row_id).notice_id)["delivery"]
        assert got == {"delivered": ok, "refused_by_user": refused, "delivery_failed": failed}
    assert {db.get(OutboxRow, r).delivery for r in rows} == set(reports)
