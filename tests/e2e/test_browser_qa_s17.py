"""The staff console in headless Chromium, as a busy centre employee on a 390px phone (QA pass 17, browser): the
notice test send and its test recipient, and what every page asks of the browser before anything is clicked.

One live server and one browser for the module; every wait is for a condition (a navigation, an element)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urljoin, urlsplit

import pytest

from tests.e2e.conftest import BrowserLog, chromium_page
from tests.e2e.test_browser3_qa_s16 import _login

pytestmark = pytest.mark.e2e

PHONE = 390


@pytest.fixture(scope="module")
def phone(live_server, chromium_executable: str) -> Iterator[tuple[object, BrowserLog]]:
    """One logged-in page, 390px wide, for the whole module, with its console errors and page errors logged."""
    with chromium_page(chromium_executable, width=PHONE, prefix="wxapp-e2e-s17-") as (page, log):
        _login(page, live_server)
        yield page, log


def _flashes(page, role: str) -> list[str]:
    return page.locator(f".flash[role={role}]").all_inner_texts()


def _fits(page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE


# --- 1. 发给自己测试 with no test recipient linked: nothing was sent, and the page says so as a refusal ------------


def test_a_test_send_that_was_skipped_reads_as_a_refusal_not_as_done(live_server, phone):
    page, log = phone
    page.goto(live_server.base_url + "/console/notices/new")
    page.fill("input[name=title]", "稳岗补贴申报提醒（QA17 测试发送）")
    page.fill("textarea[name=summary]", "请于月底前在一网通办申报。")
    page.check("input[name=audience_all]")
    with page.expect_navigation():
        page.click("form.form button.primary")
    assert urlsplit(page.url).path.startswith("/console/notices/"), page.url
    with page.expect_navigation():
        page.get_by_role("button", name="发给自己测试").click()
    # Nothing went out: said at once, in the warning colour, and not in a done action's words and colours.
    refusal = _flashes(page, "alert")
    assert refusal and "还没有绑定" in refusal[0], (refusal, _flashes(page, "status"))
    assert not _flashes(page, "status"), _flashes(page, "status")
    _fits(page)
    assert not log.console_errors, log.console_errors


# --- 2. a test recipient refused: the number typed is still in the box, to correct --------------------------------


def test_a_refused_test_recipient_keeps_the_number_typed(live_server, phone):
    page, log = phone
    page.goto(live_server.base_url + "/console/notices")
    box = page.get_by_role("textbox", name="我的测试接收人（用户编号）")
    box.fill("987654")
    with page.expect_navigation():
        page.locator("form", has=box).locator("button[type=submit]").click()
    assert _flashes(page, "alert"), page.inner_text("main")
    assert page.get_by_role("textbox", name="我的测试接收人（用户编号）").input_value() == "987654"
    # Nothing was saved: the next visit shows the recipient as it was (none).
    page.goto(live_server.base_url + "/console/notices")
    assert page.get_by_role("textbox", name="我的测试接收人（用户编号）").input_value() == ""
    _fits(page)
    assert not [m for m in log.console_errors if "status of 422" not in m], log.console_errors


# --- 3. every page names its icon: the browser's guess at /favicon.ico answered 404 into the console log -----------


@pytest.mark.parametrize("path", ["/console/login", "/console/", "/console/appeals"])
def test_every_page_names_an_icon_that_answers(live_server, phone, path):
    page, _log = phone
    page.goto(live_server.base_url + path)
    href = page.get_attribute("link[rel=icon]", "href") if page.locator("link[rel=icon]").count() else None
    assert href, "no <link rel=icon>: Chromium asks for /favicon.ico, gets 404 and logs an error on the console"
    resp = page.request.get(urljoin(page.url, href))
    assert resp.status == 200 and resp.headers["content-type"].startswith("image/"), (href, resp.status)


def test_the_first_tab_stop_skips_the_navigation_to_the_page_itself(live_server, phone):
    """A keyboard user tabbed through the ~25 links of the navigation on every page before reaching its content (on a
    phone the menu fills the screen). The first Tab now shows 跳到正文, and Enter on it moves focus to the page."""
    page, log = phone
    page.goto(live_server.base_url + "/console/appeals")
    page.keyboard.press("Tab")
    focused = page.evaluate("[document.activeElement.textContent.trim(), document.activeElement.getAttribute('href')]")
    assert focused == ["跳到正文", "#content"], focused
    box = page.locator(".skip-link").bounding_box()
    assert box is not None and box["x"] >= 0 and box["y"] >= 0, box  # on screen while focused
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "content"
    page.keyboard.press("Tab")  # the next stop is inside the page, not the navigation
    assert page.evaluate("!!document.activeElement.closest('main')"), page.evaluate(
        "document.activeElement.outerHTML.slice(0, 200)")
