"""The staff console walked in headless Chromium as a person uses it (QA pass 16, browser3): every page and link
answers, no JavaScript error, every input has a label, nothing is wider than a 375px phone; the appeal, knowledge
base, activity and notice journeys clicked through, with flash messages shown once and Back not sending again."""

from __future__ import annotations

import json
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
        appeal, _ = appeal_services.submit_appeal(
            s,
            user.id,
            appeal_services.Intake(content=content, contact_name="张经理", contact_phone="13800138000"),
        )
        return appeal.id


def _add_user(database) -> None:
    from wxapp_backend.auth.models import User
    from wxapp_backend.enterprises import models as _enterprise_models  # noqa: F401  (User's relationships)

    with database.session_scope() as s:
        s.add(User(openid="o-qa16-browser3-reader-" + datetime.now(UTC).strftime("%H%M%S%f")))


def _status(database, appeal_id: int) -> str:
    with database.session_scope() as s:
        return s.execute(text("SELECT status FROM appeals WHERE id = :a"), {"a": appeal_id}).scalar_one()


def _events(database, appeal_id: int) -> int:
    with database.session_scope() as s:
        return s.execute(
            text("SELECT count(*) FROM appeal_events WHERE appeal_id = :a"), {"a": appeal_id}
        ).scalar_one()


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


def test_every_console_page_and_link_answers_without_errors_labels_and_fits_a_phone(
    live_server, browser, database
):
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
            if (
                u.hostname == "127.0.0.1"
                and u.path.startswith(("/console", "/static"))
                and "logout" not in u.path
            ):
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


def test_an_appeal_walked_from_accept_to_resolve_flashes_once_and_back_sends_nothing(
    live_server, browser, posts, database
):
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
    page.eval_on_selector(
        "#action-coordinate input[name=task_days]", "e => { e.removeAttribute('min'); e.value = '0'; }"
    )
    events = _events(database, appeal_id)
    with page.expect_navigation():
        page.click("#action-coordinate button[type=submit]")
    assert _events(database, appeal_id) == events
    # Said as a refusal, not in a done action's words and colours: read out at once, in the warning colour.
    refusal = page.locator(".flash[role=alert]")
    assert "操作未完成" in refusal.inner_text()
    assert page.locator(".flash[role=status]").count() == 0
    assert refusal.evaluate("e => getComputedStyle(e).backgroundColor") != page.evaluate(
        "getComputedStyle(Object.assign(document.body.appendChild(document.createElement('div')),"
        " {className: 'flash'})).backgroundColor"
    )
    assert page.input_value("#action-coordinate input[name=task_department]") == "市容所"
    assert (
        page.input_value("#action-coordinate input[name=task_description]")
        == "请市容所一起到现场查看路灯线路"
    )
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


# --- 3. knowledge base: search, edit, retire; the unanswered queue's one-click actions --------------------------


def _add_unanswered(database, question: str) -> int:
    from wxapp_backend.knowledge_store.models import UnansweredQuestion

    with database.session_scope() as s:
        row = UnansweredQuestion(norm=question, text=question, count=3)
        s.add(row)
        s.flush()
        return row.id


def _kb_row(database, entry_id: str):
    with database.session_scope() as s:
        return s.execute(
            text('SELECT question, answer, "similar", retired FROM kb_entries WHERE id = :i'), {"i": entry_id}
        ).one_or_none()


def _similar(database, entry_id: str) -> list[str]:
    stored = _kb_row(database, entry_id).similar
    return json.loads(stored) if isinstance(stored, str) else list(stored or [])


