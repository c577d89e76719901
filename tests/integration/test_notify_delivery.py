"""Delivery of notifications: the right channel, WeChat's refusals, retries that never double-send, credits."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from rq.registry import ScheduledJobRegistry
from sqlalchemy import select

from wxapp_backend.db import session_scope, utcnow
from wxapp_backend.notices import credits, jobs
from wxapp_backend.notices.jobs import deliver_notification
from wxapp_backend.notices.kinds import get_kind
from wxapp_backend.notices.models import Notification, NotificationAttempt, SubscribeCredit
from wxapp_backend.notices.services import notify
from wxapp_backend.wechat.client import WeChatAPIError
from wxapp_backend.wechat.jobs import open_window, take_window, window_key

SUBSCRIBE = "/cgi-bin/message/subscribe/send"
CUSTOM = "/cgi-bin/message/custom/send"
TEMPLATE = "PLACEHOLDER-appeal-progress"  # the default template of appeal_* kinds


@pytest.fixture(autouse=True)
def _no_backoff(app_ctx, monkeypatch):
    """Busy (-1) retries without waiting, so retry tests stay fast."""
    from wxapp_backend.wechat import client

    monkeypatch.setitem(app_ctx.extensions, "wxapp_wechat_apis", {})
    real = client.build_api
    monkeypatch.setattr(client, "build_api", lambda *a, **kw: real(*a, **{**kw, "sleep": lambda s: None}))


def _notify(user, kind="appeal_accepted", fields=None, **kw) -> int:
    fields = {"number": "SQ20251016-0001", **(fields or {})}
    kw.setdefault("title", "诉求已受理")
    kw.setdefault("body", "我们已受理您关于空调噪音的诉求。")
    with session_scope() as s:
        return notify(s, user.id, kind, fields, "pages/appeal/detail?id=1", **kw).id


def _give_credits(user, n=1, template=TEMPLATE, *, long_term=False):
    with session_scope() as s:
        for _ in range(n):
            credits.add_credit(s, user.id, template, long_term=long_term)


def _credits(db, user, template=TEMPLATE) -> int | None:
    db.expire_all()
    row = db.scalar(select(SubscribeCredit).where(SubscribeCredit.user_id == user.id,
                                                  SubscribeCredit.template_id == template))
    return None if row is None else row.credits


def _note(db, nid) -> Notification:
    db.expire_all()
    return db.get(Notification, nid)


def _attempts(db, nid) -> list[tuple[str, str, int]]:
    db.expire_all()
    rows = db.scalars(select(NotificationAttempt).where(NotificationAttempt.notification_id == nid)
                      .order_by(NotificationAttempt.id)).all()
    return [(r.channel, r.outcome, r.errcode) for r in rows]


def _sample(name, labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ------------------------------------------------------------------------------------------ channels

def test_with_credit_a_subscribe_message_goes_out(make_user, standin, db):
    user = make_user()
    _give_credits(user, 2)
    nid = _notify(user, fields={"time": "2025-10-16T14:30:00+08:00"})
    assert deliver_notification(nid) == "sent_subscribe"
    body = standin.calls_to(SUBSCRIBE)[0].body
    assert body["touser"] == user.openid and body["template_id"] == TEMPLATE
    assert body["page"] == "pages/appeal/detail?id=1"
    assert body["data"] == {"character_string1": {"value": "SQ20251016-0001"}, "thing2": {"value": "诉求已受理"},
                            "phrase3": {"value": "已受理"}, "time4": {"value": "2025年10月16日 14:30"},
                            "thing5": {"value": "我们已受理您的诉求"}}
    assert _credits(db, user) == 1
    assert _attempts(db, nid) == [("subscribe", "ok", 0)]
    assert _note(db, nid).finished_at is not None


def test_without_credit_or_window_it_stays_in_the_inbox(make_user, standin, db):
    user = make_user()
    nid = _notify(user)
    assert deliver_notification(nid) == "inbox_only"
    assert standin.count() == 0  # not even a token fetch
    assert _attempts(db, nid) == []


def test_inside_the_window_a_customer_service_text_goes_out(make_user, standin, db):
    user = make_user(oa_openid="oOA" + "x" * 20, last_message_at=utcnow() - timedelta(hours=47))
    nid = _notify(user)
    assert deliver_notification(nid) == "sent_custom"
    call = standin.calls_to(CUSTOM)[0]
    assert call.body["touser"] == user.oa_openid and call.body["msgtype"] == "text"
    assert call.body["text"]["content"].startswith("诉求已受理\n我们已受理您关于空调噪音的诉求。")
    assert _attempts(db, nid) == [("custom", "ok", 0)]


@pytest.mark.parametrize(("action", "kind", "hint"), [
    ("resolve", "appeal_resolved", "回复“评价”即可评价办理结果"),
    ("request_info", "appeal_needs_info", "回复“补充”即可补充材料"),
    ("accept", "appeal_accepted", "回复“我的诉求”查看办理进度")])
def test_appeal_notices_in_the_official_account_say_what_to_reply(make_user, make_staff, standin, action, kind,
                                                                  hint):
    """An Official Account follower may have no mini-program login: the chat is where they rate and supplement
    (handlers/appeal_followup.py), so the appeal's own notices say what to reply there, not "see the
    mini-program"."""
    oa_openid = "oOA" + "h" * 25
    user = make_user(openid=f"oa:{oa_openid}", oa_openid=oa_openid, last_message_at=utcnow() - timedelta(hours=1))
    nid = _appeal_notice(user, make_staff, action, kind)
    assert deliver_notification(nid) == "sent_custom"
    content = standin.calls_to(CUSTOM)[-1].body["text"]["content"]
    assert content.endswith(f"（{hint}）") and "小程序" not in content


