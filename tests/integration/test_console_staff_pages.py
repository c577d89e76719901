"""Staff accounts and audit log pages of the console: admins only, CSRF, audited changes, logins ended."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from wxapp_backend.audit import SYSTEM, Actor, AuditLog, audit
from wxapp_backend.auth import services
from wxapp_backend.auth.models import StaffUser
from wxapp_backend.db import session_scope
from wxapp_backend.errors import Conflict

PASSWORD = "Init1al-pass"


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _account(username: str) -> StaffUser | None:
    with session_scope() as s:
        return s.scalar(select(StaffUser).where(StaffUser.username == username))


def _audit_rows(action: str, target_id: int | None = None) -> list[AuditLog]:
    with session_scope() as s:
        stmt = select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)
        if target_id is not None:
            stmt = stmt.where(AuditLog.target_id == str(target_id))
        return list(s.scalars(stmt))


def _all_audit_text() -> str:
    with session_scope() as s:
        return " ".join(repr(r.data) for r in s.scalars(select(AuditLog)))


@pytest.fixture
def admin_client(client, make_staff, console_login):
    """(client logged in as an admin, its CSRF token, the admin)."""
    admin = make_staff(username="chief", role="admin")
    return client, console_login(admin), admin


def _login(app, staff, password: str | None = None):
    """A second browser logged into the console as `staff`; returns the client."""
    other = app.test_client()
    token = _csrf(other.get("/console/login").get_data(as_text=True))
    resp = other.post("/console/login", data={"username": staff.username, "csrf_token": token,
                                              "password": password or staff.plain_password})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return other


def _api_token(client, staff, password: str | None = None) -> dict[str, str]:
    resp = client.post("/api/v1/staff/login", json={"username": staff.username,
                                                    "password": password or staff.plain_password})
    assert resp.status_code == 200, resp.get_json()
    return {"Authorization": f"Bearer {resp.get_json()['token']}"}


# --- accounts ------------------------------------------------------------------------------------------

def test_admin_creates_edits_disables_enables_and_resets_each_audited(admin_client):
    client, csrf, admin = admin_client
    resp = client.post("/console/staff/new", data={"csrf_token": csrf, "username": "li.si", "display_name": "李四",
                                                   "role": "dept", "department": "市场监管所", "password": PASSWORD})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    li = _account("li.si")
    assert (li.role, li.department, li.display_name, li.active) == ("dept", "市场监管所", "李四", True)
    page = client.get("/console/staff").get_data(as_text=True)
    assert "li.si" in page and "市场监管所" in page and "从未登录" in page
    created = _audit_rows("staff.created", li.id)
    assert len(created) == 1 and created[0].actor_id == str(admin.id) and created[0].actor_type == "staff"

    resp = client.post(f"/console/staff/{li.id}/edit", data={"csrf_token": csrf, "display_name": "李四（科长）",
                                                             "role": "staff", "department": ""})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    li = _account("li.si")
    assert (li.role, li.department, li.display_name) == ("staff", "", "李四（科长）")
    (updated,) = _audit_rows("staff.updated", li.id)
    assert updated.data["role"] == {"from": "dept", "to": "staff"}
    assert updated.data["department"] == {"from": "市场监管所", "to": ""}
    assert updated.actor_id == str(admin.id)

    assert client.post(f"/console/staff/{li.id}/active", data={"csrf_token": csrf, "active": "0"}).status_code == 302
    assert _account("li.si").active is False
    assert len(_audit_rows("staff.disabled", li.id)) == 1
    assert "已停用" in client.get("/console/staff").get_data(as_text=True)

    assert client.post(f"/console/staff/{li.id}/active", data={"csrf_token": csrf, "active": "1"}).status_code == 302
    assert _account("li.si").active is True
    assert len(_audit_rows("staff.enabled", li.id)) == 1

    old_hash = _account("li.si").password_hash
    resp = client.post(f"/console/staff/{li.id}/password", data={"csrf_token": csrf, "password": "Brand-new-2"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    assert _account("li.si").password_hash != old_hash
    (reset,) = _audit_rows("staff.password_changed", li.id)
    assert reset.actor_id == str(admin.id)
    # The audit log never holds a password, nor its hash.
    text = _all_audit_text()
    for secret in (PASSWORD, "Brand-new-2", old_hash, _account("li.si").password_hash):
        assert secret not in text
    # The new password works; the admin's own console session went on.
    assert client.post("/api/v1/staff/login", json={"username": "li.si", "password": "Brand-new-2"}).status_code == 200
    assert client.get("/console/staff").status_code == 200


def test_an_admin_resetting_their_own_password_is_sent_to_change_it_and_no_login_ends(app, admin_client):
    # Session 17: one's own password needs the current one (修改密码); 账号管理 refuses it and changes nothing.
    client, csrf, admin = admin_client
    elsewhere = _login(app, admin)
    resp = client.post(f"/console/staff/{admin.id}/password", data={"csrf_token": csrf, "password": "Mine-new-pw9"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/console/password")
    assert client.get("/console/staff").status_code == 200
    assert elsewhere.get("/console/staff").status_code == 200


def test_weak_password_and_duplicate_username_come_back_on_the_form(admin_client, make_staff):
    client, csrf, _admin = admin_client
    form = {"csrf_token": csrf, "username": "wang.wu", "display_name": "王五", "role": "dept",
            "department": "税务所", "password": "12345678"}
    resp = client.post("/console/staff/new", data=form)
    page = resp.get_data(as_text=True)
    assert 400 <= resp.status_code < 500
    assert "密码需同时包含字母和数字" in page
    assert 'value="wang.wu"' in page and 'value="王五"' in page and 'value="税务所"' in page
    assert re.search(r'<option value="dept"\s+selected', page)
    assert "12345678" not in page  # the password is not sent back
    assert _account("wang.wu") is None

    make_staff(username="taken", role="staff")
    resp = client.post("/console/staff/new", data={**form, "username": "taken", "password": PASSWORD})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 409
    assert "用户名 taken 已存在" in page and 'value="taken"' in page and 'value="王五"' in page
    assert PASSWORD not in page

    resp = client.post("/console/staff/new", data={**form, "department": "", "password": PASSWORD})
    assert 400 <= resp.status_code < 500 and "部门账号必须填写所属部门" in resp.get_data(as_text=True)
    assert _account("wang.wu") is None


def test_edit_errors_come_back_on_the_form(admin_client, make_staff):
    client, csrf, _admin = admin_client
    target = make_staff(username="zhao", role="staff")
    resp = client.post(f"/console/staff/{target.id}/edit", data={"csrf_token": csrf, "display_name": "赵六",
                                                                 "role": "dept", "department": ""})
    page = resp.get_data(as_text=True)
    assert 400 <= resp.status_code < 500 and "部门账号必须填写所属部门" in page and 'value="赵六"' in page
    resp = client.post(f"/console/staff/{target.id}/edit", data={"csrf_token": csrf, "role": "dept",
                                                                 "department": "部" * 65})
    assert 400 <= resp.status_code < 500 and "不能超过 64 个字" in resp.get_data(as_text=True)
    resp = client.post(f"/console/staff/{target.id}/password", data={"csrf_token": csrf, "password": "short1"})
    assert resp.status_code == 422 and "密码至少 8 位" in resp.get_data(as_text=True)
    assert _account("zhao").role == "staff"
    assert not _audit_rows("staff.updated") and not _audit_rows("staff.password_changed")


def test_an_admin_cannot_disable_or_demote_themselves(admin_client):
    client, csrf, admin = admin_client
    resp = client.post(f"/console/staff/{admin.id}/active", data={"csrf_token": csrf, "active": "0"})
    assert resp.status_code == 409
    assert "不能停用自己正在使用的账号" in resp.get_data(as_text=True)
    resp = client.post(f"/console/staff/{admin.id}/edit", data={"csrf_token": csrf, "role": "staff",
                                                                "display_name": "", "department": ""})
    assert resp.status_code == 409 and "不能修改自己账号的角色" in resp.get_data(as_text=True)
    me = _account("chief")
    assert (me.active, me.role) == (True, "admin")
    assert client.get("/console/staff").status_code == 200
    assert not _audit_rows("staff.disabled") and not _audit_rows("staff.updated")


def test_the_last_active_admin_cannot_be_disabled_or_demoted(app_ctx, make_staff):
    """Through the console an acting admin is itself an active admin, so this guards scripts and the race of two
    admins disabling each other at once (each request passed its login check before the other committed)."""
    only = make_staff(username="only_admin", role="admin")
    make_staff(username="retired", role="admin")
    with session_scope() as s:
        services.set_staff_active(s, SYSTEM, _account("retired").id, False)
    with pytest.raises(Conflict, match="最后一个启用中的管理员"), session_scope() as s:
        services.set_staff_active(s, SYSTEM, only.id, False)
    with pytest.raises(Conflict, match="最后一个启用中的管理员"), session_scope() as s:
        services.update_staff(s, Actor("staff", 999, role="admin"), only.id, display_name="", role="staff",
                              department="")
    assert _account("only_admin").active is True and _account("only_admin").role == "admin"
    # With a second active admin, either can go.
    with session_scope() as s:
        services.set_staff_active(s, SYSTEM, _account("retired").id, True)
    with session_scope() as s:
        services.set_staff_active(s, SYSTEM, only.id, False)
    assert _account("only_admin").active is False


def test_a_disabled_accounts_open_console_session_and_api_token_stop_at_once_and_stay_dead(app, admin_client,
                                                                                          make_staff):
    client, csrf, _admin = admin_client
    target = make_staff(username="leaver", role="staff")
    browser = _login(app, target)
    headers = _api_token(app.test_client(), target)
    assert browser.get("/console/appeals").status_code == 200
    assert client.get("/api/v1/staff/appeals", headers=headers).status_code == 200

    assert client.post(f"/console/staff/{target.id}/active", data={"csrf_token": csrf, "active": "0"}).status_code == 302
    resp = browser.get("/console/appeals")
    assert resp.status_code == 302 and "/console/login" in resp.headers["Location"]
    assert client.get("/api/v1/staff/appeals", headers=headers).status_code == 401

    # Enabling the account again does not bring the old logins back: they were ended, not only refused.
    assert client.post(f"/console/staff/{target.id}/active", data={"csrf_token": csrf, "active": "1"}).status_code == 302
    assert client.get("/api/v1/staff/appeals", headers=headers).status_code == 401
    browser = _login(app, target)  # the cookie was dropped above; a copy of it would be dead too
    assert browser.get("/console/appeals").status_code == 200


def test_a_copy_of_a_disabled_accounts_cookie_does_not_come_back_on_re_enable(app, admin_client, make_staff):
    client, csrf, _admin = admin_client
    target = make_staff(username="copied", role="staff")
    browser = _login(app, target)
    copied = browser.get_cookie("wxapp_console").value
    client.post(f"/console/staff/{target.id}/active", data={"csrf_token": csrf, "active": "0"})
    client.post(f"/console/staff/{target.id}/active", data={"csrf_token": csrf, "active": "1"})
    other = app.test_client()
    other.set_cookie("wxapp_console", copied)
    resp = other.get("/console/appeals")
    assert resp.status_code == 302 and "/console/login" in resp.headers["Location"]


def test_a_password_reset_ends_the_accounts_console_session_and_api_token(app, admin_client, make_staff):
    client, csrf, _admin = admin_client
    target = make_staff(username="forgetful", role="staff")
    browser = _login(app, target)
    headers = _api_token(app.test_client(), target)
    resp = client.post(f"/console/staff/{target.id}/password", data={"csrf_token": csrf, "password": "Reset-pass-7"})
    assert resp.status_code == 302
    assert browser.get("/console/appeals").status_code == 302
    assert client.get("/api/v1/staff/appeals", headers=headers).status_code == 401
    assert client.get("/api/v1/staff/appeals", headers=_api_token(app.test_client(), target, "Reset-pass-7")
                      ).status_code == 200


# --- roles and CSRF ------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["staff", "dept"])
def test_lower_roles_get_403_on_both_pages_and_every_post(client, make_staff, console_login, role):
    victim = make_staff(username="victim", role="staff")
    csrf = console_login(make_staff(role=role))
    for path in ("/console/staff", "/console/staff/new", f"/console/staff/{victim.id}/edit", "/console/audit",
                 "/console/audit?action=staff."):
        resp = client.get(path)
        assert resp.status_code == 403, path
        assert "没有权限" in resp.get_data(as_text=True)
    posts = {"/console/staff/new": {"username": "sneaky", "role": "admin", "password": PASSWORD},
             f"/console/staff/{victim.id}/edit": {"role": "admin", "display_name": "x", "department": ""},
             f"/console/staff/{victim.id}/active": {"active": "0"},
             f"/console/staff/{victim.id}/password": {"password": "Taken-over-1"}}
    for path, data in posts.items():
        resp = client.post(path, data={"csrf_token": csrf, **data})
        assert resp.status_code == 403, path
    v = _account("victim")
    assert (v.role, v.active, v.display_name) == ("staff", True, "victim")
    assert _account("sneaky") is None
    assert client.post("/api/v1/staff/login", json={"username": "victim", "password": "Taken-over-1"}).status_code == 401
    page = client.get("/console/").get_data(as_text=True)
    assert "账号管理" not in page and "操作日志" not in page


def test_admin_nav_has_both_pages(admin_client):
    client, _csrf, _admin = admin_client
    page = client.get("/console/").get_data(as_text=True)
    assert 'href="/console/staff"' in page and 'href="/console/audit"' in page


def test_posts_without_csrf_are_refused_and_change_nothing(admin_client, make_staff):
    client, _csrf, _admin = admin_client
    target = make_staff(username="kept", role="staff")
    before = _account("kept").password_hash
    posts = {"/console/staff/new": {"username": "nocsrf", "role": "staff", "password": PASSWORD},
             f"/console/staff/{target.id}/edit": {"role": "dept", "department": "x", "display_name": "x"},
             f"/console/staff/{target.id}/active": {"active": "0"},
             f"/console/staff/{target.id}/password": {"password": "Other-pass-1"}}
    for path, data in posts.items():
        for token in (None, "forged"):
            form = data if token is None else {**data, "csrf_token": token}
            resp = client.post(path, data=form)
            assert resp.status_code == 400, path
            assert "页面已过期" in resp.get_data(as_text=True)
    k = _account("kept")
    assert (k.role, k.active, k.display_name, k.password_hash) == ("staff", True, "kept", before)
    assert _account("nocsrf") is None
    with session_scope() as s:
        assert not s.scalars(select(AuditLog).where(AuditLog.action.startswith("staff."),
                                                    AuditLog.action != "staff.login",
                                                    AuditLog.actor_type == "staff")).all()


def test_staff_pages_have_no_inline_script_or_style(admin_client, make_staff):
    client, _csrf, _admin = admin_client
    target = make_staff(username="plain", role="dept", department="<script>alert(1)</script>")
    for path in ("/console/staff", "/console/staff/new", f"/console/staff/{target.id}/edit", "/console/audit"):
        page = client.get(path).get_data(as_text=True)
        assert "<script>" not in page and ' style="' not in page, path
        assert "&lt;script&gt;alert(1)" in page or path == "/console/staff/new", path


# --- audit log -----------------------------------------------------------------------------------------

def _add_audit(actor: Actor, action: str, target_type: str = "", target_id: str = "", when: datetime | None = None,
               **data) -> int:
    with session_scope() as s:
        row = audit(s, actor, action, None, **data)
        row.target_type, row.target_id = target_type, target_id
        if when is not None:
            row.created_at = when
        s.flush()
        return row.id


def test_audit_page_lists_newest_first_and_filters(admin_client, make_staff):
    client, _csrf, _admin = admin_client
    clerk = make_staff(username="clerk", role="staff")
    old = _add_audit(Actor("staff", clerk.id), "appeal.assigned", "appeals", "7",
                     when=datetime(2025, 3, 1, 1, 0, tzinfo=UTC), note="交办给税务所")
    late = _add_audit(Actor("user", 42), "appeal.rated", "appeals", "7",
                      when=datetime(2025, 3, 1, 16, 30, tzinfo=UTC))  # 2025-03-02 00:30 in Shanghai
    other = _add_audit(SYSTEM, "activity.published", "activities", "3", when=datetime(2025, 2, 1, tzinfo=UTC))

    def ids(query: str) -> list[int]:
        resp = client.get("/console/audit" + query)
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return [int(i) for i in re.findall(r'id="audit-(\d+)"', resp.get_data(as_text=True))]

    everything = ids("")
    assert everything.index(late) < everything.index(old) < everything.index(other)  # newest first
    assert ids("?action=appeal.") == [late, old]
    assert ids("?action=appeal.assign") == [old]
    assert ids("?action=appeal%") == []  # a prefix, not a LIKE pattern
    assert ids("?actor_type=user&actor_id=42") == [late]
    system = ids("?actor_type=system")  # the accounts made by make_staff are the system's too
    assert other in system and old not in system and late not in system
    assert ids("?username=clerk") == [old]
    assert ids("?username=nobody") == []
    assert ids("?target_type=activities&target_id=3") == [other]
    assert ids("?target_id=7") == [late, old]
    # Dates are Shanghai days: 16:30 UTC on 1 March is already 2 March there.
    assert ids("?since=2025-03-01&until=2025-03-01&action=appeal.") == [old]
    assert ids("?since=2025-03-02&action=appeal.") == [late]
    assert ids("?until=2025-02-28") == [other]
    page = client.get("/console/audit?action=appeal.assigned").get_data(as_text=True)
    assert "交办给税务所" in page and "2025-03-01 09:00:00" in page and "clerk" in page
    # The admin's own login is in the log too, under their name.
    assert "staff.login" in client.get("/console/audit?action=staff.").get_data(as_text=True)


def test_audit_page_paginates(admin_client):
    client, _csrf, _admin = admin_client
    for i in range(55):
        _add_audit(SYSTEM, "test.bulk", "things", str(i))
    first = client.get("/console/audit?action=test.").get_data(as_text=True)
    assert len(re.findall(r'id="audit-\d+"', first)) == 50
    assert "第 1 / 2 页" in first and "page=2" in first and "action=test." in first
    second = client.get("/console/audit?action=test.&page=2").get_data(as_text=True)
    assert len(re.findall(r'id="audit-\d+"', second)) == 5
    assert 'id="no-rows"' in client.get("/console/audit?action=test.&page=9").get_data(as_text=True)


def test_audit_data_is_escaped_and_readable(admin_client):
    client, _csrf, _admin = admin_client
    _add_audit(SYSTEM, "test.evil", note="<script>alert(1)</script>", name="张三")
    page = client.get("/console/audit?action=test.evil").get_data(as_text=True)
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&#34;name&#34;: &#34;张三&#34;" in page or "&quot;name&quot;: &quot;张三&quot;" in page


@pytest.mark.parametrize("query, message", [
    ("?page=abc", "页码应为整数"),
    ("?page=0", "页码不能小于 1"),
    ("?page=" + "9" * 40, "页码不能大于"),  # a whole number, only far too large
    ("?since=2025-13-45", "开始日期格式不对"),
    ("?until=0001-01-01", "年份应在"),
    ("?since=2025-03-02&until=2025-03-01", "开始日期不能晚于结束日期"),
    ("?actor_type=robot", "操作人类型只能是"),
    ("?target_id=" + "9" * 129, "对象编号不能超过 128 个字"),  # a knowledge-base entry id is up to 128
    ("?actor_id=" + "9" * 65, "操作人编号不能超过 64 个字"),
])
def test_bad_audit_filters_give_a_chinese_message_not_a_500(admin_client, query, message):
    client, _csrf, _admin = admin_client
    resp = client.get("/console/audit" + query)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 400, page
    assert message in page
    assert 'id="audit-filters"' in page  # the form is there to correct it


def test_huge_ids_that_fit_the_column_simply_find_nothing(admin_client):
    client, _csrf, _admin = admin_client
    for query in ("?target_id=" + "9" * 64, "?actor_type=staff&actor_id=99999999999999999999", "?page=100000"):
        resp = client.get("/console/audit" + query)
        assert resp.status_code == 200 and 'id="no-rows"' in resp.get_data(as_text=True), query


def test_unknown_filter_names_are_ignored(admin_client):
    client, _csrf, _admin = admin_client
    assert client.get("/console/audit?sort=<x>&format=csv").status_code == 200