def test_kb_search_edit_keeps_typing_after_a_refusal_and_retire_asks(live_server, browser, posts, database):
    page, log = browser
    _login(page, live_server)
    page.goto(live_server.base_url + "/console/kb/")
    page.fill("input[name=q]", "研发费用")
    with page.expect_navigation():
        page.click(".toolbar button[type=submit]")
    assert page.input_value("input[name=q]") == "研发费用"  # the search box keeps the words
    first = page.locator("table.table tbody tr").first
    entry_id = first.locator("code").inner_text()
    with page.expect_navigation():
        first.locator("a", has_text="编辑").click()
    assert urlsplit(page.url).path == f"/console/kb/{entry_id}/edit"

    # An empty answer is refused; the new question typed alongside is still in the form.
    page.fill("[name=question]", "研发费用加计扣除怎么享受？（QA16）")
    page.fill("textarea[name=answer]", "")
    with page.expect_navigation():
        page.click("#kb-save")
    assert page.locator("[role=alert]").count() >= 1
    assert page.input_value("[name=question]") == "研发费用加计扣除怎么享受？（QA16）"
    assert _kb_row(database, entry_id).question != "研发费用加计扣除怎么享受？（QA16）"
    page.fill("textarea[name=answer]", "在年度汇算清缴时在电子税务局填报。")
    with page.expect_navigation():
        page.click("#kb-save")
    assert _kb_row(database, entry_id).answer == "在年度汇算清缴时在电子税务局填报。"

    # 下线 asks; cancelling sends nothing.
    page.goto(live_server.base_url + "/console/kb/?q=" + entry_id)
    asked, sent = [], len(posts)
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.locator("tr", has_text=entry_id).locator("button", has_text="下线").click()
    page.wait_for_timeout(300)
    assert asked and "下线" in asked[0], asked
    assert len(posts) == sent and not _kb_row(database, entry_id).retired
    page.once("dialog", lambda d: d.accept())
    with page.expect_navigation():
        page.locator("tr", has_text=entry_id).locator("button", has_text="下线").click()
    assert _kb_row(database, entry_id).retired
    assert not [m for m in _errors(log) if not re.search(r"status of 4(00|09|22)", m)], log.console_errors


def test_the_unanswered_queue_makes_a_new_entry_and_a_new_phrasing_in_one_click(
    live_server, browser, database
):
    page, log = browser
    new_q = "公司注册地址可以用住宅吗（QA16）"
    phrasing_q = "研发加计扣除比例是多少（QA16）"
    new_id, phrasing_id = _add_unanswered(database, new_q), _add_unanswered(database, phrasing_q)
    _login(page, live_server)
    page.goto(live_server.base_url + "/console/kb/unanswered")
    with page.expect_navigation():
        page.locator("tr", has_text=new_q).locator("a", has_text="新建条目").click()
    assert page.input_value("[name=question]") == new_q  # filled from the queue
    page.fill("input[name=id]", "qa16-home-address")
    page.fill("textarea[name=answer]", "住宅一般不能作为注册地址，可咨询园区提供的集中登记地。")
    with page.expect_navigation():
        page.click("#kb-save")
    assert _kb_row(database, "qa16-home-address").question == new_q
    with database.session_scope() as s:
        row = s.execute(
            text("SELECT status, resolved_entry_id FROM kb_unanswered WHERE id = :i"), {"i": new_id}
        ).one()
    assert tuple(row) == ("resolved", "qa16-home-address")

    page.goto(live_server.base_url + "/console/kb/unanswered")
    row = page.locator("tr", has_text=phrasing_q)
    # One click on a suggested entry ...
    suggested = row.locator("form", has=page.locator("button", has_text="加到")).first
    target = suggested.locator("input[name=entry_id]").input_value()
    with page.expect_navigation():
        suggested.locator("button").click()
    assert phrasing_q in _similar(database, target)
    with database.session_scope() as s:
        done = s.execute(
            text("SELECT status FROM kb_unanswered WHERE id = :i"), {"i": phrasing_id}
        ).scalar_one()
    assert done == "resolved"
    assert page.locator(".flash[role=status]").count() == 1
    page.reload()
    assert page.locator(".flash[role=status]").count() == 0
    # ... or an entry typed by its id.
    other_q = "住宅能不能注册公司（QA16）"
    _add_unanswered(database, other_q)
    page.goto(live_server.base_url + "/console/kb/unanswered")
    row = page.locator("tr", has_text=other_q)
    row.get_by_role("textbox", name="条目编号").fill("qa16-home-address")
    with page.expect_navigation():
        row.locator("button", has_text="加为问法").click()
    assert other_q in _similar(database, "qa16-home-address")
    assert not _errors(log), log.console_errors