def test_a_notice_without_a_reply_hint_points_to_the_mini_program(make_user, standin):
    """办不成事 notices go to the centre's admins too, with no reply hint: “回复‘我的诉求’” would list nothing."""
    admin = make_user(oa_openid="oOA" + "s" * 25, last_message_at=utcnow() - timedelta(hours=1))
    assert deliver_notification(_notify(admin, kind="appeal_escalated")) == "sent_custom"
    assert standin.calls_to(CUSTOM)[0].body["text"]["content"].endswith("（详情请在小程序“消息”中查看）")


def _appeal_notice(user, make_staff, action: str, kind: str) -> int:
    """The notification of `kind` that the appeal service sends its enterprise when staff take `action`."""
    from wxapp_backend.appeals import services
    from wxapp_backend.audit import Actor

    staff = Actor("staff", make_staff(role="admin").id, role="admin", name="管理员")
    steps = {"accept": [("accept", {})], "request_info": [("accept", {}), ("request_info", {"note": "请提供合同"})],
             "resolve": [("accept", {}), ("resolve", {"resolution": "已修好"})]}[action]
    with session_scope() as s:
        appeal, _ = services.submit_appeal(s, user.id, services.Intake(
            content="楼道的灯坏了一个星期，晚上很黑", contact_name="张三", contact_phone="13800138000"))
        appeal_id = appeal.id
    for name, data in steps:
        with session_scope() as s:
            services.perform(s, staff, appeal_id, name, data)
    with session_scope() as s:
        return s.scalars(select(Notification.id).where(Notification.user_id == user.id, Notification.kind == kind)
                         .order_by(Notification.id.desc())).first()


def test_other_notices_still_point_to_the_mini_program(make_user, standin):
    user = make_user(oa_openid="oOA" + "k" * 20, last_message_at=utcnow() - timedelta(hours=1))
    assert deliver_notification(_notify(user, kind="activity_reminder", title="活动提醒", body="明天 14:00")) == \
        "sent_custom"
    assert standin.calls_to(CUSTOM)[0].body["text"]["content"].endswith("（详情请在小程序“消息”中查看）")


