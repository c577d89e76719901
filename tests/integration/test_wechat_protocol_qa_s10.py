"""QA pass 10 on conformance with the WeChat platform (WECHAT.md, wechatpy): field rules, media, windows."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import requests

from wxapp_backend.wechat.templates import TemplateFieldError, validate_value

SUBSCRIBE = "/cgi-bin/message/subscribe/send"
CUSTOM = "/cgi-bin/message/custom/send"


# ------------------------------------------------------------------------------------------ subscribe fields
# WeChat's subscribeMessage.send table: amount is "1个币种符号+10位以内纯数字，可带小数，结尾可带“元”"; name is "10个以内
# 纯汉字或20个以内纯字母或符号 ... 中文和字母混合按中文名算，10个字内"; phone_number "17位以内，数字、符号".


@pytest.mark.parametrize("value", ["12345678901", "¥123456789.50", "123456789012元"])
def test_an_amount_of_more_than_ten_digits_is_refused_before_wechat_refuses_it(value):
    with pytest.raises(TemplateFieldError):
        validate_value("amount1", value)


@pytest.mark.parametrize("value", ["1234567890", "¥12345678.50", "1234567890元", "0.5"])
def test_an_amount_of_up_to_ten_digits_passes(value):
    assert validate_value("amount1", value) == value


@pytest.mark.parametrize("value", ["张Wei", "李Lily", "Anna·李"])
def test_a_name_mixing_hanzi_and_letters_passes_as_a_chinese_name(value):
    assert validate_value("name1", value) == value


def test_a_mixed_name_is_held_to_the_chinese_limit_of_ten():
    with pytest.raises(TemplateFieldError):
        validate_value("name1", "张" + "a" * 10)


@pytest.mark.parametrize("value", ["(021)63281234", "021-6328*1234#8", "+86(21)63281234"])
def test_a_phone_number_may_carry_symbols(value):
    assert validate_value("phone_number1", value) == value


def _subscribe(standin, data: dict) -> dict:
    http = requests.Session()
    token = http.post(standin.base_url + "/cgi-bin/stable_token",
                      json={"grant_type": "client_credential", "appid": "wxqa10", "secret": "s"}).json()["access_token"]
    body = {"touser": "o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "template_id": "T1",
            "data": {k: {"value": v} for k, v in data.items()}}
    return http.post(standin.base_url + SUBSCRIBE, params={"access_token": token}, json=body).json()


def test_the_standin_refuses_an_amount_wechat_refuses(standin):
    assert _subscribe(standin, {"amount1": "¥12345678.50"})["errcode"] == 0
    assert _subscribe(standin, {"amount1": "12345678901"})["errcode"] == 47003
    assert _subscribe(standin, {"amount1": "一百元"})["errcode"] == 47003


# ------------------------------------------------------------------------------------------ media download


class _GatewaySession(requests.Session):
    """api.weixin.qq.com behind a gateway that answers media/get with an HTML error page (502)."""

    def request(self, method, url, **kw):
        resp = requests.Response()
        resp.url = url
        if url.endswith("/cgi-bin/stable_token"):
            resp.status_code, resp._content = 200, b'{"access_token":"T-qa10","expires_in":7200}'
            resp.headers["Content-Type"] = "application/json; encoding=utf-8"
        else:
            resp.status_code, resp._content = 502, b"<html><body>502 Bad Gateway</body></html>"
            resp.headers["Content-Type"] = "text/html"
        return resp


def test_a_gateway_error_page_from_media_get_is_a_transient_failure_not_a_photo(app_ctx):
    from wxapp_backend.wechat.client import WeChatAPIError, WeChatHTTP, build_api

    state = app_ctx.extensions["wxapp"]
    api = build_api("wxa", state.settings, state.redis, WeChatHTTP("http://wechat.invalid", session=_GatewaySession()),
                    sleep=lambda s: None)
    with pytest.raises(WeChatAPIError) as err:
        api.download_media("MEDIA-qa10")
    assert err.value.transient  # the job's retry fetches the photo; it is not "not fetched" for good


# ------------------------------------------------------------------------------------------ customer-service windows


def _notify(user) -> int:
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices.services import notify

    with session_scope() as s:
        return notify(s, user.id, "appeal_accepted", {"number": "SQ20251016-0001"}, "pages/appeals/detail?id=1",
                      title="诉求已受理", body="我们已受理您的诉求。").id


def test_a_notice_goes_through_the_mini_program_window_the_user_opened_not_a_made_up_official_account_one(
        make_user, app_ctx, standin):
    """A person known to both accounts wrote in the mini-program's customer-service chat an hour ago: WeChat holds
    that window open (5 sends in 48 h), and none for the Official Account, where they wrote nothing."""
    from wxapp_backend.db import utcnow
    from wxapp_backend.notices.jobs import deliver_notification
    from wxapp_backend.wechat.jobs import open_window, window_key

    r = app_ctx.extensions["wxapp"].redis
    user = make_user(openid="oWxaQa10" + "w" * 20, oa_openid="oOaQa10" + "o" * 21,
                     last_message_at=utcnow() - timedelta(hours=1))
    open_window(r, "wxa", user.openid, kind="message")  # as the webhook did for their message
    assert deliver_notification(_notify(user)) == "sent_custom"
    (call,) = standin.calls_to(CUSTOM)
    assert call.body["touser"] == user.openid  # WeChat answers 45015 to the Official Account openid
    assert not r.exists(window_key("oa", user.oa_openid))


# ------------------------------------------------------------------------------------------ request bodies


def test_chinese_text_goes_to_wechat_as_utf8_not_as_unicode_escapes(app_ctx, standin):
    """WeChat shows a \\uXXXX escape in a customer-service text as those six characters (and refuses it elsewhere,
    40033); wechatpy sends its JSON bodies as UTF-8 with ensure_ascii=False for that reason."""
    from wxapp_backend.wechat.client import get_api

    get_api("wxa").send_text("o9AgO5Kd5ggOC-bXrbNODIiE3bGY", "您好，小二在😊")
    (call,) = standin.calls_to(CUSTOM)
    assert "您好，小二在😊".encode() in call.raw
    assert b"\\u" not in call.raw
    assert call.body["text"]["content"] == "您好，小二在😊"


# ------------------------------------------------------------------------------------------ message types

# What WeChat pushes, as a text message, for what it cannot pass on (a sticker, a chat record ...).
PLACEHOLDER = "【收到不支持的消息类型，暂无法显示】"


def _oa_chat(settings):
    """A plain-mode Official Account and a function that sends one text as a user and returns the reply's text."""
    from urllib.parse import urlencode

    from wxapp_backend import create_app
    from wxapp_backend.wechat.chat import make_push, open_reply, seal_push
    from wxapp_backend.wechat.pipeline import account_from_settings

    application = create_app(settings.with_overrides(wechat_token="qa10token"))
    acct = account_from_settings(application.extensions["wxapp"].settings, "oa")

    def say(text: str, openid: str = "oQa10Sticker") -> str:
        args, body = seal_push(acct, make_push(acct, openid, text=text))
        resp = application.test_client().post("/wechat?" + urlencode(args), data=body)
        return (open_reply(acct, resp.get_data(as_text=True)) or {}).get("Content", "")

    return say