# --- 4. an activity created and published, its registrations, a notice composed and sent; the reports -----------


def _local(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M")


def test_an_activity_is_created_published_and_its_subscribers_notified(live_server, browser, posts, database):
    from tests.e2e.helpers import count_rows

    page, log = browser
    db_url = live_server.service.database_url
    _login(page, live_server)
    page.goto(live_server.base_url + "/console/activities")
    with page.expect_navigation():
        page.click("text=＋ 新建活动")
    start = datetime.now(UTC) + timedelta(days=10)
    page.select_option("select[name=status]", "published")
    page.fill("input[name=title]", "楼宇音乐会·秋日专场（QA16）")
    page.fill("textarea[name=description]", "大堂钢琴演出，欢迎园区白领。")
    page.fill("input[name=address]", "A 座一楼大堂")
    # The end before the start: refused, and everything typed is still there.
    page.fill("input[name=starts_at]", _local(start))
    page.fill("input[name=ends_at]", _local(start - timedelta(hours=2)))
    page.fill("input[name=capacity]", "80")
    before = count_rows(db_url, "activities")
    with page.expect_navigation():
        page.click("form.form button[type=submit]")
    assert count_rows(db_url, "activities") == before
    assert page.locator(".alert").count() >= 1
    assert page.input_value("input[name=title]") == "楼宇音乐会·秋日专场（QA16）"
    assert page.input_value("textarea[name=description]") == "大堂钢琴演出，欢迎园区白领。"
    assert page.input_value("input[name=address]") == "A 座一楼大堂"
    assert page.input_value("input[name=capacity]") == "80"
    assert page.input_value("select[name=status]") == "published"
    page.fill("input[name=ends_at]", _local(start + timedelta(hours=2)))
    with page.expect_navigation():
        page.dblclick("form.form button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert count_rows(db_url, "activities") == before + 1  # one, for a double click
    with database.session_scope() as s:
        activity_id, status = s.execute(
            text("SELECT id, status FROM activities WHERE title = '楼宇音乐会·秋日专场（QA16）'")
        ).one()
    assert status == "published"

    # Its registrations page, reached from the list, and its 通知订阅者 link.
    page.goto(live_server.base_url + "/console/activities")
    with page.expect_navigation():
        page.click("text=楼宇音乐会·秋日专场（QA16）")
    assert urlsplit(page.url).path == f"/console/activities/{activity_id}/registrations", page.url
    with page.expect_navigation():
        page.click("text=通知订阅者")
    assert page.input_value("select[name=activity_id]") == str(activity_id)
    page.fill("input[name=title]", "音乐会座位充足，欢迎报名")
    page.fill("textarea[name=summary]", "本周五中午 12 点，A 座大堂。")
    page.check("input[name=audience_all]")
    notices = count_rows(db_url, "notices")
    with page.expect_navigation():
        page.click("form.form button.primary")
    assert count_rows(db_url, "notices") == notices + 1
    assert page.locator(".flash[role=status]").count() == 1
    # Nobody to send to yet: the page says so before 确认发布 is clicked, and the refusal reads as one.
    publish = page.get_by_role("button", name="确认发布")
    assert "推送对象为空" in page.inner_text("#publish-empty")
    page.once("dialog", lambda d: d.accept())
    with page.expect_navigation():
        publish.click()
    assert "推送对象为空" in page.locator(".flash[role=alert]").inner_text()
    # The audience widened to every user (one exists now): the note goes and 确认发布 publishes, after asking.
    _add_user(database)
    with page.expect_navigation():
        page.click("text=编辑草稿")
    page.select_option("select[name=registrants_of]", "")
    for box in page.locator("input[name=categories]").all():
        box.uncheck()
    page.check("input[name=audience_all]")
    with page.expect_navigation():
        page.click("form.form button.primary")
    assert page.locator("#publish-empty").count() == 0, page.inner_text("main")
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.accept()))
    with page.expect_navigation():
        publish.click()
    assert asked and "无法撤回" in asked[0], asked
    with database.session_scope() as s:
        assert s.execute(text("SELECT status FROM notices ORDER BY id DESC LIMIT 1")).scalar_one() != "draft"
    # Back to the draft page from history: nothing is published twice.
    sent = len(posts)
    page.go_back()
    page.wait_for_load_state("networkidle")
    assert len(posts) == sent, posts[sent:]
    assert count_rows(db_url, "notices") == notices + 1
    assert not [m for m in _errors(log) if not re.search(r"status of 4(00|09|22)", m)], log.console_errors


