"""Console shell: login, CSRF, roles, dashboard counts, escaping."""

from __future__ import annotations

import re


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_console_requires_login(client):
    resp = client.get("/console/")
    assert resp.status_code == 302 and "/console/login" in resp.headers["Location"]


def test_login_shows_dashboard_with_real_counts(client, make_staff, console_login, make_building, make_enterprise):
    make_building()
    make_enterprise()
    make_enterprise()
    console_login(make_staff())
    page = client.get("/console/").get_data(as_text=True)
    assert re.search(r'id="count-enterprises">2<', page)
    assert re.search(r'id="count-buildings">1<', page)
    assert "工作台" in page


def test_login_without_csrf_is_refused(client, make_staff):
    staff = make_staff()
    client.get("/console/login")
    resp = client.post("/console/login", data={"username": staff.username, "password": staff.plain_password})
    assert resp.status_code == 400
    assert "登录页面已过期" in resp.get_data(as_text=True)  # the login form again, in plain words


def test_wrong_password_shows_chinese_error(client, make_staff):
    staff = make_staff()
    token = _csrf(client.get("/console/login").get_data(as_text=True))
    resp = client.post("/console/login", data={"username": staff.username, "password": "nope12345",
                                                "csrf_token": token})
    assert resp.status_code == 401
    assert "用户名或密码不正确" in resp.get_data(as_text=True)


def test_logout_needs_csrf_and_ends_session(client, make_staff, console_login):
    token = console_login(make_staff())
    assert client.post("/console/logout").status_code == 400
    assert client.post("/console/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/console/").status_code == 302


def test_admin_pages_refuse_lower_roles(client, make_staff, console_login):
    console_login(make_staff(role="dept"))
    resp = client.get("/console/jobs")
    assert resp.status_code == 403
    assert "没有权限" in resp.get_data(as_text=True)


def test_admin_sees_jobs_page(client, make_staff, console_login):
    console_login(make_staff(role="admin"))
    assert client.get("/console/jobs").status_code == 200


def test_open_redirect_is_refused(client, make_staff):
    staff = make_staff()
    token = _csrf(client.get("/console/login").get_data(as_text=True))
    resp = client.post("/console/login", data={"username": staff.username, "password": staff.plain_password,
                                                "csrf_token": token, "next": "https://evil.example/"})
    assert resp.headers["Location"].endswith("/console/")


def test_session_cookie_is_httponly(client, make_staff, console_login):
    staff = make_staff()
    token = _csrf(client.get("/console/login").get_data(as_text=True))
    resp = client.post("/console/login", data={"username": staff.username, "password": staff.plain_password,
                                                "csrf_token": token})
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_password_change_ends_other_sessions(client, make_staff, console_login, app_ctx):
    from wxapp_backend.audit import SYSTEM
    from wxapp_backend.auth.models import StaffUser
    from wxapp_backend.auth.services import set_staff_password
    from wxapp_backend.db import session_scope

    staff = make_staff()
    console_login(staff)
    with session_scope() as s:
        set_staff_password(s, s.get(StaffUser, staff.id), "N3wPassword!", SYSTEM)
    assert client.get("/console/").status_code == 302


def test_console_404_is_chinese_page(client):
    resp = client.get("/console/no-such-page")
    assert resp.status_code == 404
    assert "页面不存在" in resp.get_data(as_text=True)
