"""Fresh-eyes review of blocking a user (twenty-first pass, review2): the shapes of one person that the block missed
and the edges of its Redis copy."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend.audit import AuditLog
from wxapp_backend.auth.linking import link_oa_user
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.wechat.pipeline import BLOCKED_KEY

REASON = "连续发送广告和辱骂内容"


def _row(**where) -> User:
    with session_scope() as s:
        user = s.scalar(select(User).filter_by(**where))
        s.expunge(user)
        return user


@pytest.mark.parametrize("shape", ["chatting", "conflict"])
def test_a_follower_row_that_learns_the_unionid_of_a_blocked_person_is_blocked_too(
        oa_kb, app_ctx, client, standin, make_staff, staff_headers, redis_client, shape):
    """Staff block a mini-program user; the same person then follows the Official Account and floods it. Their new
    follower row learns the unionid from the link job, which does not merge it yet: they are writing (merged only
    after QUIET_SECONDS of quiet, up to QUIET_TRIES times: an hour for a flooder), or their mini-program row follows
    under another openid (never merged). “A person is every row with their unionid”, but set_blocked only covered
    the rows that carried it at the time: the follower row stayed unblocked and its messages were answered. The
    row that learns the unionid now takes the block (an audit row says why), from the next message on; the unblock
    lifts both."""
    person = f"flooder{shape}"
    login = client.post("/api/v1/auth/login", json={"code": f"{person}~1"}).get_json()
    mini_id = login["user"]["id"]
    if shape == "conflict":
        with session_scope() as s:
            s.get(User, mini_id).oa_openid = "oFollowsUnderAnotherOpenid"
    sh = staff_headers(make_staff(role="staff"))
    assert client.post(f"/api/v1/staff/users/{mini_id}/block", json={"reason": REASON}, headers=sh).status_code == 200

    oa = standin.oa_openid_for(person)
    assert say(oa_kb, oa, "你好")  # a row nobody can tie to the person yet: answered (WeChat gives no unionid here)
    follower = _row(oa_openid=oa)
    with oa_kb.app_context():
        assert link_oa_user(follower.id) == ("later" if shape == "chatting" else "conflict")
    assert say(oa_kb, oa, "营业执照丢了怎么办") == ""  # silent from the next message (the cache was dropped)
    assert _row(id=follower.id).blocked
    assert redis_client.hexists(BLOCKED_KEY, f"oa:{oa}")
    with session_scope() as s:
        audit = s.scalar(select(AuditLog).where(AuditLog.action == "user.blocked",
                                                AuditLog.target_id == str(follower.id)))
        assert audit is not None and audit.actor_type == "system" and audit.data["same_person_as"] == mini_id
        assert "屏蔽" in audit.data["reason"]

    assert client.post(f"/api/v1/staff/users/{mini_id}/unblock", json={"reason": "已电话沟通"},
                       headers=sh).status_code == 200
    assert not _row(id=follower.id).blocked and say(oa_kb, oa, "你好")


def test_control_a_follower_of_a_person_not_blocked_stays_unblocked(oa_kb, app_ctx, client, standin):
    """Control: the same path for a person nobody blocked leaves the follower row as it was, and answered."""
    login = client.post("/api/v1/auth/login", json={"code": "quietperson~1"}).get_json()
    assert not login["user"].get("blocked")
    oa = standin.oa_openid_for("quietperson")
    assert say(oa_kb, oa, "你好")
    follower = _row(oa_openid=oa)
    with oa_kb.app_context():
        assert link_oa_user(follower.id) == "later"
    assert not _row(id=follower.id).blocked and say(oa_kb, oa, "你好")


@pytest.mark.parametrize("shape", ["chatting", "conflict"])
def test_a_mini_program_row_of_a_blocked_follower_is_blocked_when_the_link_job_ties_them(
        oa_kb, app_ctx, client, standin, make_staff, console_login, shape):
    """The other way round: staff block a follower who floods the Official Account before WeChat told anyone their
    unionid; the same person then logs into the mini-program (a row of its own: the follower row carries no unionid
    to take over) and files appeals. When the link job ties the two without merging them, the mini-program row is
    blocked too: its writes are the polite 403."""
    from tests.integration.test_block_qa_s21 import _console_post

    person = f"oaflooder{shape}"
    oa = standin.oa_openid_for(person)
    say(oa_kb, oa, "你好")
    follower = _row(oa_openid=oa)
    token = console_login(make_staff(role="staff"))
    assert _console_post(client, token, follower.id, "block").status_code == 302
    login = client.post("/api/v1/auth/login", json={"code": f"{person}~1"}).get_json()
    mini_id, headers = login["user"]["id"], {"Authorization": f"Bearer {login['token']}"}
    assert mini_id != follower.id
    if shape == "conflict":
        with session_scope() as s:
            s.get(User, mini_id).oa_openid = "oFollowsUnderAnotherOpenid2"
    assert say(oa_kb, oa, "还在吗") == ""  # the follower row is blocked: silent, but it counts as writing
    with oa_kb.app_context():
        assert link_oa_user(follower.id) == ("later" if shape == "chatting" else "conflict")
    resp = client.post("/api/v1/chat", json={"text": "你好"}, headers=headers)
    assert resp.status_code == 403 and resp.get_json()["error"] == "account_restricted", resp.get_json()
    assert _row(id=mini_id).blocked
