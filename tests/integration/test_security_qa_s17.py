"""QA session 17, security review of the web surface (console, /api/v1, webhook). The first tests show defects that
were found and fixed (each failed before its fix); the rest pin down what the review checked and found sound, so a
later change cannot undo it unnoticed."""

from __future__ import annotations

import base64
import io
import logging
import re
from urllib.parse import unquote, urlsplit

import pytest

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 100).decode()


def _appeal_with_photo(client, headers) -> tuple[int, str]:
    resp = client.post("/api/v1/appeals", headers=headers, json={
        "content": "楼道里的灯坏了好几天", "contact_name": "张三", "contact_phone": "13800138000", "images": [PNG]})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"], resp.get_json()["images"][0]


# --- 1. Referrer-Policy ---------------------------------------------------------------------------------------


def test_every_kind_of_answer_sends_a_same_origin_referrer_policy(client, make_user, user_token, make_staff,
                                                                   console_login):
    """No answer carried a Referrer-Policy: a console address holds what was searched for (a person's phone number
    in /console/users?q=, an enterprise's name) and which appeal was open, and a browser on an older default sends
    the full address to any site a link leads to. same-origin keeps the Referer the console itself relies on (the
    page a form was on) and gives other sites nothing."""
    headers = user_token(make_user())
    appeal_id, photo = _appeal_with_photo(client, headers)
    answers = {
        "login page": client.get("/console/login"),
        "HTML error page": client.get("/no-such-page"),
        "API JSON": client.get("/api/v1/me", headers=headers),
        "API error": client.get("/api/v1/me"),
        "API photo": client.get(f"/api/v1/appeals/{appeal_id}/images/{photo}", headers=headers),
        "health check": client.get("/healthz"),
        "static file": client.get("/static/console.css"),
    }
    console_login(make_staff(role="staff"))
    answers.update({
        "console page": client.get("/console/appeals"),
        "console error page": client.get("/console/no-such-page"),
        "console photo": client.get(f"/console/appeals/{appeal_id}/images/{photo}"),
        "console download": client.get("/console/appeals/report.xlsx"),
    })
    wrong = {name: resp.headers.get("Referrer-Policy") for name, resp in answers.items()
             if resp.headers.get("Referrer-Policy") != "same-origin"}
    assert not wrong, wrong


# --- 2. HTML error pages outside /console ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/no-such-page", "/static/no-such-file.css", "/favicon.ico"])
def test_an_html_error_page_outside_the_console_cannot_be_framed_and_runs_no_inline_script(client, path):
    """A mistyped address outside /console (/no-such-page, a missing static file) is answered with the console's
    HTML error page, but the frame and script protections were added only to paths under /console: that page could
    be framed by any site and had no Content-Security-Policy."""
    resp = client.get(path)
    assert resp.status_code == 404 and resp.mimetype == "text/html"
    assert resp.headers.get("X-Frame-Options") == "DENY", dict(resp.headers)
    csp = resp.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp


# --- what was checked and found sound -------------------------------------------------------------------------


def test_every_console_page_type_has_the_security_headers(client, make_user, user_token, make_staff, console_login):
    """Pages, error pages, 500 pages, photos and downloads under /console: nosniff, no framing, a CSP without
    unsafe-inline, no-store."""
    appeal_id, photo = _appeal_with_photo(client, user_token(make_user()))
    console_login(make_staff(role="admin"))
    for path in ("/console/", "/console/no-such-page", "/console/appeals/999999", "/console/appeals/report.xlsx",
                 f"/console/appeals/{appeal_id}/images/{photo}", "/console/login"):
        resp = client.get(path)
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", path
        assert resp.headers.get("X-Frame-Options") == "DENY", path
        csp = resp.headers.get("Content-Security-Policy", "")
        assert csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp, (path, csp)
        assert resp.headers.get("Cache-Control") == "no-store", path


def test_a_500_page_shows_no_traceback(client, make_staff, console_login, monkeypatch):
    console_login(make_staff(role="admin"))

    def boom(*_a, **_kw):
        raise RuntimeError("internal-detail-that-must-not-show")

    monkeypatch.setattr("wxapp_backend.enterprises.services.awaiting_check", boom)
    for path in ("/console/",):
        resp = client.get(path)
        page = resp.get_data(as_text=True)
        assert resp.status_code == 500
        assert "internal-detail" not in page and "Traceback" not in page and "RuntimeError" not in page
        assert "服务开了个小差" in page and resp.headers.get("X-Frame-Options") == "DENY"


def test_photos_are_sent_as_sandboxed_pictures_and_names_cannot_leave_the_upload_folder(client, make_user,
                                                                                         user_token):
    headers = user_token(make_user())
    appeal_id, photo = _appeal_with_photo(client, headers)
    resp = client.get(f"/api/v1/appeals/{appeal_id}/images/{photo}", headers=headers)
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    for name in ("..%2f..%2fsecret_key", "%2e%2e%2fx.png", photo.upper(), photo.replace(".png", ".svg"),
                 "..\\" + photo):
        assert client.get(f"/api/v1/appeals/{appeal_id}/images/{name}", headers=headers).status_code == 404, name