def test_mini_program_chat_when_there_is_no_official_account_openid(make_user, standin):
    user = make_user(last_message_at=utcnow() - timedelta(minutes=5))
    assert deliver_notification(_notify(user)) == "sent_custom"
    assert standin.calls_to(CUSTOM)[0].body["touser"] == user.openid


def test_outside_the_window_nothing_is_sent(make_user, standin):
    user = make_user(last_message_at=utcnow() - timedelta(hours=48, minutes=1))
    assert deliver_notification(_notify(user)) == "inbox_only"
    assert standin.count(CUSTOM) == 0


def test_the_window_takes_five_messages(make_user, standin, db):
    user = make_user(last_message_at=utcnow() - timedelta(hours=1))
    labels = {"account": "wxa", "errcode": "45047", "source": "local"}
    before = _sample("wechat_kefu_refused_total", labels)
    results = [deliver_notification(_notify(user, title=f"第{i}条")) for i in range(6)]
    assert results == ["sent_custom"] * 5 + ["inbox_only"]
    assert standin.count(CUSTOM) == 5
    assert _sample("wechat_kefu_refused_total", labels) == before + 1
    last = db.scalars(select(Notification).order_by(Notification.id.desc())).first()
    assert _attempts(db, last.id) == [("custom", "limited", 45047)]


def test_notifications_and_chat_replies_share_one_window(make_user, standin, app_ctx):
    """The webhook opens the window and late chat replies spend it; notifications spend the same count."""
    r = app_ctx.extensions["wxapp"].redis
    user = make_user()  # no last_message_at: the Redis window alone decides
    open_window(r, "wxa", user.openid, kind="message")
    assert [take_window(r, "wxa", user.openid) for _ in range(4)] == [0, 0, 0, 0]  # four chat replies
    assert deliver_notification(_notify(user)) == "sent_custom"
    assert deliver_notification(_notify(user, title="再一条")) == "inbox_only"
    assert take_window(r, "wxa", user.openid) == 45047
    assert standin.count(CUSTOM) == 1


def test_a_lost_window_is_restored_from_last_message_at_without_resetting_one(make_user, app_ctx, standin):
    r = app_ctx.extensions["wxapp"].redis
    user = make_user(last_message_at=utcnow() - timedelta(hours=2))
    assert deliver_notification(_notify(user)) == "sent_custom"
    assert int(r.hget(window_key("wxa", user.openid), "sent")) == 1
    assert deliver_notification(_notify(user)) == "sent_custom"
    assert int(r.hget(window_key("wxa", user.openid), "sent")) == 2  # the restore did not reset the count


def test_official_account_only_users_get_no_subscribe_message(make_user, standin, db):
    """Users the Official Account created carry the placeholder openid "oa:<oa_openid>"."""
    oa_openid = "oOA" + "y" * 25
    user = make_user(openid=f"oa:{oa_openid}", oa_openid=oa_openid)
    _give_credits(user, 1)
    assert deliver_notification(_notify(user)) == "inbox_only"
    assert standin.count() == 0
    user2 = make_user(openid=f"oa:{oa_openid}z", oa_openid=oa_openid + "z",
                      last_message_at=utcnow() - timedelta(minutes=3))
    assert deliver_notification(_notify(user2)) == "sent_custom"
    assert standin.calls_to(CUSTOM)[0].body["touser"] == oa_openid + "z"


# ------------------------------------------------------------------------------------------ refusals

def test_43101_zeroes_the_credit_and_falls_through(make_user, standin, db):
    user = make_user(last_message_at=utcnow() - timedelta(hours=1))
    _give_credits(user, 3)
    standin.fail_next(SUBSCRIBE, 43101)
    nid = _notify(user)
    assert deliver_notification(nid) == "sent_custom"
    assert _credits(db, user) == 0
    assert _attempts(db, nid) == [("subscribe", "refused", 43101), ("custom", "ok", 0)]
    assert standin.count(SUBSCRIBE) == 1  # 43101 is routine: never retried


