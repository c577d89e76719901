"""QA session 16 (polish 8) on authentication: each test shows a defect that was found and fixed."""

from __future__ import annotations

import json
import re

from sqlalchemy import select

from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope


def _rows(action: str) -> list[AuditLog]:
    with session_scope() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


# --- 1. a token of the other kind -------------------------------------------------------------------------


def test_a_staff_token_on_a_user_endpoint_says_it_is_a_staff_credential(client, make_staff, staff_headers):
    """A staff script sending its token to /api/v1/me read “登录已过期，请重新进入小程序”: it had just logged in, and
    has no mini-program. The answer is still 401 invalid_token, and says what the token is and whom the endpoint
    is for."""
    h = staff_headers(make_staff(role="staff"))
    for method, path in (("get", "/api/v1/me"), ("patch", "/api/v1/me"), ("post", "/api/v1/auth/logout")):
        resp = getattr(client, method)(path, headers=h, json={"nickname": "小王"})
        body = resp.get_json()
        assert resp.status_code == 401 and body["error"] == "invalid_token", (path, body)
        assert "工作人员" in body["message"] and "小程序用户" in body["message"], (path, body)
        assert "过期" not in body["message"]
    # a token of neither kind is still an expired login
    gone = client.get("/api/v1/me", headers={"Authorization": "Bearer not-a-token"}).get_json()
    assert gone["message"] == "登录已过期，请重新进入小程序。"


def test_a_user_token_on_a_staff_endpoint_says_it_is_a_mini_program_login(client, make_user, user_token):
    h = user_token(make_user())
    for path in ("/api/v1/staff/enterprises", "/api/v1/staff/grids"):
        resp = client.get(path, headers=h)
        body = resp.get_json()
        assert resp.status_code == 401 and body["error"] == "invalid_token", (path, body)
        assert "小程序用户" in body["message"] and "工作人员" in body["message"], body
        assert "过期" not in body["message"]
    gone = client.get("/api/v1/staff/grids", headers={"Authorization": "Bearer not-a-token"}).get_json()
    assert gone["message"] == "登录已过期，请重新登录。"


# --- 2. a byte-order mark before the JSON -----------------------------------------------------------------


def test_a_json_body_with_a_leading_bom_is_read(client, make_staff, make_user, user_token):
    """Notepad and some HTTP tools put a UTF-8 BOM before the text: the body was refused as 400 malformed_json."""
    staff = make_staff(role="staff")
    raw = json.dumps({"username": staff.username, "password": staff.plain_password}).encode("utf-8")
    resp = client.post("/api/v1/staff/login", data=b"\xef\xbb\xbf" + raw, content_type="application/json")
    assert resp.status_code == 200, resp.get_json()
    user = make_user()
    body = "\ufeff" + json.dumps({"nickname": "小王"}, ensure_ascii=False)
    resp = client.patch(
        "/api/v1/me", data=body.encode("utf-8"), content_type="application/json", headers=user_token(user)
    )
    assert resp.status_code == 200 and resp.get_json()["nickname"] == "小王", resp.get_json()
    # one BOM only: a second is no JSON
    twice = client.post(
        "/api/v1/staff/login", data=b"\xef\xbb\xbf\xef\xbb\xbf" + raw, content_type="application/json"
    )
    assert twice.status_code == 400 and twice.get_json()["error"] == "malformed_json"


def test_the_shared_json_reader_takes_one_leading_bom():
    from wxapp_backend.http import loads

    assert loads('\ufeff{"a": 1}') == {"a": 1}


# --- 3. an invisible nickname ----------------------------------------------------------------------------


def test_a_nickname_of_invisible_characters_is_refused_not_cleared(client, make_user, user_token):
    """“\\u200b\\u200e” (pasted from a chat) came out of the cleaning as nothing, and nothing means “remove it”: the
    nickname was wiped and the answer was 200."""
    user = make_user(nickname="小王")
    h = user_token(user)
    for nickname in ("\u200b\u200b", "\u200e\u200f\u202a", "\ufe0f", " \u3000 ", "\u200b \ufe0f\u2060"):
        resp = client.patch("/api/v1/me", json={"nickname": nickname}, headers=h)
        body = resp.get_json()
        assert resp.status_code == 422, (repr(nickname), body)
        assert "nickname" in body["fields"] and "昵称" in body["message"], body
    assert client.get("/api/v1/me", headers=h).get_json()["nickname"] == "小王"
    # what stays: a real nickname with an emoji's variation selector, and "" or null to remove it
    ok = client.patch("/api/v1/me", json={"nickname": "❤\ufe0f小王"}, headers=h)
    assert ok.status_code == 200 and ok.get_json()["nickname"] == "❤\ufe0f小王"
    cleared = client.patch("/api/v1/me", json={"nickname": ""}, headers=h)
    assert cleared.status_code == 200 and cleared.get_json()["nickname"] in ("", None)