def test_another_users_token_or_another_department_finds_nothing(client, make_user, user_token, make_staff,
                                                                 staff_headers, make_activity, console_login):
    """IDOR on ids in URLs: appeal, its photo and actions, registration, inbox item; a department on an appeal
    given to another department (API and console). Each is a 404, as if the id did not exist."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices.models import InboxItem

    owner, other = make_user(), make_user()
    mine, theirs = user_token(owner), user_token(other)
    appeal_id, photo = _appeal_with_photo(client, mine)
    registration = client.post(f"/api/v1/activities/{make_activity().id}/registrations", json={"answers": {}},
                               headers=mine).get_json()["id"]
    with session_scope() as s:
        item = InboxItem(user_id=owner.id, kind="notice", title="通知")
        s.add(item)
        s.flush()
        item_id = item.id
    for method, path in (("get", f"/api/v1/appeals/{appeal_id}"), ("get", f"/api/v1/appeals/{appeal_id}/images/{photo}"),
                         ("post", f"/api/v1/appeals/{appeal_id}/withdraw"),
                         ("post", f"/api/v1/appeals/{appeal_id}/escalate"),
                         ("get", f"/api/v1/registrations/{registration}/qr"),
                         ("post", f"/api/v1/registrations/{registration}/cancel"),
                         ("post", f"/api/v1/me/inbox/{item_id}/read")):
        resp = getattr(client, method)(path, headers=theirs, json={} if method == "post" else None)
        assert resp.status_code == 404, (path, resp.status_code)
    admin = staff_headers(make_staff(role="admin"))
    for action in ({"action": "accept"}, {"action": "assign", "department": "税务所"}):
        assert client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", headers=admin, json=action).status_code == 200
    elsewhere = make_staff(role="dept", department="城运中心")
    dept = staff_headers(elsewhere)
    for method, path in (("get", f"/api/v1/staff/appeals/{appeal_id}"),
                         ("get", f"/api/v1/staff/appeals/{appeal_id}/images/{photo}"),
                         ("post", f"/api/v1/staff/appeals/{appeal_id}/actions")):
        resp = getattr(client, method)(path, headers=dept, json={"action": "note", "text": "看看"}
                                       if method == "post" else None)
        assert resp.status_code == 404, (path, resp.status_code)
    csrf = console_login(elsewhere)
    assert client.get(f"/console/appeals/{appeal_id}").status_code == 404
    assert client.get(f"/console/appeals/{appeal_id}/images/{photo}").status_code == 404
    assert client.post(f"/console/appeals/{appeal_id}/action",
                       data={"csrf_token": csrf, "action": "note", "text": "看看"}).status_code == 404


def _filled(rule: str) -> str:
    url = re.sub(r"<any\(([a-z_]+)[^>]*>", r"\1", rule)
    url = re.sub(r"<int:[^>]+>", "1", url)
    return re.sub(r"<[^>]+>", "x", url)


def test_every_state_changing_console_route_refuses_a_missing_or_wrong_csrf_token(app, client, make_staff,
                                                                                   console_login):
    """Enumerated from the url_map: a logged-in admin's POST without the token, or with another one, is a 400
    csrf_failed on every console route (the login form answers with itself again, 400)."""
    console_login(make_staff(role="admin"))
    routes = [(r, m) for r in app.url_map.iter_rules() if r.rule.startswith("/console")
              for m in sorted(r.methods & {"POST", "PUT", "PATCH", "DELETE"})]
    assert len(routes) >= 40
    problems = []
    for rule, method in routes:
        for token in (None, "not-the-token", "令牌"):
            data = {} if token is None else {"csrf_token": token}
            resp = client.open(_filled(rule.rule), method=method, data=data)
            if resp.status_code != 400 or (rule.endpoint != "console.login"
                                           and 'data-error="csrf_failed"' not in resp.get_data(as_text=True)):
                problems.append(f"{method} {rule.rule} token={token!r}: {resp.status_code}")
    assert not problems, "\n".join(problems)
    assert client.get("/console/").status_code == 200  # still logged in: no refused form ended the session


@pytest.mark.parametrize("target", ["https://evil.example/console", "//evil.example/console/", "/\\evil.example",
                                    "/console\\..\\@evil.example", "http://localhost.evil.example/console/"])
def test_the_login_page_next_never_leaves_the_site(client, make_staff, target):
    staff = make_staff(role="staff")
    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post("/console/login", data={"username": staff.username, "password": staff.plain_password,
                                                "csrf_token": token, "next": target})
    assert resp.status_code == 302
    where = urlsplit(resp.headers["Location"])
    assert where.netloc in ("", "localhost") and where.path.startswith("/console"), resp.headers["Location"]


@pytest.mark.parametrize("referrer", ["http://evil.example/console/kb/", "http://localhost.evil.example/console/kb/",
                                      "https://localhost/console/kb/", "http://localhost/console/kb/?q=\x01",
                                      "http://localhost@evil.example/console/kb/"])
def test_a_referer_based_redirect_stays_on_this_site(app_ctx, client, make_staff, console_login, referrer):
    """knowledge_store/console.py sends the browser back to its Referer when _same_site() says it is ours."""
    from wxapp_backend.knowledge_store.cli import load_default_if_empty

    load_default_if_empty()
    csrf = console_login(make_staff(role="staff"))
    entry = re.search(r"/console/kb/([^/\"]+)/retire", client.get("/console/kb/").get_data(as_text=True)).group(1)
    resp = client.post(f"/console/kb/{entry}/retire", data={"csrf_token": csrf}, headers={"Referer": referrer})
    assert resp.status_code == 302
    where = urlsplit(resp.headers["Location"])
    assert where.netloc in ("", "localhost") and where.scheme in ("", "http"), resp.headers["Location"]
    assert not any(ord(c) < 32 for c in resp.headers["Location"])


def test_an_export_named_after_an_activity_title_cannot_inject_headers(client, make_staff, console_login,
                                                                       make_activity):
    title = '年会"报名\r\nSet-Cookie: x=1; 名单\\/..'
    activity = make_activity(title=title)
    console_login(make_staff(role="staff"))
    resp = client.get(f"/console/activities/{activity.id}/registrations.xlsx")
    assert resp.status_code == 200
    disposition = resp.headers["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition
    assert not any("x=1" in cookie for cookie in resp.headers.getlist("Set-Cookie"))
    assert disposition.isascii() and disposition.count('"') == 0, disposition
    encoded = disposition.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == f"{title}-报名名单.xlsx"


def test_the_console_cookie_is_httponly_samesite_and_secure_in_production(client, make_staff, console_login):
    from wxapp_backend.config import Settings

    console_login(make_staff(role="staff"))
    cookie = client.get("/console/").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert Settings.from_env({"APP_ENV": "production", "SECRET_KEY": "k" * 40}).cookie_secure is True


def test_configured_secrets_passwords_and_login_codes_stay_out_of_the_logs(client, make_staff, settings):
    """With DEBUG on (urllib3 writes every WeChat URL, whose query carries the appsecret and the login code), none of
    the configured secrets, a mistyped password or a wx.login code reaches the log."""
    root = logging.getLogger()
    handler = next(h for h in root.handlers if getattr(h, "_wxapp", False))
    out = io.StringIO()
    previous_stream, previous_level = handler.setStream(out), root.level
    root.setLevel(logging.DEBUG)
    try:
        staff = make_staff(role="dept")
        client.post("/api/v1/staff/login", json={"username": staff.username, "password": "Typo-Passw0rd-77"})
        page = client.get("/console/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        client.post("/console/login", data={"username": staff.username, "password": "Typo-Passw0rd-88",
                                            "csrf_token": token})
        assert client.post("/api/v1/auth/login", json={"code": "wx-login-code-5150"}).status_code == 200
        client.get("/wechat?signature=x&timestamp=1&nonce=2&echostr=3")
        client.get("/metrics", headers={"Authorization": "Bearer a-guessed-metrics-token"})
    finally:
        handler.setStream(previous_stream)
        root.setLevel(previous_level)
    logged = out.getvalue()
    assert "jscode2session" in logged  # the URL was logged: the check below is not vacuous
    for secret in (settings.wxa_secret, settings.wechat_secret, settings.secret_key, "Typo-Passw0rd-77",
                   "Typo-Passw0rd-88", "wx-login-code-5150"):
        assert secret not in logged, secret


def test_settings_for_display_hide_the_passwords_in_connection_urls():
    """Settings.describe() masked the named secrets but gave DATABASE_URL and REDIS_URL as they were, passwords in
    them: whatever displayed it (a diagnostics page, a log line) would show the database password."""
    from wxapp_backend.config import Settings

    s = Settings.from_env({"DATABASE_URL": "postgresql+psycopg://app:S3cret-db@db.internal:5432/wxapp",
                           "REDIS_URL": "redis://:R3dis-pw@cache.internal:6379/0"})
    shown = s.describe()
    assert "S3cret-db" not in str(shown) and "R3dis-pw" not in str(shown), shown
    assert shown["database_url"] == "postgresql+psycopg://app:***@db.internal:5432/wxapp"
    assert shown["redis_url"] == "redis://:***@cache.internal:6379/0"
    plain = Settings.from_env({"REDIS_URL": "redis://cache.internal:6379/0"}).describe()
    assert plain["redis_url"] == "redis://cache.internal:6379/0"
