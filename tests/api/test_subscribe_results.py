"""Subscribe-message results from the mini-program and from WeChat's events: the credit ledger."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from wxapp_backend.db import session_scope
from wxapp_backend.notices import credits
from wxapp_backend.notices.models import SubscribeCredit

APPEAL = "PLACEHOLDER-appeal-progress"
ACTIVITY = "PLACEHOLDER-activity-reminder"
URL = "/api/v1/me/subscribe-results"


def _post(client, headers, results):
    return client.post(URL, json={"results": results}, headers=headers)


def _template(body, template_id):
    return next(t for t in body["templates"] if t["template_id"] == template_id)


def _credit(db, user, template_id=APPEAL):
    db.expire_all()
    row = db.scalar(select(SubscribeCredit).where(SubscribeCredit.user_id == user.id,
                                                  SubscribeCredit.template_id == template_id))
    return row


def test_accept_adds_one_credit_per_tap(client, make_user, user_token, db):
    user = make_user()
    headers = user_token(user)
    resp = _post(client, headers, {APPEAL: "accept", ACTIVITY: "accept"})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["results"] == {APPEAL: "added", ACTIVITY: "added"}
    assert _template(body, APPEAL)["credits"] == 1
    assert set(_template(body, APPEAL)["kinds"]) == {"appeal_accepted", "appeal_needs_info", "appeal_resolved",
                                                     "appeal_closed", "appeal_escalated", "appeal_merged",
                                                     "appeal_split", "appeal_extended",
                                                     "appeal_staff_alert"}
    _post(client, headers, {APPEAL: "accept"})
    assert _credit(db, user).credits == 2
    view = client.get("/api/v1/me/subscribe-credits", headers=headers).get_json()
    kinds = {k["kind"]: k for k in view["kinds"]}
    assert kinds["appeal_resolved"]["credits"] == 2 and kinds["appeal_resolved"]["subscribed"] is True
    assert kinds["notice"]["credits"] == 0 and kinds["notice"]["subscribed"] is False


def test_reject_and_ban_zero_the_credit_filter_changes_nothing(client, make_user, user_token, db):
    user = make_user()
    headers = user_token(user)
    _post(client, headers, {APPEAL: "accept", ACTIVITY: "accept"})
    _post(client, headers, {APPEAL: "accept"})
    body = _post(client, headers, {APPEAL: "filter"}).get_json()
    assert body["results"] == {APPEAL: "unchanged"} and _credit(db, user).credits == 2
    body = _post(client, headers, {APPEAL: "reject"}).get_json()
    assert body["results"] == {APPEAL: "zeroed"} and _credit(db, user).credits == 0
    body = _post(client, headers, {ACTIVITY: "ban"}).get_json()
    assert _template(body, ACTIVITY)["banned"] is True
    assert _credit(db, user, ACTIVITY).credits == 0
    with session_scope() as s:
        assert not credits.claim(s, user.id, ACTIVITY)


def test_unknown_templates_and_errmsg_are_ignored(client, make_user, user_token, db):
    user = make_user()
    body = _post(client, user_token(user), {"errMsg": "requestSubscribeMessage:ok", "SOMEONE-ELSES": "accept",
                                            APPEAL: "accept"}).get_json()
    assert body["results"] == {"SOMEONE-ELSES": "ignored", APPEAL: "added"}
    assert _credit(db, user, "SOMEONE-ELSES") is None


@pytest.mark.parametrize("payload", [
    {},
    {"results": []},
    {"results": "accept"},
    {"results": {}},
    {"results": {"errMsg": "requestSubscribeMessage:ok"}},
    {"results": {f"T{i}": "accept" for i in range(11)}},
    {"results": {"x" * 65: "accept"}},
    {"results": {APPEAL: "maybe"}},
    {"results": {APPEAL: 1}},
    {"results": {"  ": "accept"}},
])
def test_bad_results_are_422_in_chinese(client, make_user, user_token, payload):
    resp = client.post(URL, json=payload, headers=user_token(make_user()))
    assert resp.status_code == 422, resp.get_json()
    body = resp.get_json()
    assert body["error"] == "validation_error" and "results" in body["fields"]
    assert any("\u4e00" <= c <= "\u9fff" for c in body["message"])


def test_login_is_required(client):
    assert client.post(URL, json={"results": {APPEAL: "accept"}}).status_code == 401
    assert client.get("/api/v1/me/subscribe-credits").status_code == 401


def test_ten_entries_are_allowed(client, make_user, user_token):
    results = {f"T{i}": "accept" for i in range(9)} | {APPEAL: "accept"}
    assert _post(client, user_token(make_user()), results).status_code == 200


# ------------------------------------------------------------------------------------------ events

def test_popup_event_adds_credits_one_item_or_many(app_ctx, make_user, db):
    user = make_user()
    with session_scope() as s:
        # The event's List is an object for one template...
        assert credits.apply_popup_event(s, user.openid, {"TemplateId": APPEAL, "SubscribeStatusString": "accept",
                                                          "PopupScene": "0"}) == 1
    with session_scope() as s:
        # ... and an array for several.
        n = credits.apply_popup_event(s, user.openid, [
            {"TemplateId": APPEAL, "SubscribeStatusString": "accept"},
            {"TemplateId": ACTIVITY, "SubscribeStatusString": "reject"},
            {"TemplateId": "UNKNOWN", "SubscribeStatusString": "accept"},
            "garbage",
        ])
    assert n == 2
    assert _credit(db, user).credits == 2
    with session_scope() as s:
        assert credits.apply_popup_event(s, "o-nobody", [{"TemplateId": APPEAL,
                                                          "SubscribeStatusString": "accept"}]) == 0


def test_the_same_tap_reported_by_both_sides_counts_once(client, make_user, user_token, db):
    user = make_user()
    headers = user_token(user)
    _post(client, headers, {APPEAL: "accept"})
    _post(client, headers, {APPEAL: "accept"})
    with session_scope() as s:
        credits.apply_popup_event(s, user.openid, [{"TemplateId": APPEAL, "SubscribeStatusString": "accept"}])
        credits.apply_popup_event(s, user.openid, [{"TemplateId": APPEAL, "SubscribeStatusString": "accept"}])
    assert _credit(db, user).credits == 2  # two taps, each reported twice
    with session_scope() as s:  # a third tap only WeChat reported
        credits.apply_popup_event(s, user.openid, [{"TemplateId": APPEAL, "SubscribeStatusString": "accept"}])
    body = _post(client, headers, {APPEAL: "accept"}).get_json()  # ... and its late client report
    assert body["results"] == {APPEAL: "matched"}
    assert _credit(db, user).credits == 3


def test_change_event_reject_zeroes_accept_restores_only_long_term(app_ctx, make_user, db):
    user = make_user()
    with session_scope() as s:
        credits.add_credit(s, user.id, APPEAL)
        credits.add_credit(s, user.id, APPEAL)
    with session_scope() as s:
        assert credits.apply_change_event(s, user.openid, {"TemplateId": APPEAL,
                                                           "SubscribeStatusString": "reject"}) == 1
    assert _credit(db, user).credits == 0
    with session_scope() as s:  # a one-time template switched back on gives no credit by itself
        assert credits.apply_change_event(s, user.openid, [{"TemplateId": APPEAL,
                                                            "SubscribeStatusString": "accept"}]) == 0
    assert _credit(db, user).credits == 0


def test_43101_style_zero_keeps_the_row(app_ctx, make_user, db):
    user = make_user()
    with session_scope() as s:
        credits.add_credit(s, user.id, APPEAL)
        credits.zero_credits(s, user.id, APPEAL)
    row = _credit(db, user)
    assert row.credits == 0 and row.banned is False


def test_change_event_accept_restores_a_long_term_template(app_ctx, make_user, db, monkeypatch):
    monkeypatch.setattr(credits, "long_term_templates", lambda: {"LONG-TERM": True})
    user = make_user()
    with session_scope() as s:
        assert credits.apply_change_event(s, user.openid, {"TemplateId": "LONG-TERM",
                                                           "SubscribeStatusString": "accept"}) == 1
    row = _credit(db, user, "LONG-TERM")
    assert row.long_term is True
    with session_scope() as s:
        assert credits.claim(s, user.id, "LONG-TERM") and credits.claim(s, user.id, "LONG-TERM")
    with session_scope() as s:
        credits.apply_change_event(s, user.openid, {"TemplateId": "LONG-TERM", "SubscribeStatusString": "reject"})
    with session_scope() as s:
        assert not credits.claim(s, user.id, "LONG-TERM")


def test_events_as_the_webhook_parses_them(app_ctx, make_user, db):
    """The webhook hands over wechat.messages' normalised results; XML (one item) and JSON (several)."""
    from wxapp_backend.wechat.messages import normalise, parse_body

    user = make_user()
    xml = (f"<xml><ToUserName>gh_1</ToUserName><FromUserName>{user.openid}</FromUserName>"
           "<CreateTime>1714112445</CreateTime><MsgType>event</MsgType><Event>subscribe_msg_popup_event</Event>"
           f"<SubscribeMsgPopupEvent><List><TemplateId>{APPEAL}</TemplateId>"
           "<SubscribeStatusString>accept</SubscribeStatusString><PopupScene>0</PopupScene></List>"
           "</SubscribeMsgPopupEvent></xml>")
    msg = normalise(parse_body(xml, "xml"), "wxa")
    with session_scope() as s:
        assert credits.apply_popup_event(s, msg.source, msg.subscribe_results) == 1
    assert _credit(db, user).credits == 1
    import json

    body = json.dumps({"ToUserName": "gh_1", "FromUserName": user.openid, "CreateTime": 1714112446,
                       "MsgType": "event", "Event": "subscribe_msg_change_event",
                       "List": [{"TemplateId": APPEAL, "SubscribeStatusString": "reject"},
                                {"TemplateId": ACTIVITY, "SubscribeStatusString": "reject"}]})
    msg = normalise(parse_body(body, "json"), "wxa")
    with session_scope() as s:
        assert credits.apply_change_event(s, msg.source, msg.subscribe_results) == 2
    assert _credit(db, user).credits == 0


def test_a_template_id_with_spaces_around_it_is_still_ours(client, make_user, user_token, db):
    """“ PLACEHOLDER-appeal-progress ” (an id pasted into the front-end's config with a space) was answered “ignored”
    and no credit was kept: the user had said yes and would never be told. The id is read without the spaces."""
    user = make_user()
    resp = _post(client, user_token(user), {f" {APPEAL} ": "accept"})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["results"] == {APPEAL: "added"}
    assert _credit(db, user).credits == 1
