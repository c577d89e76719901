"""Mini-program JSON pushes can say what XML cannot: a lone surrogate and NUL. A lone surrogate in FromUserName
was a 500 (the Redis key cannot be encoded); NUL in Content reached the stored chat log (PostgreSQL refuses it).
Both are dropped, as an XML push could not have carried them."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from wxapp_backend import create_app
from wxapp_backend.wechat.chat import seal_push
from wxapp_backend.wechat.messages import parse_json
from wxapp_backend.wechat.pipeline import account_from_settings

WXA = dict(wxa_token="wxajsontext", wxa_msg_format="json", wxa_appid="wxajsontextappid")


def _push(application, doc_text: str):
    acct = account_from_settings(application.extensions["wxapp"].settings, "wxa")
    args, body = seal_push(acct, doc_text)
    return application.test_client().post("/wxa/message?" + urlencode(args), data=body)


def test_lone_surrogates_and_nul_are_dropped():
    assert parse_json('{"FromUserName": "o\\ud800x", "MsgType": "text"}')["FromUserName"] == "ox"
    doc = parse_json('{"FromUserName": "oUser", "MsgType": "text", "Content": "你\\u0000好\\udfff", "x": ["a\\u0000"]}')
    assert doc["Content"] == "你好" and doc["x"] == ["a"]
    assert parse_json('{"Content": "\\\\u0000 typed as text"}')["Content"] == "\\u0000 typed as text"
    assert parse_json('{"Content": "😀 \\ud83d\\ude00"}')["Content"] == "😀 😀"  # a surrogate pair is one emoji


def test_the_webhook_answers_them_without_a_server_error(app, settings):
    application = create_app(settings.with_overrides(**WXA))
    base = {"ToUserName": "gh_x", "CreateTime": 1700000000, "MsgType": "text"}
    for i, doc in enumerate(({**base, "FromUserName": "o\ud800", "Content": "你好"},
                             {**base, "FromUserName": "oNulUser", "Content": "你\u0000好"})):
        resp = _push(application, json.dumps({**doc, "MsgId": i + 1}))
        assert resp.status_code == 200, resp.get_data(as_text=True)


def test_a_blocked_users_refusal_of_subscribe_messages_still_counts(app, settings, make_user, db):
    """The blocklist dropped every push of a blocked user before the router, their subscribe_msg_change_event
    (reject) too, so their credits stayed and subscribe messages went on being sent to someone who had refused."""
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.kinds import get_kind
    from wxapp_backend.notices.models import SubscribeCredit

    application = create_app(settings.with_overrides(**WXA))
    template = get_kind("appeal_accepted").template_id
    user = make_user(blocked=True)
    from wxapp_backend.db import session_scope

    with session_scope() as s:
        credits.add_credit(s, user.id, template)
    push = {"ToUserName": "gh_x", "FromUserName": user.openid, "CreateTime": 1714112446, "MsgType": "event",
            "Event": "subscribe_msg_change_event", "List": [{"TemplateId": template, "SubscribeStatusString": "reject"}]}
    assert _push(application, json.dumps(push)).status_code == 200
    db.expire_all()
    assert db.query(SubscribeCredit).filter_by(user_id=user.id, template_id=template).one().credits == 0