def test_wechats_unsupported_type_placeholder_is_no_question_for_the_knowledge_base(app, settings, db):
    from sqlalchemy import func, select

    from handlers.bot import UNSUPPORTED
    from wxapp_backend.knowledge_store.models import ChatTurn, UnansweredQuestion

    say = _oa_chat(settings)
    assert say(PLACEHOLDER) == UNSUPPORTED  # not “这个问题我还没学会。我已经把它记下来…”
    assert db.scalar(select(func.count()).select_from(ChatTurn)) == 0
    assert db.scalar(select(func.count()).select_from(UnansweredQuestion)) == 0  # nothing for staff to answer


def test_a_sticker_sent_while_describing_an_appeal_does_not_become_its_description(app, settings):
    from handlers.appeal_intake import PROMPTS

    say = _oa_chat(settings)
    assert PROMPTS["describe"] in say("我要反映")
    assert PROMPTS["place"] not in say(PLACEHOLDER)
    assert PROMPTS["place"] in say("楼道里的灯坏了一个星期，晚上很黑")


def test_a_subscribe_popup_in_the_mini_program_opens_no_customer_service_window(app, settings, app_ctx, standin,
                                                                                  make_user, db):
    """Accepting subscribe messages is no message to the customer-service chat: WeChat keeps no 48-hour window for
    it and answers 45015 to a customer-service send. A notice after the credit is used keeps to the inbox."""
    from urllib.parse import urlencode

    from wxapp_backend import create_app
    from wxapp_backend.notices.jobs import deliver_notification
    from wxapp_backend.wechat.chat import seal_push
    from wxapp_backend.wechat.pipeline import account_from_settings

    user = make_user(openid="oWxaQa10Popup" + "p" * 15)
    application = create_app(settings.with_overrides(wxa_token="qa10wxa", wxa_msg_format="json"))
    acct = account_from_settings(application.extensions["wxapp"].settings, "wxa")
    popup = json.dumps({"ToUserName": "gh_qa10", "FromUserName": user.openid, "CreateTime": int(time.time()),
                        "MsgType": "event", "Event": "subscribe_msg_popup_event",
                        "List": {"TemplateId": "PLACEHOLDER-appeal-progress", "SubscribeStatusString": "accept",
                                 "PopupScene": "0"}})
    args, body = seal_push(acct, popup)
    assert application.test_client().post("/wxa/message?" + urlencode(args), data=body).get_data() == b"success"
    assert deliver_notification(_notify(user)) == "sent_subscribe"  # the credit the popup gave
    assert deliver_notification(_notify(user)) == "inbox_only"
    assert standin.calls_to(CUSTOM) == []


