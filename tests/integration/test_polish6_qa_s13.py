"""Small polish, QA session 13 (polish 6): string booleans in an activity's registration questions, a chat reply
made only of characters XML forbids, and the token fetch's 45009 alert once a day."""

from __future__ import annotations

import logging
import time
import types
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from handlers.replies import Many, Text
from wxapp_backend.db import session_scope
from wxapp_backend.wechat import tokens as tokens_module
from wxapp_backend.wechat.client import WeChatAPIError, build_api
from wxapp_backend.wechat.pipeline import solid

# --- 1. "required": "false" in a registration question -------------------------------------------------------


def _activity_body(**kw):
    start = datetime.now(UTC) + timedelta(days=2)
    return {"category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂", "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=2)).isoformat(), "capacity": 2, **kw}


@pytest.mark.parametrize("setting, value", [
    ("required", "false"), ("required", 0), ("required", "true"), ("integer", "true"), ("integer", 1)])
def test_a_question_setting_that_is_not_a_json_boolean_is_refused(client, staff, staff_headers, setting, value):
    """{"required": "false"} was read as true (a non-empty string): the question staff meant optional blocked every
    registration without an answer. required and integer take true or false only; else a 422 naming the question
    and the setting."""
    from wxapp_backend.activities.models import Activity

    question = {"key": "guests", "label": "随行人数", "type": "number", setting: value}
    h = staff_headers(staff)
    resp = client.post("/api/v1/staff/activities", json=_activity_body(questions=[question]), headers=h)
    assert resp.status_code == 422, resp.get_json()
    says = resp.get_json()["fields"]["questions"]
    assert "随行人数" in says and setting in says and "true" in says and "false" in says, says
    with session_scope() as s:
        assert s.scalars(select(Activity)).all() == []

    created = client.post("/api/v1/staff/activities", json=_activity_body(), headers=h)
    aid = created.get_json()["id"]
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"questions": [question]}, headers=h)
    assert resp.status_code == 422 and setting in resp.get_json()["fields"]["questions"], resp.get_json()
    # real booleans are still welcome
    ok = {"key": "guests", "label": "随行人数", "type": "number", "required": False, "integer": True}
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"questions": [ok]}, headers=h)
    assert resp.status_code == 200, resp.get_json()


# --- 2. a reply text of nothing but characters XML forbids ---------------------------------------------------


@pytest.mark.parametrize("text", ["\x00", "\x00\x01\x02", " \x00 \ufffe ", "\ud800"])
def test_a_reply_text_that_cleans_to_nothing_is_no_reply(text):
    """The renderer drops the characters XML forbids, so such a text rendered as an empty passive reply, which
    WeChat does not take; it is no reply ("success"), like a blank one."""
    assert solid(Text(text)) is None
    assert solid(Many((Text(text), Text("您好")))) == Text("您好")


def test_a_reply_with_a_forbidden_character_and_words_is_kept():
    assert solid(Text("\x00您好")) == Text("\x00您好")
    assert solid(Text("您好\x00")) == Text("您好\x00")


# --- 3. 45009 on the token fetch alerts a person once a day --------------------------------------------------


def _alerts(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "alert", False)]


