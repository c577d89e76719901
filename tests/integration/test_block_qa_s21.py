"""QA of blocking a user (twenty-first pass, block): staff block an abusive sender from the users page (or the staff
API) with a reason, and lift it. The chat goes silent for them from the next message, through the real signed
webhook (not a minute later, when the user cache expires), and with the database away too; the mini-program refuses
their writes politely; what they filed stays; every block and unblock is an audit row."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from tests.integration.test_dbaway_qa_s19 import db_away  # noqa: F401  (the database refusing connections)
from wxapp_backend.audit import AuditLog
from wxapp_backend.auth.models import User
from wxapp_backend.console.audit_log import action_label
from wxapp_backend.db import session_scope
from wxapp_backend.wechat import pipeline
from wxapp_backend.wechat.pipeline import BLOCKED_KEY, user_cache_key, user_known_key

REASON = "连续发送广告和辱骂内容"


def _user_of(oa_openid: str) -> User:
    with session_scope() as s:
        return s.scalar(select(User).where(User.oa_openid == oa_openid))


def _blocked(user_id: int) -> bool:
    with session_scope() as s:
        return bool(s.get(User, user_id).blocked)


def _audits(user_id: int) -> list[AuditLog]:
    with session_scope() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.target_type == "users",
                                                     AuditLog.target_id == str(user_id),
                                                     AuditLog.action.in_(["user.blocked", "user.unblocked"]))
                              .order_by(AuditLog.id)))


def _console_post(client, token, user_id, what, reason=REASON, **form):
    return client.post(f"/console/users/{user_id}/{what}", data={"csrf_token": token, "reason": reason, **form})


def _alert(page: str) -> str:
    found = re.search(r'id="decision-error">([^<]*)<', page)
    return found.group(1) if found else ""


# --- the effect, through the signed webhook --------------------------------------------------------------------------

def test_a_block_from_the_console_silences_the_next_message_not_a_minute_later(
        oa_kb, app, client, make_staff, console_login, redis_client):
    """The writer has just been answered, so the webhook's user cache says “id:0” for up to a minute (and user_known
    for 30 days). The block drops / rewrites them after its commit: the very next message gets no answer; the unblock
    brings the answers back at once."""
    openid = "oFloodBot1"
    assert say(oa_kb, openid, "你好")  # answered; the cache now knows them as not blocked
    user = _user_of(openid)
    assert redis_client.get(user_cache_key("oa", openid)) == f"{user.id}:0".encode()
    token = console_login(make_staff(role="staff"))
    resp = _console_post(client, token, user.id, "block")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert "已屏蔽" in client.get(resp.headers["Location"]).get_data(as_text=True)
    assert _blocked(user.id)
    assert say(oa_kb, openid, "你好") == ""  # silence, within the same second
    assert say(oa_kb, openid, "营业执照丢了怎么办") == ""
    assert redis_client.get(user_known_key("oa", openid)) == f"{user.id}:1".encode()
    assert redis_client.hexists(BLOCKED_KEY, f"oa:{openid}") and redis_client.hexists(BLOCKED_KEY, f"user:{user.id}")

    resp = _console_post(client, token, user.id, "unblock", reason="已电话沟通，对方致歉")
    assert resp.status_code == 302
    assert not _blocked(user.id)
    assert say(oa_kb, openid, "你好")  # answered again at once
    assert not redis_client.hexists(BLOCKED_KEY, f"oa:{openid}")
    assert redis_client.get(user_known_key("oa", openid)) == f"{user.id}:0".encode()


def test_control_without_the_redis_step_the_cached_writer_is_still_answered(
        oa_kb, app, client, make_staff, console_login, monkeypatch):
    """Negative control for the test above: with the after-commit Redis step taken out, the committed block is not
    seen by the next message (the warm cache answers for up to a minute), so that test does catch a missing step."""
    from wxapp_backend.auth import blocking

    monkeypatch.setattr(blocking, "mirror_in_redis", lambda people, blocked: None)
    openid = "oFloodBot2"
    assert say(oa_kb, openid, "你好")
    user = _user_of(openid)
    token = console_login(make_staff(role="staff"))
    assert _console_post(client, token, user.id, "block").status_code == 302
    assert _blocked(user.id)
    assert say(oa_kb, openid, "你好")  # still answered from the cache


def test_with_the_database_away_a_blocked_writer_whose_user_known_expired_is_still_refused(
        oa_kb, app, client, make_staff, console_login, redis_client, db_away):
    """touch_user's database-away path served a writer without a user_known entry (expired after 30 days quiet, or a
    Redis without it) as anonymous: a blocked sender was answered again while PostgreSQL restarted. The blocked
    hash outlives user_known. Control: an unblocked writer in the same position is answered."""
    blocked, fine = "oAwayBlocked", "oAwayFine"
    assert say(oa_kb, blocked, "你好") and say(oa_kb, fine, "你好")
    token = console_login(make_staff(role="admin"))
    assert _console_post(client, token, _user_of(blocked).id, "block").status_code == 302
    for openid in (blocked, fine):  # as after a month without a message
        redis_client.delete(user_cache_key("oa", openid), user_known_key("oa", openid))
    with db_away(oa_kb):
        assert say(oa_kb, blocked, "营业执照丢了怎么办") == ""
        assert say(oa_kb, fine, "营业执照丢了怎么办")


def test_a_block_committed_while_a_message_read_the_database_is_not_cached_away(app_ctx, make_user, make_staff,
                                                                                 redis_client, monkeypatch):
    """A message read the user (not blocked) just before a block committed and wrote its cache just after the block
    dropped it: without a check the cache said “not blocked” for another minute. The cache write consults the
    blocked hash (one Lua step), so it says blocked. (The read that came before the commit is stood in for by one
    returning the row as it was: SQLite cannot commit the block from inside the message's own transaction.)"""
    from wxapp_backend.audit import Actor
    from wxapp_backend.auth.blocking import set_blocked

    user = make_user(oa_openid="oRacer", openid="oa:oRacer")
    with session_scope() as s:  # staff block them; the Redis step runs after this commit
        set_blocked(s, Actor("staff", make_staff(role="staff").id, role="staff"), user.id, blocked=True, reason=REASON)
    monkeypatch.setattr(pipeline, "upsert_chat_user", lambda session, **kw: (user.id, False))  # read before it
    assert pipeline.touch_user(redis_client, "oa", "oRacer") == (user.id, True)
    assert redis_client.get(user_cache_key("oa", "oRacer")) == f"{user.id}:1".encode()


def test_control_a_stale_blocked_field_does_not_outvote_the_database(app_ctx, make_user, redis_client):
    """Control for the test above (and self-repair): a field older than the read by more than the margin (an unblock
    whose Redis step was lost) loses to the database's “not blocked” and is removed; a block the hash missed is
    put back when the database says blocked."""
    import time

    user = make_user(oa_openid="oStale", openid="oa:oStale")
    old = int(time.time() * 1000) - pipeline.BLOCK_READ_MARGIN_MS - 60_000
    redis_client.hset(BLOCKED_KEY, "oa:oStale", old)
    assert pipeline.touch_user(redis_client, "oa", "oStale") == (user.id, False)
    assert not redis_client.hexists(BLOCKED_KEY, "oa:oStale")

    missed = make_user(oa_openid="oMissed", openid="oa:oMissed", blocked=True)
    assert pipeline.touch_user(redis_client, "oa", "oMissed") == (missed.id, True)
    assert redis_client.hexists(BLOCKED_KEY, "oa:oMissed")


def test_the_other_row_of_the_same_person_is_blocked_and_unblocked_with_it(
        oa_kb, app, client, make_user, make_staff, staff_headers, redis_client):
    """A follower's Official Account row not yet merged into their mini-program row (same unionid): blocking the
    mini-program user silences the Official Account chat too; each row gets its audit row; unblocking lifts both."""
    openid = "oSamePerson"
    assert say(oa_kb, openid, "你好")
    follower = _user_of(openid)
    with session_scope() as s:
        s.get(User, follower.id).unionid = "uSamePerson"
    mini = make_user(openid="wxSamePerson", unionid="uSamePerson", nickname="小王")
    headers = staff_headers(make_staff(role="staff"))
    resp = client.post(f"/api/v1/staff/users/{mini.id}/block", json={"reason": REASON}, headers=headers)
    assert resp.status_code == 200 and resp.get_json()["blocked"] is True, resp.get_json()
    assert _blocked(follower.id) and _blocked(mini.id)
    assert say(oa_kb, openid, "你好") == ""
    assert redis_client.hexists(BLOCKED_KEY, "wxa:wxSamePerson")
    assert [a.data.get("same_person_as") for a in _audits(follower.id)] == [mini.id]
    resp = client.post(f"/api/v1/staff/users/{mini.id}/unblock", json={"reason": "误操作"}, headers=headers)
    assert resp.status_code == 200 and resp.get_json()["blocked"] is False
    assert not _blocked(follower.id) and say(oa_kb, openid, "你好")


# --- the console: roles, CSRF, reason, audit, list ---------------------------------------------------------------------

def test_block_needs_staff_a_department_gets_403(app, client, make_user, make_staff, console_login, staff_headers):
    user = make_user(nickname="刷屏者")
    token = console_login(make_staff(role="dept"))
    assert _console_post(client, token, user.id, "block").status_code == 403
    resp = client.post(f"/api/v1/staff/users/{user.id}/block", json={"reason": REASON},
                       headers=staff_headers(make_staff(role="dept")))
    assert resp.status_code == 403 and resp.get_json()["error"] == "forbidden"
    assert not _blocked(user.id) and _audits(user.id) == []


def test_block_without_the_csrf_token_is_refused(app, client, make_user, make_staff, console_login):
    user = make_user()
    console_login(make_staff(role="staff"))
    resp = client.post(f"/console/users/{user.id}/block", data={"reason": REASON})
    assert resp.status_code == 400
    assert not _blocked(user.id)


def test_block_needs_a_reason_said_in_chinese_on_the_list(app, client, make_user, make_staff, console_login):
    user = make_user(nickname="无理由")
    token = console_login(make_staff(role="staff"))
    resp = _console_post(client, token, user.id, "block", reason=" ")
    assert resp.status_code == 422
    message = _alert(resp.get_data(as_text=True))
    assert "屏蔽原因" in message, message
    resp = _console_post(client, token, user.id, "block", reason="刷")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "屏蔽原因" in _alert(page) and 'value="刷"' in page  # the typed reason stays
    resp = client.post(f"/api/v1/staff/users/{user.id}/block", json={}, headers={"X-CSRF-Token": token})
    assert resp.status_code == 401  # the staff API takes bearer tokens only, not the console's cookie
    assert not _blocked(user.id) and _audits(user.id) == []


def test_block_and_unblock_write_audit_rows_with_the_reason_and_chinese_labels(
        app, client, make_user, make_staff, console_login):
    user = make_user(nickname="审计对象")
    staff = make_staff(role="staff")
    token = console_login(staff)
    assert _console_post(client, token, user.id, "block").status_code == 302
    assert _console_post(client, token, user.id, "unblock", reason="已核实是误会").status_code == 302
    rows = _audits(user.id)
    assert [(r.action, r.actor_type, r.actor_id, r.data["reason"]) for r in rows] == [
        ("user.blocked", "staff", str(staff.id), REASON), ("user.unblocked", "staff", str(staff.id), "已核实是误会")]
    assert action_label("user.blocked") == "屏蔽用户" and action_label("user.unblocked") == "解除屏蔽用户"


def test_a_second_block_from_a_stale_page_is_a_409_on_the_list(app, client, make_user, make_staff, console_login):
    user = make_user(nickname="重复点击")
    token = console_login(make_staff(role="staff"))
    assert _console_post(client, token, user.id, "block").status_code == 302
    resp = _console_post(client, token, user.id, "block", reason="同事也来屏蔽")
    assert resp.status_code == 409
    page = resp.get_data(as_text=True)
    assert "已经被屏蔽" in _alert(page) and f'id="unblock-{user.id}"' in page  # the list as it is now
    assert len(_audits(user.id)) == 1
    resp = _console_post(client, token, make_user().id, "unblock")
    assert resp.status_code == 409 and "没有被屏蔽" in _alert(resp.get_data(as_text=True))


def test_the_users_list_shows_who_is_blocked_and_filters_them(app, client, make_user, make_staff, console_login,
                                                              staff_headers):
    bad = make_user(nickname="广告号")
    good = make_user(nickname="好用户")
    token = console_login(make_staff(role="staff"))
    assert _console_post(client, token, bad.id, "block").status_code == 302
    page = client.get("/console/users").get_data(as_text=True)
    assert f'id="blocked-{bad.id}"' in page and REASON in page and f'id="blocked-{good.id}"' not in page
    assert f'id="unblock-{bad.id}"' in page and f'id="block-{good.id}"' in page and 'data-confirm="确定屏蔽' in page
    only = client.get("/console/users?blocked=1").get_data(as_text=True)
    assert "广告号" in only and "好用户" not in only and 'class="badge ok" id="filter-blocked"' in only
    body = client.get("/api/v1/staff/users?blocked=true", headers=staff_headers(make_staff(role="staff"))).get_json()
    assert [(u["id"], u["blocked"]) for u in body["items"]] == [(bad.id, True)]


# --- what the blocked user meets in the mini-program ------------------------------------------------------------------

def test_a_blocked_user_cannot_file_or_chat_but_keeps_and_can_read_what_they_filed(
        app, client, make_user, make_staff, user_token, staff_headers):
    """Writes that reach staff or the public (a new appeal, the chat, a binding request, a profile) are a polite 403
    account_restricted that names no mechanism; their appeal filed before is still theirs to read and staff's to
    handle; unblocked, they file again."""
    user = make_user(nickname="投诉人")
    uh = user_token(user)
    body = {"content": "我们公司门口的路灯坏了一个月了，请帮忙", "contact_name": "张三", "contact_phone": "13800138000"}
    first = client.post("/api/v1/appeals", json=body, headers=uh)
    assert first.status_code == 201, first.get_json()
    sh = staff_headers(make_staff(role="staff"))
    assert client.post(f"/api/v1/staff/users/{user.id}/block", json={"reason": REASON}, headers=sh).status_code == 200

    for method, path, payload in (
            ("post", "/api/v1/appeals", {**body, "content": "再来一条广告广告广告广告"}),
            ("post", "/api/v1/chat", {"text": "你好"}),
            ("post", "/api/v1/kb/feedback", {"entry_id": "startup-license-lost", "useful": False}),
            ("patch", "/api/v1/me", {"nickname": "骂人的话"}),
            ("post", "/api/v1/me/enterprise", {"name": "某公司", "credit_code": "91310105MA1FL0XX0X"})):
        resp = getattr(client, method)(path, json=payload, headers=uh)
        out = resp.get_json()
        assert resp.status_code == 403 and out["error"] == "account_restricted", (path, out)
        assert "联系营商服务中心" in out["message"] and "屏蔽" not in out["message"], out
    mine = client.get("/api/v1/appeals", headers=uh).get_json()
    assert [a["id"] for a in mine["items"]] == [first.get_json()["id"]]
    assert client.get(f"/api/v1/staff/appeals/{first.get_json()['id']}", headers=sh).status_code == 200

    assert client.post(f"/api/v1/staff/users/{user.id}/unblock", json={"reason": "已沟通"}, headers=sh).status_code == 200
    assert client.post("/api/v1/chat", json={"text": "你好"}, headers=uh).status_code == 200


def test_registration_refuses_a_user_blocked_from_the_console(app, client, make_user, make_staff, console_login,
                                                              make_activity, user_token):
    user = make_user()
    activity = make_activity()
    token = console_login(make_staff(role="staff"))
    assert _console_post(client, token, user.id, "block").status_code == 302
    resp = client.post(f"/api/v1/activities/{activity.id}/registrations", json={}, headers=user_token(user))
    assert resp.status_code == 403 and "联系营商服务中心" in resp.get_json()["message"]


@pytest.mark.parametrize("what", ["block", "unblock"])
def test_an_unknown_user_is_a_404(app, client, make_staff, console_login, what):
    token = console_login(make_staff(role="staff"))
    assert _console_post(client, token, 999999, what).status_code == 404