# ------------------------------------------------------------------------------------------ EncodingAESKey change


def test_the_mini_program_keeps_its_previous_encoding_aes_key_and_answers_with_it(app, settings):
    """WeChat's FAQ: when the EncodingAESKey changes, keep the previous one, try it when the current one fails and
    answer with the key that worked. The mini-program's message push has an EncodingAESKey of its own."""
    from urllib.parse import urlencode

    from wxapp_backend import create_app
    from wxapp_backend.config import Settings
    from wxapp_backend.wechat.chat import make_push, open_reply, seal_push
    from wxapp_backend.wechat.pipeline import account_from_settings

    old_key, new_key = "B" * 43, "C" * 43
    env = {"APP_ENV": "testing", "WXA_AES_KEY": new_key, "WXA_AES_KEY_PREVIOUS": old_key}
    assert Settings.from_env(env).wxa_aes_key_previous == old_key
    application = create_app(settings.with_overrides(wxa_token="qa10prev", wxa_aes_key=new_key,
                                                     wxa_aes_key_previous=old_key, wxa_appid="wxqa10prev"))
    sender = account_from_settings(settings.with_overrides(wxa_token="qa10prev", wxa_aes_key=old_key,
                                                           wxa_appid="wxqa10prev"), "wxa")
    args, body = seal_push(sender, make_push(sender, "oQa10Prev", text="人工"))
    resp = application.test_client().post("/wxa/message?" + urlencode(args), data=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert open_reply(sender, resp.get_data(as_text=True))["MsgType"] == "transfer_customer_service"


# ------------------------------------------------------------------------------------------ WeChat's faces as text
# WeChat's built-in faces reach the account as text: older ones as codes (“/:strong” is 👍, “/:rose” 🌹), newer ones
# by name (“[捂脸]”, “[Facepalm]” from an English-language phone). They say no more than an emoji does.


@pytest.mark.parametrize("face", ["/:strong", "/:rose/:rose", "[捂脸][捂脸]", "[强]", "[Thumbs Up]"])
def test_a_message_of_wechat_faces_alone_is_no_question_for_the_knowledge_base(app, settings, db, face):
    from sqlalchemy import func, select

    from wxapp_backend.knowledge_store.chat import NO_WORDS
    from wxapp_backend.knowledge_store.models import ChatTurn, UnansweredQuestion

    say = _oa_chat(settings)
    assert say(face) == NO_WORDS  # not “这个问题我还没学会。我已经把它记下来…”
    assert db.scalar(select(func.count()).select_from(ChatTurn)) == 0
    assert db.scalar(select(func.count()).select_from(UnansweredQuestion)) == 0


def test_a_thank_you_with_a_wechat_face_is_a_thank_you(app, settings):
    from wxapp_backend.knowledge_store.chat import THANKS

    assert _oa_chat(settings)("[抱拳]谢谢") == THANKS


def test_wechat_faces_alone_do_not_make_an_appeal_description(app, settings):
    from handlers.appeal_intake import PROMPTS
    from wxapp_backend.appeals.intake import NO_WORDS

    say = _oa_chat(settings)
    say("我要反映")
    assert say("[发怒][发怒][发怒]") == NO_WORDS
    assert say("/:strong/:strong/:strong") == NO_WORDS
    assert PROMPTS["place"] in say("[发怒]楼道里的灯坏了一个星期")


# ------------------------------------------------------------------------------------------ 45011: too fast, retry
# 45011 is WeChat's per-minute frequency limit ("api minute-quota reach limit  mustslower  retry next minute"): the
# call is to be made again later, not given up as a refusal.


def test_a_customer_service_send_refused_as_too_fast_is_tried_again(app_ctx, standin):
    from wxapp_backend.wechat.client import WeChatAPIError
    from wxapp_backend.wechat.jobs import open_window, send_customer_message

    r = app_ctx.extensions["wxapp"].redis
    open_window(r, "wxa", "oQa10Fast", kind="message")
    standin.fail_next(CUSTOM, 45011)
    payload = {"msgtype": "text", "text": {"content": "您好"}}
    with pytest.raises(WeChatAPIError):  # RQ's retry sends it later (on the window slot it took)
        send_customer_message("wxa", "oQa10Fast", payload, "qa10-fast")
    assert send_customer_message("wxa", "oQa10Fast", payload, "qa10-fast") == "sent"


def test_a_notice_fan_out_row_refused_as_too_fast_is_retried_not_failed(app_ctx, make_user, make_staff, standin,
                                                                         run_jobs, db, monkeypatch):
    from wxapp_backend.db import session_scope, utcnow
    from wxapp_backend.notices import broadcast, credits
    from wxapp_backend.notices.broadcast_models import OutboxRow
    from wxapp_backend.notices.kinds import get_kind

    extra = app_ctx.extensions["wxapp"].settings.extra
    for k, v in {"fanout_rate": 10000, "fanout_burst": 100, "fanout_jobs": 1}.items():
        monkeypatch.setitem(extra, k, v)
    user = make_user()
    actor = broadcast.Actor("staff", make_staff(role="staff").id, role="staff")
    with session_scope() as s:
        credits.add_credit(s, user.id, get_kind("notice").template_id)
        nid = broadcast.create_notice(s, actor, {"title": "政策速递", "summary": "新政策发布",
                                                 "audience": {"all": True}}).id
    with session_scope() as s:
        broadcast.publish(s, actor, nid)
    standin.fail_next(SUBSCRIBE, 45011)
    run_jobs()
    db.expire_all()
    row = db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe").one()
    assert (row.status, row.errcode) == ("pending", 45011)
    assert _aware(row.next_attempt_at) - utcnow() > timedelta(seconds=55)  # "retry next minute"
    with session_scope() as s:
        s.get(OutboxRow, row.id).next_attempt_at = utcnow()  # the minute has passed
    broadcast.send_notice(nid)  # the delayed continuation job, run by hand (no scheduler in tests)
    run_jobs()
    db.expire_all()
    assert db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe").one().status == "sent"


def _aware(moment):
    """SQLite gives naive UTC datetimes back."""
    from datetime import UTC

    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ------------------------------------------------------------------------------------------ a late transfer


def test_a_transfer_to_a_person_that_comes_too_late_does_not_claim_to_be_transferring(app, settings, standin,
                                                                                      run_jobs, redis_client):
    """transfer_customer_service exists only as the passive answer: a hand-over worked out after the deadline
    (the push was answered "success") cannot pass the conversation on, so its note must not say it does."""
    import threading
    from urllib.parse import urlencode

    from handlers import Router, Transfer
    from handlers.bot import HUMAN_NOTE
    from wxapp_backend import create_app
    from wxapp_backend.wechat.chat import make_push, seal_push
    from wxapp_backend.wechat.jobs import open_window
    from wxapp_backend.wechat.pipeline import account_from_settings

    release = threading.Event()
    router = Router()

    @router.default
    def slow_handover(ctx):
        release.wait(5)  # held until the push has been answered
        return Transfer(HUMAN_NOTE)

    application = create_app(settings.with_overrides(wechat_token="qa10late", webhook_deadline=0.2,
                                                     extra={"wechat_router": router}))
    acct = account_from_settings(application.extensions["wxapp"].settings, "oa")
    open_window(redis_client, "oa", "oQa10Late", kind="message")
    args, body = seal_push(acct, make_push(acct, "oQa10Late", text="这个问题我要找人工问问"))
    assert application.test_client().post("/wechat?" + urlencode(args), data=body).get_data() == b"success"
    release.set()
    deadline = time.monotonic() + 5
    while not standin.calls_to(CUSTOM) and time.monotonic() < deadline:
        run_jobs()
        time.sleep(0.05)
    (call,) = standin.calls_to(CUSTOM)
    text = call.body["text"]["content"]
    assert "正在为您转接" not in text and "人工" in text  # how to reach a person: reply 人工 again