# --- 4. 重置密码 or 修改密码 on the audit page ---------------------------------------------------------------


def test_the_audit_page_tells_a_self_change_from_an_admin_reset(app, client, make_staff, console_login):
    admin = make_staff(role="admin")
    li = make_staff(role="staff")
    csrf = console_login(admin)
    resp = client.post(
        f"/console/staff/{li.id}/password", data={"csrf_token": csrf, "password": "Brand-new-2"}
    )
    assert resp.status_code == 302

    other = app.test_client()
    page = other.get("/console/login").get_data(as_text=True)
    assert (
        other.post(
            "/console/login",
            data={"username": li.username, "password": "Brand-new-2", "csrf_token": _csrf(page)},
        ).status_code
        == 302
    )
    token = _csrf(other.get("/console/password").get_data(as_text=True))
    done = other.post(
        "/console/password",
        data={"csrf_token": token, "current_password": "Brand-new-2", "password": "Own-choice-3"},
    )
    assert done.status_code == 302

    rows = _rows("staff.password_changed")
    assert [(r.actor_id, r.target_id, r.data.get("by")) for r in rows] == [
        (str(admin.id), str(li.id), "admin"),
        (str(li.id), str(li.id), "self"),
    ]
    page = client.get("/console/audit?action=staff.password_changed").get_data(as_text=True)
    labels = re.findall(r'<td class="audit-action"[^>]*>([^<]*)<br>', page)
    assert labels == ["修改密码", "重置密码"], labels  # newest first


def test_an_old_row_without_by_is_labelled_from_who_did_it():
    from wxapp_backend.console.audit_log import row_label

    self_change = AuditLog(
        action="staff.password_changed",
        actor_type="staff",
        actor_id="7",
        target_id="7",
        target_type="staff_users",
        data={},
    )
    reset = AuditLog(
        action="staff.password_changed",
        actor_type="staff",
        actor_id="1",
        target_id="7",
        target_type="staff_users",
        data={},
    )
    assert row_label(self_change) == "修改密码" and row_label(reset) == "重置密码"


# --- 5. a login over another person's live console session -----------------------------------------------


def test_a_login_over_another_staff_members_session_writes_their_logout(client, make_staff, console_login):
    """On a shared PC the second person's login ended the first one's session with no staff.logout row: the log
    had the first person at the console until their login would have run out."""
    first = make_staff(role="staff")
    second = make_staff(role="dept")
    console_login(first)
    console_login(second)
    rows = _rows("staff.logout")
    assert [(r.actor_id, r.target_id, r.data.get("via"), r.data.get("replaced_by")) for r in rows] == [
        (str(first.id), str(first.id), "replaced", second.id)
    ]
    # a login from a browser with no live session (or one already logged out) writes none
    csrf = _csrf(client.get("/console/").get_data(as_text=True))
    client.post("/console/logout", data={"csrf_token": csrf})
    console_login(first)
    assert [r.data.get("via") for r in _rows("staff.logout")] == ["replaced", "console"]


# --- 6. every staff login action has its Chinese name ----------------------------------------------------


def test_refused_and_locked_logins_have_chinese_labels():
    """staff.login_failed and staff.login_locked are written with the action as a keyword (auth/services.py
    _refused), which the label check of test_console2_qa_s13 does not see: the audit page showed bare codes."""
    from wxapp_backend.console.audit_log import action_label

    for code in ("staff.login_failed", "staff.login_locked"):
        assert action_label(code) != code, code


# --- 7. where a login began -------------------------------------------------------------------------------


def test_a_staff_login_row_says_where_it_began_as_the_logout_row_does(client, make_staff, console_login):
    """staff.logout says via console or api; staff.login (and a refused login) did not: which login a logout
    ended could not be told when a person used both."""
    staff = make_staff(role="staff")
    console_login(staff)
    client.post("/api/v1/staff/login", json={"username": staff.username, "password": staff.plain_password})
    client.post("/api/v1/staff/login", json={"username": staff.username, "password": "Wrong-pass1"})
    assert [r.data.get("via") for r in _rows("staff.login")] == ["console", "api"]
    assert [r.data.get("via") for r in _rows("staff.login_failed")] == ["api"]


# --- 8. an admin resetting their own password ------------------------------------------------------------


def test_an_admin_resetting_their_own_password_is_not_told_every_login_ended(
    client, make_staff, console_login
):
    """The message said every login of the account had ended, while this browser carried on. Since session 17 the
    reset of one's own password is refused there (修改密码 asks for the current one): the message says so."""
    admin = make_staff(role="admin")
    csrf = console_login(admin)
    resp = client.post(
        f"/console/staff/{admin.id}/password",
        data={"csrf_token": csrf, "password": "Mine-new-pw9"},
        follow_redirects=True,
    )
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "原有的登录已全部失效" not in page
    assert "不能在账号管理里重置自己的密码" in page and "修改密码" in page