def test_the_token_fetch_45009_alerts_once_per_account_per_wechat_day(app_ctx, standin, monkeypatch, caplog):
    """Every token fetch WeChat answered 45009 raised its own alert, as often as something asked for a token (every
    ERROR_TTL seconds at most) until midnight. Now the first of the China day alerts; later ones are warnings."""
    state = app_ctx.extensions["wxapp"]
    wxa = build_api("wxa", state.settings, state.redis, state.wechat_http, sleep=lambda s: None)
    with caplog.at_level(logging.INFO, logger="wxapp_backend.wechat.tokens"):
        for _ in range(3):
            standin.fail_next("/cgi-bin/stable_token", 45009)
            state.redis.delete(wxa.tokens.error_key)  # the remembered failure over: the next caller fetches again
            with pytest.raises(WeChatAPIError) as info:
                wxa.access_token()
            assert info.value.errcode == 45009
    quota_logs = [r for r in caplog.records if "45009" in r.getMessage()]
    assert [r.levelno for r in quota_logs] == [logging.ERROR] + [logging.WARNING] * 2
    assert len(_alerts(caplog)) == 1
    # the other account has its own quota, and its own alert
    oa = build_api("oa", state.settings, state.redis, state.wechat_http, sleep=lambda s: None)
    assert oa.tokens.appid != wxa.tokens.appid
    standin.fail_next("/cgi-bin/stable_token", 45009)
    with caplog.at_level(logging.INFO, logger="wxapp_backend.wechat.tokens"):
        with pytest.raises(WeChatAPIError):
            oa.access_token()
    assert [r.appid for r in _alerts(caplog)] == [wxa.tokens.appid, oa.tokens.appid]
    # the next China day a used-up quota is news again
    now = time.time()
    tomorrow = now + 86400 - (now + tokens_module.CHINA_OFFSET) % 86400 + 60
    fake = types.SimpleNamespace(time=lambda: tomorrow + (time.time() - now), perf_counter=time.perf_counter,
                                 sleep=time.sleep, monotonic=time.monotonic)
    monkeypatch.setattr(tokens_module, "time", fake)
    before = len(_alerts(caplog))
    standin.fail_next("/cgi-bin/stable_token", 45009)
    state.redis.delete(wxa.tokens.error_key)
    with caplog.at_level(logging.INFO, logger="wxapp_backend.wechat.tokens"):
        with pytest.raises(WeChatAPIError):
            wxa.access_token()
    assert len(_alerts(caplog)) == before + 1


# --- 4. Idempotency-Key on creating a notice -----------------------------------------------------------------


def test_a_retried_notice_create_with_the_same_key_makes_one_draft(client, make_staff, staff_headers):
    """POST /api/v1/staff/notices took no Idempotency-Key: a client that retried after a lost answer made a second
    draft, which someone then had to spot and delete (or published twice). The same key and body now answer the
    first draft (200), another body is a 409 idempotency_key_reused, and each staff member's keys are their own."""
    from wxapp_backend.audit import AuditLog
    from wxapp_backend.notices.broadcast_models import Notice

    alice, bob = make_staff(role="staff"), make_staff(role="staff")
    body = {"title": "政策通知", "summary": "稳岗补贴申报开始了", "audience": {"all": True}}
    h = {**staff_headers(alice), "Idempotency-Key": "notice-1"}
    first = client.post("/api/v1/staff/notices", json=body, headers=h)
    assert first.status_code == 201, first.get_json()
    again = client.post("/api/v1/staff/notices", json=body, headers=h)
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"], again.get_json()
    other = client.post("/api/v1/staff/notices", json={**body, "title": "另一条通知"}, headers=h)
    assert other.status_code == 409 and other.get_json()["error"] == "idempotency_key_reused", other.get_json()
    assert other.get_json()["fields"]["notice_id"] == str(first.get_json()["id"])
    # another staff member's key of the same spelling is theirs
    mine = client.post("/api/v1/staff/notices", json=body, headers={**staff_headers(bob), "Idempotency-Key": "notice-1"})
    assert mine.status_code == 201 and mine.get_json()["id"] != first.get_json()["id"]
    # without a key every create is a new draft, as before
    assert client.post("/api/v1/staff/notices", json=body, headers=staff_headers(alice)).status_code == 201
    bad = client.post("/api/v1/staff/notices", json=body, headers={**staff_headers(alice), "Idempotency-Key": "bad key!"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "bad_idempotency_key"
    with session_scope() as s:
        assert len(s.scalars(select(Notice)).all()) == 3
        assert len(s.scalars(select(AuditLog).where(AuditLog.action == "notice.created")).all()) == 3
