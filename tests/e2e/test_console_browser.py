"""The staff console in headless Chromium against the real service under gunicorn, seeded with demo data."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.e2e.helpers import count_rows
from wxapp_backend.demo import ENTERPRISES

pytestmark = pytest.mark.e2e


def _login(page, username: str, password: str) -> None:
    page.fill("#username", username)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("#login-submit")


def test_wrong_password_shows_chinese_error(live_server, browser, tmp_path):
    page, log = browser
    page.goto(live_server.base_url + "/console/")
    assert urlsplit(page.url).path == "/console/login", page.url

    _login(page, "admin", live_server.admin_password + "-wrong")

    assert urlsplit(page.url).path == "/console/login"
    assert "用户名或密码不正确" in page.inner_text("[role=alert]")
    assert page.locator("#count-enterprises").count() == 0
    assert page.input_value("#username") == "admin"  # kept for the retry; the password is not
    page.screenshot(path=str(tmp_path / "login-error.png"), full_page=True)
    assert not log.non_loopback(), log.non_loopback()


def test_login_lands_on_dashboard_with_demo_counts(live_server, browser, tmp_path):
    page, log = browser
    db_url = live_server.service.database_url
    enterprises = count_rows(db_url, "enterprises")
    # The seed must have produced something, or the comparison below would prove nothing.
    assert enterprises >= len(ENTERPRISES) > 0

    page.goto(live_server.base_url + "/console/")
    assert urlsplit(page.url).path == "/console/login", page.url
    _login(page, "admin", live_server.admin_password)

    assert urlsplit(page.url).path == "/console/", page.url
    assert page.title().startswith("工作台")
    assert int(page.inner_text("#count-enterprises")) == enterprises
    assert int(page.inner_text("#count-buildings")) == count_rows(db_url, "buildings")
    assert int(page.inner_text("#count-grids")) == count_rows(db_url, "grids")
    assert "管理员" in page.inner_text("header.topbar")
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # The stylesheet comes from the project and is applied (the CSP allows only 'self').
    css = [u for u in log.responses if urlsplit(u).path == "/static/console.css"]
    assert css, f"console.css was never requested: {log.requests}"
    assert all(log.responses[u] == 200 for u in css), {u: log.responses[u] for u in css}
    assert page.eval_on_selector(".stat", "e => getComputedStyle(e).borderRadius") == "8px"
    assert page.eval_on_selector(".topbar", "e => getComputedStyle(e).backgroundColor") == "rgb(31, 42, 68)"

    # Nothing left the machine: every request the browser made went to the service on 127.0.0.1.
    assert log.requests
    assert not log.non_loopback(), log.non_loopback()
    assert not [m for m in log.console_errors if "favicon" not in m], log.console_errors