def test_a_notice_refused_keeps_what_was_typed(live_server, browser, database):
    from tests.e2e.helpers import count_rows

    page, log = browser
    _login(page, live_server)
    page.goto(live_server.base_url + "/console/notices/new")
    page.fill("input[name=title]", "稳岗补贴申报提醒（QA16）")
    page.fill("textarea[name=summary]", "请于月底前在一网通办申报。")
    page.fill("textarea[name=template_fields]", "thing1=稳岗补贴\nnot a field line")
    before = count_rows(live_server.service.database_url, "notices")
    with page.expect_navigation():
        page.click("form.form button.primary")
    assert count_rows(live_server.service.database_url, "notices") == before
    assert page.locator("[role=alert], .alert").count() >= 1
    assert page.input_value("input[name=title]") == "稳岗补贴申报提醒（QA16）"
    assert page.input_value("textarea[name=summary]") == "请于月底前在一网通办申报。"
    assert page.input_value("textarea[name=template_fields]") == "thing1=稳岗补贴\nnot a field line"
    assert not [m for m in _errors(log) if not re.search(r"status of 4(00|09|22)", m)], log.console_errors


def test_the_reports_open_and_a_week_can_be_chosen(live_server, browser, database):
    page, log = browser
    _make_appeal(database)
    _login(page, live_server)
    page.goto(live_server.base_url + "/console/appeals/report")
    assert page.locator("h1").count() == 1
    week = page.locator("input[name=week]")
    assert week.count() == 1
    with page.expect_navigation():
        page.locator("form", has=week).locator("button").click()
    assert "week=" in page.url
    for link in page.locator("a[href*='.xlsx']").all():
        href = urljoin(page.url, link.get_attribute("href"))
        resp = page.request.get(href)
        assert resp.status == 200 and resp.body()[:2] == b"PK", href
    page.goto(live_server.base_url + "/console/activities/stats")
    assert page.locator("h1").count() == 1
    assert not _errors(log), log.console_errors


# --- 5. after 退出, Back does not show the staff pages again ------------------------------------------------------


def test_back_after_logging_out_does_not_show_the_console(live_server, browser, database):
    page, log = browser
    _make_appeal(database, content="退出后不应再看到的诉求内容（QA16）")
    _login(page, live_server)
    page.goto(live_server.base_url + "/console/appeals")
    assert "退出后不应再看到的诉求内容" in page.inner_text("main")
    with page.expect_navigation():
        page.click("header.topbar button:has-text('退出')")
    page.go_back()
    page.wait_for_load_state("networkidle")
    assert "退出后不应再看到的诉求内容" not in page.content()
    assert urlsplit(page.url).path == "/console/login" or page.locator("#login-submit").count() == 1, page.url
    # The login page, where the crawl above could not go, fits a phone too, and its inputs are labelled.
    page.set_viewport_size({"width": PHONE, "height": 740})
    page.goto(live_server.base_url + "/console/login")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE
    assert not page.evaluate(OFF_SCREEN, PHONE)
    assert not page.evaluate(UNLABELLED)
    assert not _errors(log), log.console_errors
