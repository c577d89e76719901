"""QA session 9, crash safety: what a failure in the middle of a step leaves behind."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from handlers import appeal_followup as followup
from handlers import appeal_intake as intake
from handlers.router import Context, Router
from wxapp_backend.appeals import services
from wxapp_backend.appeals.models import Appeal, AppealRating
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.wechat.messages import normalise

# --------------------------------------------------------------------------- chat follow-up (补充 / 评价)


@pytest.fixture
def chat(redis_client, make_user, make_staff, app_ctx):
    user = make_user()
    staff = Actor("staff", make_staff(role="admin").id, role="admin", name="管理员")
    router = followup.install(intake.install(Router()))
    seq = iter(range(10**6))

    def say(content=None, *, msg_type="text", media_id=None):
        raw = {"ToUserName": "gh_x", "FromUserName": f"o-{user.id}", "CreateTime": "1700000000",
               "MsgType": msg_type, "MsgId": str(880000 + next(seq))}
        if content is not None:
            raw["Content"] = content
        if media_id:
            raw["MediaId"], raw["PicUrl"] = media_id, "http://example.invalid/p.jpg"
        reply = router.dispatch(Context(msg=normalise(raw, "oa"), redis=redis_client, user_id=user.id))
        return getattr(reply, "text", reply)

    def appeal(*actions):
        with session_scope() as s:
            a, _ = services.submit_appeal(s, user.id, services.Intake(
                content="办公楼空调不制冷，物业一直不处理", contact_name="张三", contact_phone="13800138000"))
            appeal_id, number = a.id, a.number
        for action, data in actions:
            with session_scope() as s:
                services.perform(s, staff, appeal_id, action, data)
        return appeal_id, number

    say.appeal = appeal
    return say


def _fail_once(monkeypatch, module, name):
    real = getattr(module, name)
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("UPDATE appeals", {}, Exception("database is gone"))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)


def test_a_supplement_the_database_failed_to_save_is_kept_for_the_retry(chat, monkeypatch, run_jobs, standin):
    """The database fails while the chat supplement is saved: the user is asked to send it again (the webhook's
    crash reply, or WeChat's own retry), so the flow with its photos must still be there; it was ended before
    the save, so the text sent again went to the bot and the photos were lost."""
    appeal_id, number = chat.appeal(("accept", {}), ("request_info", {"note": "请提供物业合同首页"}))
    assert number in chat("补充")
    assert chat(msg_type="image", media_id="MEDIA-CRASH-1") == followup.SUPPLEMENT_PHOTO.format(n=1)
    _fail_once(monkeypatch, services, "supplement")
    with pytest.raises(OperationalError):
        chat("合同首页已拍照，物业是某某物业公司")
    assert chat("合同首页已拍照，物业是某某物业公司").startswith(f"已补充，诉求 {number} 恢复办理。照片 1 张")
    run_jobs()
    with session_scope() as s:
        appeal = s.get(Appeal, appeal_id)
        assert appeal.status == "accepted" and appeal.info_request == ""
        assert [i.get("media_id") for i in appeal.images] == ["MEDIA-CRASH-1"]


def test_a_rating_the_database_failed_to_save_can_be_sent_again(chat, monkeypatch):
    appeal_id, number = chat.appeal(("accept", {}), ("resolve", {"resolution": "已协调物业维修空调"}))
    chat(f"评价 {number}")
    chat("1")
    chat("5")
    _fail_once(monkeypatch, services, "rate")
    with pytest.raises(OperationalError):
        chat("处理得很快，谢谢")
    assert chat("处理得很快，谢谢") == followup.RATED_CLOSED.format(number=number)
    with session_scope() as s:
        assert s.get(Appeal, appeal_id).status == "closed"
        assert [r.comment for r in s.query(AppealRating).filter_by(appeal_id=appeal_id)] == ["处理得很快，谢谢"]


# --------------------------------------------------------------------------- webhook: a late handler that fails


def test_a_late_handler_that_fails_tells_the_user_to_send_again(app, settings, standin, run_jobs, redis_client):
    """The handler misses the deadline (the push is answered "success", WeChat's retries too) and then raises:
    nothing runs the message again, so the user was left with silence, their text lost. In time, the same
    failure answers the crash reply; late, it goes by customer-service message."""
    import time
    from urllib.parse import urlencode

    from handlers import Router
    from wxapp_backend import create_app
    from wxapp_backend.wechat import jobs
    from wxapp_backend.wechat.chat import make_push, seal_push
    from wxapp_backend.wechat.pipeline import CRASH_TEXT, account_from_settings

    r = Router()

    @r.default
    def slow_and_broken(ctx):
        time.sleep(0.5)
        raise OperationalError("INSERT INTO appeals", {}, Exception("database is gone"))

    a = create_app(settings.with_overrides(wechat_token="crashlate", webhook_deadline=0.2,
                                           extra={"wechat_router": r}))
    acct = account_from_settings(a.extensions["wxapp"].settings, "oa")
    jobs.open_window(redis_client, "oa", "oCrashLate", kind="message")
    args, body = seal_push(acct, make_push(acct, "oCrashLate", text="我们楼的电梯坏了三天了", msg_id="990001"))
    assert a.test_client().post("/wechat?" + urlencode(args), data=body).get_data() == b"success"
    time.sleep(0.8)
    run_jobs()
    sent = [c.body for c in standin.calls_to("/cgi-bin/message/custom/send") if c.body.get("touser") == "oCrashLate"]
    assert [b["text"]["content"] for b in sent] == [CRASH_TEXT]


# --------------------------------------------------------------------------- fan-out: an error inside a chunk


def test_rows_a_failed_chunk_never_sent_go_back_to_pending_with_their_credit(published_notice, app_ctx, make_user, make_staff,
                                                                             run_jobs, standin, db, monkeypatch):
    """Redis (the shared rate limiter) fails in the middle of a chunk, no worker is killed: the rows after it in
    the chunk were never sent, yet they stayed 'sending' and the sweeper failed them as 结果未知 for good, the
    users' credits spent. Now they are pending again, credit back, and the next run sends them, once each."""
    import redis

    from wxapp_backend.notices import broadcast
    from wxapp_backend.notices.broadcast_models import OutboxRow
    from wxapp_backend.notices.kinds import get_kind
    from wxapp_backend.notices.models import SubscribeCredit

    template = get_kind("notice").template_id
    users = [make_user() for _ in range(6)]
    nid = published_notice(users, fanout_claim_batch=6, fanout_send_chunk=3)
    broadcast.expand_notice(nid)
    real = broadcast.RateLimiter.acquire
    calls = []

    def flaky(self):
        calls.append(1)
        if len(calls) == 2:
            raise redis.ConnectionError("Redis went away")
        return real(self)

    monkeypatch.setattr(broadcast.RateLimiter, "acquire", flaky)
    with pytest.raises(redis.ConnectionError):
        broadcast.send_notice(nid)
    monkeypatch.setattr(broadcast.RateLimiter, "acquire", real)

    def statuses():
        db.expire_all()
        return sorted(r.status for r in db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe"))

    assert statuses() == ["claimed"] * 3 + ["pending"] * 2 + ["sent"]
    assert broadcast.sweep_leases(lease_seconds=-1)["unknown"] == 0
    run_jobs()
    assert statuses() == ["sent"] * 6
    openids = [c.body["touser"] for c in standin.calls_to("/cgi-bin/message/subscribe/send")
               if c.body.get("template_id") == template]
    assert sorted(openids) == sorted(u.openid for u in users)  # everyone once
    db.expire_all()
    assert [c.credits for c in db.query(SubscribeCredit).filter(
        SubscribeCredit.user_id.in_([u.id for u in users]))] == [0] * 6  # one credit spent each, no more


@pytest.mark.parametrize("account", ["oa", "wxa"])
def test_a_handler_that_fails_in_time_tells_the_user_to_send_again(app, settings, standin, run_jobs, account):
    """The Official Account answers the crash reply passively; the mini-program's chat takes no passive text and
    its "success" is never retried by WeChat, so it used to leave the user in silence: now it goes by
    customer-service message."""
    from urllib.parse import urlencode

    from handlers import Router
    from wxapp_backend import create_app
    from wxapp_backend.wechat.chat import make_push, open_reply, seal_push
    from wxapp_backend.wechat.pipeline import CRASH_TEXT, account_from_settings

    r = Router()

    @r.default
    def broken(ctx):
        raise OperationalError("INSERT INTO appeals", {}, Exception("database is gone"))

    overrides = ({"wechat_token": "crashnow"} if account == "oa"
                 else {"wxa_token": "crashnowwxa", "wxa_aes_key": "B" * 43, "wxa_msg_format": "json"})
    a = create_app(settings.with_overrides(**overrides, extra={"wechat_router": r}))
    acct = account_from_settings(a.extensions["wxapp"].settings, account)
    openid = f"oCrashNow-{account}"
    args, body = seal_push(acct, make_push(acct, openid, text="我们楼的电梯坏了三天了", msg_id="990101"))
    resp = a.test_client().post(("/wechat" if account == "oa" else "/wxa/message") + "?" + urlencode(args),
                                data=body)
    run_jobs()
    kefu = [c.body["text"]["content"] for c in standin.calls_to("/cgi-bin/message/custom/send")
            if c.body.get("touser") == openid]
    if account == "oa":
        assert open_reply(acct, resp.get_data(as_text=True))["Content"] == CRASH_TEXT and kefu == []
    else:
        assert resp.get_data() == b"success" and kefu == [CRASH_TEXT]


# --------------------------------------------------------------------------- webhook: a first try that died


def test_a_retry_runs_the_message_whose_first_try_died_with_its_process(app, settings, redis_client):
    """A gunicorn worker killed (OOM, a deploy) while handling a push leaves its "processing" record. WeChat's
    retry, five seconds later, was answered "success" because of it, and WeChat sends nothing more after a
    "success": the message was lost without a word. A record still "processing" past the first try's deadline
    has nobody behind it; the retry now runs the message itself (a live first try is not taken over)."""
    import time
    from urllib.parse import urlencode

    from handlers import Router, Text
    from wxapp_backend import create_app
    from wxapp_backend.wechat.chat import make_push, open_reply, seal_push
    from wxapp_backend.wechat.messages import dedup_key
    from wxapp_backend.wechat.pipeline import account_from_settings

    runs: list[str] = []
    r = Router()

    @r.default
    def answer(ctx):
        runs.append(ctx.text)
        return Text(f"收到：{ctx.text}")

    a = create_app(settings.with_overrides(wechat_token="crashdied", webhook_deadline=0.3,
                                           extra={"wechat_router": r}))
    pipeline = a.extensions["wxapp_pipeline"]
    acct = account_from_settings(a.extensions["wxapp"].settings, "oa")

    def push(msg_id):
        plain = make_push(acct, "oCrashDied", text=f"确认{msg_id}", msg_id=msg_id)
        args, body = seal_push(acct, plain)
        return plain, args, body

    def first_try_dies(msg_id):
        """The first try claims the message, then its process is killed: nothing answers, nothing releases."""
        plain, args, body = push(msg_id)
        msg, _, _ = pipeline._open(acct, args, body.encode() if isinstance(body, str) else body)
        claim, _ = pipeline.dedup.claim(dedup_key(msg, acct.appid or acct.name))
        assert claim.state == "new"
        return plain

    def retry(plain):
        args, body = seal_push(acct, plain)
        return a.test_client().post("/wechat?" + urlencode(args), data=body)

    # Negative control: while the first try may still be running, its retry is not run a second time.
    plain = first_try_dies("990201")
    assert retry(plain).get_data() == b"success" and runs == []
    # Past its deadline (0.3 s) and the margin, the first try cannot answer any more: the retry runs it.
    plain = first_try_dies("990202")
    time.sleep(0.3 + 1.1)
    resp = retry(plain)
    assert resp.get_data() != b"success"
    assert open_reply(acct, resp.get_data(as_text=True))["Content"] == "收到：确认990202"
    assert runs == ["确认990202"]
    again = retry(plain)  # WeChat's next retry gets the stored answer: the handler does not run again
    assert again.get_data() == resp.get_data() and runs == ["确认990202"]