@pytest.mark.parametrize("errcode", [47003, 40003, 40037, 41030])
def test_refused_subscribe_is_recorded_and_the_credit_given_back(make_user, standin, db, errcode):
    user = make_user()
    _give_credits(user, 1)
    standin.fail_next(SUBSCRIBE, errcode)
    nid = _notify(user)
    assert deliver_notification(nid) == "inbox_only"
    assert _attempts(db, nid) == [("subscribe", "failed", errcode)]
    assert _credits(db, user) == 1
    assert standin.count(SUBSCRIBE) == 1


def test_fields_that_would_fail_are_caught_before_sending(make_user, standin, db):
    user = make_user()
    _give_credits(user, 1)
    nid = _notify(user, fields={"status": "accepted!"})  # phrase3 must be Chinese
    assert deliver_notification(nid) == "inbox_only"
    assert standin.count(SUBSCRIBE) == 0
    [(channel, outcome, _)] = _attempts(db, nid)
    assert (channel, outcome) == ("subscribe", "invalid")
    db.expire_all()
    assert "phrase3" in db.scalar(select(NotificationAttempt.detail))
    assert _credits(db, user) == 1  # not spent on a message that could not go


@pytest.mark.parametrize("errcode", [45015, 45047])
def test_customer_service_limits_are_counted_and_end_inbox_only(make_user, standin, db, errcode):
    user = make_user(last_message_at=utcnow() - timedelta(hours=1))
    labels = {"account": "wxa", "errcode": str(errcode), "source": "wechat"}
    before = _sample("wechat_kefu_refused_total", labels)
    standin.fail_next(CUSTOM, errcode)
    nid = _notify(user)
    assert deliver_notification(nid) == "inbox_only"
    assert _attempts(db, nid) == [("custom", "limited", errcode)]
    assert _sample("wechat_kefu_refused_total", labels) == before + 1
    assert _sample("wechat_api_calls_total", {"api": "custom_send", "errcode": str(errcode)}) >= 1


def test_daily_quota_on_subscribe_alerts_and_waits_for_the_cool_down(make_user, standin, db, caplog):
    # The quota is not the message's fault: the notification waits for the cool-down (as the fan-out's rows do)
    # instead of ending inbox_only with the user's credit unused (test_notices3_qa_s14 follows it to the send).
    user = make_user()
    _give_credits(user, 1)
    standin.fail_next(SUBSCRIBE, 45009)
    nid = _notify(user)
    assert deliver_notification(nid) == "pending"
    assert _attempts(db, nid) == [("subscribe", "waiting", 45009)]
    assert any(getattr(r, "alert", False) for r in caplog.records)
    assert standin.count(SUBSCRIBE) == 1 and _credits(db, user) == 1


def test_long_term_templates_do_not_spend_credits(make_user, standin, db):
    user = make_user()
    _give_credits(user, 1, long_term=True)
    for _ in range(3):
        assert deliver_notification(_notify(user)) == "sent_subscribe"
    assert _credits(db, user) == 1


def test_unknown_kind_goes_to_the_inbox(make_user, standin):
    user = make_user()
    _give_credits(user, 1)
    assert deliver_notification(_notify(user, kind="something_new")) == "inbox_only"
    assert standin.count() == 0


# ------------------------------------------------------------------------------------------ idempotence

def test_a_job_run_twice_sends_once(make_user, standin, db):
    user = make_user()
    _give_credits(user, 5)
    nid = _notify(user)
    assert deliver_notification(nid) == "sent_subscribe"
    assert deliver_notification(nid) == "skipped"
    assert standin.count(SUBSCRIBE) == 1 and _credits(db, user) == 4
    assert len(_attempts(db, nid)) == 1


