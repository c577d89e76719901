"""The staff console in headless Chromium as staff click through it: one row per save, a question before
what cannot be undone, pages that fit a phone."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.e2e.helpers import count_rows

pytestmark = pytest.mark.e2e


def _statuses(database_url: str) -> list[str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text("SELECT status FROM notices ORDER BY id"))]
    finally:
        engine.dispose()


def _wait_for_url(page, pattern) -> None:
    """Like page.wait_for_url, but a first navigation that a second one aborted is not the end of the wait."""
    from playwright.sync_api import Error

    for _ in range(3):
        try:
            page.wait_for_url(pattern)
            page.wait_for_load_state()
            return
        except Error as exc:
            if "ERR_ABORTED" not in str(exc):
                raise
    raise AssertionError(f"the page never reached {pattern.pattern}: {page.url}")


def _login(page, base_url: str, password: str) -> None:
    page.goto(base_url + "/console/login")
    page.fill("#username", "admin")
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("#login-submit")
    assert urlsplit(page.url).path == "/console/", page.url


def test_a_double_click_saves_one_notice_and_publishing_asks_first(live_server, browser):
    page, log = browser
    db_url = live_server.service.database_url
    _login(page, live_server.base_url, live_server.admin_password)
    demo = _statuses(db_url)  # seed-demo's notices, left as they are
    page.goto(live_server.base_url + "/console/notices/new")
    page.fill("input[name=title]", "稳岗补贴申报开始")
    page.fill("textarea[name=summary]", "符合条件的企业请于月底前申报")
    page.check("input[name=audience_all]")
    before = count_rows(db_url, "notices")

    # Two clicks on 保存 in quick succession, the second before the page has changed. A listener added after
    # the console's own notes, per submit, whether it was let through ("o") or held back ("x").
    page.evaluate("""() => {
      window.addEventListener("submit", (e) => {
        sessionStorage.setItem("qa-submits", (sessionStorage.getItem("qa-submits") || "") + (e.defaultPrevented ? "x" : "o"));
      });
      const button = document.querySelector("button.primary");
      button.click();
      setTimeout(() => button.click(), 0);
    }""")
    _wait_for_url(page, re.compile(r"/console/notices/\d+$"))
    page.wait_for_timeout(500)
    assert page.evaluate("sessionStorage.getItem('qa-submits')") == "ox"
    assert count_rows(db_url, "notices") == before + 1

    # 确认发布 pushes to everyone and cannot be undone: the browser asks first, and "cancel" sends nothing.
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click("text=确认发布")
    page.wait_for_timeout(500)
    assert asked and "无法撤回" in asked[0], asked
    assert "确认发布" in page.inner_text("main")  # still the draft's page: nothing was published
    assert _statuses(db_url) == [*demo, "draft"]
    assert not [m for m in log.console_errors if "favicon" not in m], log.console_errors


def test_console_pages_fit_a_phone_screen(live_server, browser):
    page, log = browser
    _login(page, live_server.base_url, live_server.admin_password)
    page.set_viewport_size({"width": 390, "height": 800})
    wider = {}
    for path in ("/console/appeals", "/console/enterprises", "/console/activities/new", "/console/audit"):
        page.goto(live_server.base_url + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > 390:
            wider[path] = width
    # Nothing pushes the page wider than the phone: the filter bar wraps, a wide table scrolls in its own box.
    assert not wider, wider
    page.goto(live_server.base_url + "/console/enterprises")
    assert page.eval_on_selector(".table", "e => getComputedStyle(e).overflowX") == "auto"
