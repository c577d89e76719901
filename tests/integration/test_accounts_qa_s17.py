"""QA session 17 on staff accounts and the console login: each test shows a defect that was found and fixed."""

from __future__ import annotations

import re

from sqlalchemy import select

from wxapp_backend.audit import AuditLog
from wxapp_backend.auth.models import StaffUser
from wxapp_backend.db import session_scope


def _rows(action: str) -> list[AuditLog]:
    with session_scope() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _hash(staff_id: int) -> str:
    with session_scope() as s:
        return s.get(StaffUser, staff_id).password_hash


# --- 1. an admin resetting their own password in 账号管理 -------------------------------------------------


def test_an_admin_cannot_reset_their_own_password_without_the_current_one(client, make_staff, console_login):
    """账号管理 let an admin set their own password with no current password asked: whoever found the admin's
    console left logged in could take the account over for good. Their own password goes through 修改密码."""
    admin = make_staff(role="admin")
    csrf = console_login(admin)
    before = _hash(admin.id)
    edit = client.get(f"/console/staff/{admin.id}/edit").get_data(as_text=True)
    assert 'id="reset-password"' not in edit and "/console/password" in edit  # the page points there instead
    resp = client.post(f"/console/staff/{admin.id}/password", data={"csrf_token": csrf, "password": "Mine-new-pw9"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/console/password")
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "修改密码" in page and "当前密码" in page and "不能在账号管理里重置自己的密码" in page
    assert _hash(admin.id) == before and not _rows("staff.password_changed")
    # still logged in, and the old password still logs in
    assert client.get("/console/staff").status_code == 200
    assert client.post("/api/v1/staff/login", json={"username": admin.username,
                                                    "password": admin.plain_password}).status_code == 200
    # another account's reset works as before
    colleague = make_staff(role="staff")
    resp = client.post(f"/console/staff/{colleague.id}/password", data={"csrf_token": csrf, "password": "Brand-new-2"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/console/staff")
    assert [r.target_id for r in _rows("staff.password_changed")] == [str(colleague.id)]


def test_the_service_refuses_an_own_password_reset_with_a_4xx(app_ctx, make_staff):
    """Any other caller of reset_staff_password (a script, a later API) gets the same refusal."""
    from wxapp_backend.audit import Actor
    from wxapp_backend.auth import services
    from wxapp_backend.errors import AppError

    admin = make_staff(role="admin")
    try:
        with session_scope() as s:
            services.reset_staff_password(s, Actor("staff", admin.id, role="admin"), admin.id, "Mine-new-pw9")
    except AppError as exc:
        assert 400 <= exc.status < 500 and "修改密码" in exc.message
    else:
        raise AssertionError("an own password reset was accepted")
    assert _hash(admin.id) == admin.password_hash


# --- 2. logging in again over one's own live session ---------------------------------------------------------


def test_logging_in_again_in_the_same_browser_writes_no_replaced_logout(app, client, make_staff, console_login):
    """A staff member logging in again in the same browser (the login page from a bookmark, a second tab) had a
    staff.logout `via: replaced` row written against them, replaced by themselves: the log said they left when they
    never did. A login over another person's session in that browser still writes it (the shared PC), and a login
    on another computer ends nothing, so writes nothing."""
    first = make_staff(role="staff")
    console_login(first)
    cookie = app.config["SESSION_COOKIE_NAME"]
    old_cookie = client.get_cookie(cookie).value
    console_login(first)  # again, same browser, own session live
    assert not _rows("staff.logout")
    assert [r.actor_id for r in _rows("staff.login")] == [str(first.id), str(first.id)]
    # the fresh session replaced the old one all the same: a copy of the old cookie is logged out
    copy = app.test_client()
    copy.set_cookie(cookie, old_cookie)
    assert copy.get("/console/").status_code == 302
    assert client.get("/console/").status_code == 200

    # the same account on another computer: both stay logged in, no logout row
    elsewhere = app.test_client()
    token = _csrf(elsewhere.get("/console/login").get_data(as_text=True))
    assert elsewhere.post("/console/login", data={"username": first.username, "password": first.plain_password,
                                                  "csrf_token": token}).status_code == 302
    assert client.get("/console/").status_code == 200 and elsewhere.get("/console/").status_code == 200
    assert not _rows("staff.logout")

    # someone else logs in over first's live session in this browser: first's session ended, and the log says so
    second = make_staff(role="dept")
    console_login(second)
    rows = _rows("staff.logout")
    assert [(r.actor_id, r.data.get("via"), r.data.get("replaced_by")) for r in rows] == [
        (str(first.id), "replaced", second.id)]


# --- 3. seed-demo run again ---------------------------------------------------------------------------------


def test_seed_demo_run_again_says_how_to_get_a_fresh_admin_password(app, db):
    """The second run said only “管理员账号 admin 已存在，密码未改动。”: whoever ran it to get a password (lost the
    first one) was not told of --reset-admin-password."""
    runner = app.test_cli_runner()
    assert runner.invoke(args=["seed-demo"]).exit_code == 0
    again = runner.invoke(args=["seed-demo"])
    assert again.exit_code == 0, again.output
    assert "已存在" in again.output and "--reset-admin-password" in again.output
    assert "密码：" not in again.output  # no new password was printed: none was made
    reset = runner.invoke(args=["seed-demo", "--reset-admin-password"])
    assert reset.exit_code == 0 and re.search(r"密码：\S+", reset.output)