def test_transient_error_raises_for_retry_and_the_retry_reuses_the_claim(make_user, standin, db):
    user = make_user()
    _give_credits(user, 1)
    standin.fail_next(SUBSCRIBE, -1, times=3)  # outlasts the client's own backoff retries
    nid = _notify(user)
    with pytest.raises(WeChatAPIError) as info:
        deliver_notification(nid)
    assert info.value.transient
    assert _note(db, nid).status == "pending"
    assert _attempts(db, nid) == [("subscribe", "sending", -1)]
    assert _credits(db, user) == 0  # claimed once
    # RQ's retry: the same claim is used, no second credit is needed.
    assert deliver_notification(nid) == "sent_subscribe"
    assert _attempts(db, nid) == [("subscribe", "ok", 0)]
    assert deliver_notification(nid) == "skipped"
    assert standin.count(SUBSCRIBE) == 4  # three busy answers, one success
    assert _credits(db, user) == 0


def test_timeout_on_customer_service_retries_on_the_same_slot(make_user, standin, db, app_ctx, monkeypatch):
    state = app_ctx.extensions["wxapp"]
    monkeypatch.setattr(state.wechat_http, "timeout", 0.3)
    user = make_user(last_message_at=utcnow() - timedelta(hours=1))
    nid = _notify(user)
    standin.set_latency(0.8, CUSTOM)
    with pytest.raises(WeChatAPIError):
        deliver_notification(nid)
    standin.set_latency(0, CUSTOM)
    assert deliver_notification(nid) == "sent_custom"
    assert _attempts(db, nid) == [("custom", "ok", 0)]
    # Only one window slot was taken for the two tries.
    assert int(state.redis.hget(window_key("wxa", user.openid), "sent")) == 1


def test_the_last_retry_gives_the_credit_back_and_fails(make_user, standin, db, monkeypatch):
    user = make_user()
    _give_credits(user, 1)
    standin.fail_next(SUBSCRIBE, -1, times=3)
    monkeypatch.setattr(jobs, "_last_try", lambda: True)
    nid = _notify(user)
    assert deliver_notification(nid) == "failed"
    assert _attempts(db, nid) == [("subscribe", "failed", -1)]
    assert _credits(db, user) == 1


def test_an_overlapping_run_does_nothing(make_user, standin, app_ctx):
    user = make_user()
    _give_credits(user, 1)
    nid = _notify(user)
    lock = app_ctx.extensions["wxapp"].redis.lock(f"wxapp:notify:lock:{nid}", timeout=10)
    assert lock.acquire(blocking=False)
    assert deliver_notification(nid) == "busy"
    lock.release()
    assert standin.count() == 0
    assert deliver_notification(nid) == "sent_subscribe"


def test_through_the_queue_with_rq_retry(make_user, standin, db, run_jobs, app_ctx):
    user = make_user()
    _give_credits(user, 1)
    standin.fail_next(SUBSCRIBE, -1, times=3)
    nid = _notify(user)
    assert run_jobs() == 1
    state = app_ctx.extensions["wxapp"]
    assert f"notify-{nid}" in ScheduledJobRegistry(queue=state.queue).get_job_ids()  # RQ will retry it
    assert _note(db, nid).status == "pending"
    nid2 = _notify(user, title="第二条")
    assert run_jobs() == 1
    assert _note(db, nid2).status == "inbox_only"  # the only credit is held by the first notification


def test_delivery_failure_never_touches_the_callers_transaction(make_user, standin, db, run_jobs):
    user = make_user()
    _give_credits(user, 1)
    standin.fail_next(SUBSCRIBE, 40037)
    nid = _notify(user)
    assert run_jobs() == 1
    assert _note(db, nid).inbox_item_id is not None


# ------------------------------------------------------------------------------------------ credits

