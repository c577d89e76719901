"""A staff member links their own WeChat as their test recipient by sending a code from it.

Typing a user number was the only way, and a typo sent test notices and 办不成事 alerts to a stranger. The
console now gives a 6-digit code (10 minutes, single use); “绑定 <code>” sent from one's own WeChat (Official
Account or mini-program chat) links that user, audited. Wrong codes are limited per user.
"""

from __future__ import annotations

import re

from sqlalchemy import select

from wxapp_backend.audit import AuditLog
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.notices import broadcast
from wxapp_backend.notices.broadcast_models import StaffTestRecipient
from wxapp_backend.wechat.chat import run_chat


def _code_from_console(client, csrf) -> str:
    resp = client.post("/console/notices/link-code", data={"csrf_token": csrf})
    assert resp.status_code == 302
    page = client.get("/console/notices").get_data(as_text=True)
    m = re.search(r"发送：绑定 (\d{6})", page)
    assert m, page
    return m.group(1)


def _say(app, standin, openid: str, text: str) -> str:
    out: list[str] = []
    run_chat(app, "oa", openid, lines=[text], echo=out.append, standin=standin)
    return "\n".join(line for line in out if line.startswith("店小二>"))


def _linked(db, staff) -> int | None:
    db.expire_all()
    row = db.get(StaffTestRecipient, staff.id)
    return row.user_id if row else None


def test_the_code_from_the_console_links_the_wechat_that_sends_it(app, client, standin, db, make_staff,
                                                                   console_login):
    staff = make_staff(role="staff")
    csrf = console_login(staff)
    code = _code_from_console(client, csrf)
    reply = _say(app, standin, "o-staff-phone", f"绑定 {code}")
    assert "绑定成功" in reply and staff.username in reply
    user_id = db.scalar(select(User.id).where(User.oa_openid == "o-staff-phone"))
    assert user_id is not None and _linked(db, staff) == user_id
    entry = db.scalars(select(AuditLog).where(AuditLog.action == "notice.test_recipient_set")).one()
    assert entry.actor_id == str(staff.id) and entry.data["user_id"] == user_id
    # Single use: the same code again (or from someone else) links nobody.
    assert "不对或已过期" in _say(app, standin, "o-someone-else", f"绑定{code}")
    assert _linked(db, staff) == user_id


def test_a_new_code_ends_the_old_one(app, db, make_staff, make_user):
    staff = make_staff(role="staff")
    r = app.extensions["wxapp"].redis
    old = broadcast.issue_link_code(r, staff.id)
    new = broadcast.issue_link_code(r, staff.id)
    user = make_user()
    with session_scope() as s:
        assert broadcast.redeem_link_code(s, r, old, user.id) == "绑定码不对或已过期，请在工作台“通知推送”页重新生成。"
    with session_scope() as s:
        assert broadcast.redeem_link_code(s, r, new, user.id).id == staff.id
    assert _linked(db, staff) == user.id


def test_wrong_codes_are_limited_per_user(app, db, make_staff, make_user):
    staff = make_staff(role="staff")
    r = app.extensions["wxapp"].redis
    user = make_user()
    for _ in range(broadcast.LINK_TRIES):
        with session_scope() as s:
            assert "不对或已过期" in broadcast.redeem_link_code(s, r, "000000", user.id)
    good = broadcast.issue_link_code(r, staff.id)
    with session_scope() as s:
        assert "次数太多" in broadcast.redeem_link_code(s, r, good, user.id)
    assert _linked(db, staff) is None
    other = make_user()  # the limit is the sender's, the code still works for its owner's phone
    with session_scope() as s:
        assert broadcast.redeem_link_code(s, r, good, other.id).id == staff.id


def test_a_deactivated_staff_members_code_links_nobody(app, db, make_staff, make_user):
    from wxapp_backend.auth.models import StaffUser

    staff = make_staff(role="staff")
    r = app.extensions["wxapp"].redis
    code = broadcast.issue_link_code(r, staff.id)
    with session_scope() as s:
        s.get(StaffUser, staff.id).active = False
    with session_scope() as s:
        assert isinstance(broadcast.redeem_link_code(s, r, code, make_user().id), str)
    assert _linked(db, staff) is None


def test_dept_accounts_cannot_ask_for_a_code(client, make_staff, console_login):
    csrf = console_login(make_staff(role="dept", department="税务所"))
    assert client.post("/console/notices/link-code", data={"csrf_token": csrf}).status_code == 403