def test_claim_takes_one_credit_at_a_time(app_ctx, make_user, db):
    user = make_user()
    _give_credits(user, 2)
    with session_scope() as s:
        assert credits.claim(s, user.id, TEMPLATE)
        assert credits.claim(s, user.id, TEMPLATE)
        assert not credits.claim(s, user.id, TEMPLATE)
        assert not credits.claim(s, user.id, "NO-SUCH")
    assert _credits(db, user) == 0
    with session_scope() as s:
        credits.zero_credits(s, user.id, TEMPLATE, ban=True)
        credits.add_credit(s, user.id, TEMPLATE)  # a new acceptance lifts the ban
        assert credits.claim(s, user.id, TEMPLATE)


def _naive_claim(session, user_id: int, template_id: str) -> bool:
    """The race the real claim avoids: read, decide, write back."""
    row = session.scalar(select(SubscribeCredit).where(SubscribeCredit.user_id == user_id,
                                                       SubscribeCredit.template_id == template_id))
    if row is None or row.credits <= 0:
        return False
    time.sleep(0.05)  # another worker reads the same count meanwhile
    row.credits = row.credits - 1
    return True


def _race(app, user_id: int, claim_fn, n: int = 12) -> int:
    barrier = threading.Barrier(n)
    won: list[bool] = []
    lock = threading.Lock()

    def run() -> None:
        with app.app_context():
            barrier.wait()
            with session_scope() as s:
                ok = claim_fn(s, user_id, TEMPLATE)
            with lock:
                won.append(ok)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return sum(won)


@pytest.mark.postgres
def test_claims_under_concurrency_never_overspend(app_ctx, make_user, db):
    user = make_user()
    _give_credits(user, 3)
    assert _race(app_ctx, user.id, credits.claim) == 3
    assert _credits(db, user) == 0


@pytest.mark.postgres
def test_negative_control_read_then_write_overspends(app_ctx, make_user, db):
    user = make_user()
    _give_credits(user, 3)
    assert _race(app_ctx, user.id, _naive_claim) > 3  # more sends than the user allowed
    assert get_kind("appeal_accepted").template_id == TEMPLATE


def test_sweeper_requeues_only_old_pending_notifications(app_ctx, make_user, run_jobs, db):
    from datetime import timedelta

    from wxapp_backend.db import session_scope, utcnow
    from wxapp_backend.notices.jobs import sweep_pending_notifications
    from wxapp_backend.notices.models import Notification
    from wxapp_backend.notices.services import notify

    user = make_user()
    with session_scope() as s:
        old = notify(s, user.id, "appeal_accepted", {}, title="旧的").id
        new = notify(s, user.id, "appeal_accepted", {}, title="新的").id
    app_ctx.extensions["wxapp"].queue.empty()  # the original jobs were lost with a dead worker
    with session_scope() as s:
        s.get(Notification, old).created_at = utcnow() - timedelta(hours=1)
    assert sweep_pending_notifications() == 1
    assert run_jobs() == 1
    db.expire_all()
    assert db.get(Notification, old).status != "pending"
    assert db.get(Notification, new).status == "pending"


# --- the customer-service windows as WeChat keeps them (session 8) ---------------------------------------

def test_a_new_menu_click_opens_a_new_one_minute_window(app_ctx):
    """Each click, follow, scan or chat entry opens its own minute; a spent or stale one from an earlier event
    used to stay (HSETNX) and refuse the new event's late reply with a local 45015."""
    r = app_ctx.extensions["wxapp"].redis
    t0 = time.time()
    open_window(r, "oa", "oClick1", kind="event", now=t0)
    assert [take_window(r, "oa", "oClick1", now=t0 + 1) for _ in range(4)] == [0, 0, 0, 45047]
    assert take_window(r, "oa", "oClick1", now=t0 + 120) == 45015  # the minute is over
    open_window(r, "oa", "oClick1", kind="event", now=t0 + 300)  # the user clicks the menu again
    assert take_window(r, "oa", "oClick1", now=t0 + 301) == 0


def test_an_event_does_not_spend_or_shorten_the_message_window(app_ctx):
    r = app_ctx.extensions["wxapp"].redis
    t0 = time.time()
    open_window(r, "wxa", "oBoth1", kind="message", now=t0)
    open_window(r, "wxa", "oBoth1", kind="event", now=t0 + 10)
    # the two of the chat entry's minute, then five from the 48 hours
    assert [take_window(r, "wxa", "oBoth1", now=t0 + 20) for _ in range(8)] == [0] * 7 + [45047]
    assert take_window(r, "wxa", "oBoth1", now=t0 + 3600) == 45047  # the minute is over, the 48 h spent


def test_the_event_minute_is_spent_before_the_48_hours(app_ctx):
    """Entering the chat (or a menu click) allows its own sends for a minute: the welcome reply used one of the
    five the 48 hours allow first, and a notice later in the day found one fewer."""
    r = app_ctx.extensions["wxapp"].redis
    t0 = time.time()
    open_window(r, "wxa", "oBoth2", kind="message", now=t0)
    open_window(r, "wxa", "oBoth2", kind="event", now=t0 + 10)
    assert [take_window(r, "wxa", "oBoth2", now=t0 + 20) for _ in range(2)] == [0, 0]
    # The minute is over: all five of the 48 hours are still there.
    assert [take_window(r, "wxa", "oBoth2", now=t0 + 3600) for _ in range(6)] == [0] * 5 + [45047]


@pytest.mark.parametrize("errcode", [45015, 45047])
def test_a_window_wechat_says_is_shut_is_not_tried_again(make_user, standin, db, app_ctx, errcode):
    """Our record said open (last_message_at 1 h ago), WeChat said no: the next notification does not call
    WeChat only to be refused again; the user's next message opens the window afresh."""
    user = make_user(last_message_at=utcnow() - timedelta(hours=1))
    standin.fail_next(CUSTOM, errcode)
    first = _notify(user)
    assert deliver_notification(first) == "inbox_only"
    assert _attempts(db, first) == [("custom", "limited", errcode)]
    assert deliver_notification(_notify(user, title="第二条")) == "inbox_only"
    assert standin.count(CUSTOM) == 1
    open_window(app_ctx.extensions["wxapp"].redis, "wxa", user.openid, kind="message")  # the user writes again
    assert deliver_notification(_notify(user, title="第三条")) == "sent_custom"
    assert standin.count(CUSTOM) == 2


def test_a_late_chat_reply_refused_by_wechat_shuts_the_window_too(app_ctx, standin):
    from wxapp_backend.wechat import jobs as wechat_jobs

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oLate45015", kind="message")
    standin.fail_next(CUSTOM, 45015)
    text = {"msgtype": "text", "text": {"content": "稍等，答案来了"}}
    assert wechat_jobs.send_customer_message("wxa", "oLate45015", text) == "refused_45015"
    assert wechat_jobs.send_customer_message("wxa", "oLate45015", text) == "refused_45015"
    assert standin.count(CUSTOM) == 1


def test_a_run_that_finds_the_lock_held_comes_back_when_it_can_have_expired(make_user, standin, db, app_ctx):
    """The lock outlives a run whose worker was killed (up to LOCK_TTL); RQ's retry of the killed job found it
    held, answered "busy" and ended, leaving the notification to the 10-minute sweep (10-20 minutes late). It now
    schedules itself for when the lock has expired."""
    from datetime import UTC, datetime

    user = make_user()
    _give_credits(user, 1)
    nid = _notify(user)
    state = app_ctx.extensions["wxapp"]
    state.redis.set(f"wxapp:notify:lock:{nid}", "a-killed-worker", px=30_000)
    assert deliver_notification(nid) == "busy"
    registry = ScheduledJobRegistry(queue=state.queue)
    later = [j for j in registry.get_job_ids() if j.startswith(f"notify-{nid}-after-")]
    assert len(later) == 1
    when = registry.get_scheduled_time(later[0])
    wait = (when.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds()
    assert 25 <= wait <= 32, wait  # the lock's 30 s left, and a second
    assert _note(db, nid).status == "pending" and standin.count() == 0
