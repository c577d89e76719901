"""The staff console as staff meet it (QA pass 12): a question before what cannot be taken back, dates in
Shanghai time, the list staff were working on kept after an action, and what was typed kept after a refusal.

Most checks read the HTML through Flask's test client; the browser is used only where JavaScript or layout decide.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from wxapp_backend.db import session_scope


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _form_tag(page: str, action: str) -> str:
    """The opening <form ...> tag of the form posting to `action`."""
    found = re.search(r'<form[^>]*action="' + re.escape(action) + r'"[^>]*>', page, re.S)
    assert found, f"no form posting to {action}"
    return found.group(0)


# --- 1. a question before what cannot be taken back ------------------------------------------------

def test_taking_a_kb_entry_offline_asks_first(client, make_staff, console_login):
    from wxapp_backend.knowledge_store.models import KBEntry

    console_login(make_staff(role="staff"))
    with session_scope() as s:
        s.add(KBEntry(id="qa12-online", question="稳岗补贴怎么申请", answer="在一网通办申报。"))
        s.add(KBEntry(id="qa12-offline", question="旧政策", answer="已废止。", retired=True))
    page = client.get("/console/kb/?show=all").get_data(as_text=True)
    # 下线: the bot stops answering with it at once; a slip of the mouse in a long list must not do that.
    offline = _form_tag(page, "/console/kb/qa12-online/retire")
    assert "data-confirm=" in offline and "下线" in offline, offline
    # 恢复 puts it back: nothing to ask.
    assert "data-confirm" not in _form_tag(page, "/console/kb/qa12-offline/retire")


def test_closing_a_resolved_appeal_asks_first(client, make_user, make_staff, console_login):
    from wxapp_backend.appeals import services as appeal_services

    csrf = console_login(make_staff(role="staff"))
    with session_scope() as s:
        appeal, _ = appeal_services.submit_appeal(s, make_user().id, appeal_services.Intake(
            content="门口路灯不亮", contact_name="张三", contact_phone="13800138000"))
        appeal_id = appeal.id
    for action, extra in (("accept", {}), ("resolve", {"resolution": "已修好"})):
        resp = client.post(f"/console/appeals/{appeal_id}/action", data={"csrf_token": csrf, "action": action, **extra})
        assert resp.status_code == 302, resp.get_data(as_text=True)
    # 关闭 is offered once the enterprise's 7 working days to rate have passed (services.rating_window_ends).
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.appeals.models import Appeal

    with session_scope() as s:
        s.get(Appeal, appeal_id).resolved_at = datetime.now(UTC) - timedelta(days=30)
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    # 关闭 is the end of the loop (no more rework for the enterprise): asked, like 不予受理 and 退单.
    close = re.search(r'<form[^>]*id="action-close"[^>]*>', page).group(0)
    assert "data-confirm=" in close, close


# --- 2. dates in Shanghai time ---------------------------------------------------------------------

def test_merged_enterprise_says_the_shanghai_day_it_was_merged(client, make_enterprise, make_staff, console_login):
    from wxapp_backend.enterprises.models import Enterprise

    keep = make_enterprise(name="上海甲科技有限公司")
    dup = make_enterprise(name="上海甲科技公司")
    # 2026-03-01 20:30 UTC is 2026-03-02 04:30 in Shanghai: the day staff merged it.
    with session_scope() as s:
        s.execute(update(Enterprise).where(Enterprise.id == dup.id).values(
            retired_at=datetime(2026, 3, 1, 20, 30, tzinfo=UTC), merged_into_id=keep.id))
    console_login(make_staff(role="staff"))
    page = client.get(f"/console/enterprises/{dup.id}").get_data(as_text=True)
    note = re.search(r'id="retired-note">(.*?)</p>', page, re.S).group(1)
    assert "2026-03-02" in note and "2026-03-01" not in note, note


# --- 3. the list staff were working on ------------------------------------------------------------

def test_a_binding_decision_returns_to_the_same_search_and_page(client, make_enterprise, make_user, make_staff,
                                                                console_login):
    from wxapp_backend.auth.models import User

    ent = make_enterprise(name="上海示例物流有限公司")
    waiting = [make_user(nickname=f"物流{i:02d}", enterprise_id=ent.id, binding_state="pending")
               for i in range(25)]
    make_user(nickname="别家的申请", enterprise_id=make_enterprise(name="上海乙公司").id, binding_state="pending")
    csrf = console_login(make_staff(role="staff"))
    listing = "/console/users?state=pending&q=%E7%89%A9%E6%B5%81&page=2"  # q=物流
    page = client.get(listing).get_data(as_text=True)
    assert "第 2 / 2 页" in page
    target = next(u for u in waiting if f'id="approve-{u.id}"' in page)
    rejected = next(u for u in waiting if u.id != target.id and f'id="reject-{u.id}"' in page)

    for user, decision in ((target, "1"), (rejected, "0")):
        form = re.search(rf'<form[^>]*action="/console/users/{user.id}/binding"[^>]*>(.*?)</form>', page, re.S)
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(1)))
        assert fields["approve"] in {"0", "1"}
        fields["approve"] = decision
        resp = client.post(f"/console/users/{user.id}/binding", data={**fields, "csrf_token": csrf})
        assert resp.status_code == 302, resp.get_data(as_text=True)
        # Back to page 2 of the 物流 search of pending applications, not to page 1 of everyone's.
        back = resp.headers["Location"]
        assert "q=%E7%89%A9%E6%B5%81" in back and "page=2" in back and "state=pending" in back, back

    with session_scope() as s:
        states = dict(s.execute(select(User.id, User.binding_state).where(User.id.in_([target.id, rejected.id]))).all())
    assert states == {target.id: "verified", rejected.id: "rejected"}


def test_revoking_a_binding_returns_to_the_same_search(client, make_enterprise, make_user, make_staff,
                                                       console_login):
    ent = make_enterprise(name="上海示例物流有限公司")
    user = make_user(nickname="物流小张", enterprise_id=ent.id, binding_state="verified")
    csrf = console_login(make_staff(role="staff"))
    page = client.get("/console/users?state=verified&q=%E5%B0%8F%E5%BC%A0").get_data(as_text=True)  # q=小张
    form = re.search(rf'<form[^>]*action="/console/users/{user.id}/binding/revoke"[^>]*>(.*?)</form>', page,
                     re.S)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(1)))
    resp = client.post(f"/console/users/{user.id}/binding/revoke",
                       data={**fields, "csrf_token": csrf, "reason": "企业来函，已离职"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    back = resp.headers["Location"]
    assert "q=%E5%B0%8F%E5%BC%A0" in back and "state=verified" in back, back


# --- 4. what staff read when a form is refused --------------------------------------------------------

def test_a_mistyped_time_is_explained_in_the_consoles_words(client, make_staff, console_login):
    csrf = console_login(make_staff(role="staff"))
    # A five-digit year typed into the date picker: the browser sends it as it is.
    resp = client.post("/console/activities/new", data={
        "csrf_token": csrf, "category": "concert", "title": "楼宇音乐会", "address": "大堂", "capacity": "20",
        "status": "draft", "starts_at": "20261-12-20T19:00", "ends_at": "2026-12-20T21:00"})
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    errors = " ".join(re.findall(r'class="alert"[^>]*>([^<]*)<', page))
    assert "开始时间格式不对" in errors, errors
    # Staff pick a time in a date-time box: an ISO string with a T and an offset tells them nothing.
    assert "时间时间" not in errors and "+08:00" not in errors and "T09:30" not in errors, errors
    assert 'value="楼宇音乐会"' in page  # and what was typed is still there


def test_a_mistyped_audit_date_is_explained_without_a_stutter(client, make_staff, console_login):
    console_login(make_staff(role="admin"))
    page = client.get("/console/audit?since=2025-13-45").get_data(as_text=True)
    error = re.search(r'id="filter-error">([^<]*)<', page).group(1)
    assert "开始日期格式不对" in error and "日期日期" not in error, error


def test_a_refused_holiday_keeps_what_was_typed(client, make_staff, console_login):
    from wxapp_backend.appeals.models import Holiday

    csrf = console_login(make_staff(role="staff"))
    # A date picker lets a five-digit year through; the page says why and keeps the name and the choice made.
    resp = client.post("/console/appeal-holidays", data={"csrf_token": csrf, "day": "20261-10-08",
                                                         "is_workday": "true", "name": "国庆调休上班"})
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert re.search(r'<div class="alert" role="alert">[^<]*日期', page)
    form = re.search(r'<form[^>]*id="holiday-form".*?</form>', page, re.S).group(0)
    assert 'value="国庆调休上班"' in form
    assert re.search(r'<option value="true"[^>]*selected', form), form
    with session_scope() as s:
        assert s.scalar(select(Holiday.id)) is None


# --- 5. in the browser: what JavaScript and the layout decide ----------------------------------------

def _browser_login(page, base_url: str, password: str) -> None:
    from urllib.parse import urlsplit

    page.goto(base_url + "/console/login")
    page.fill("#username", "admin")
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("#login-submit")
    assert urlsplit(page.url).path == "/console/", page.url


def _activity_statuses(database_url: str) -> dict[str, str]:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(text("SELECT title, status FROM activities")).all())
    finally:
        engine.dispose()


@pytest.mark.e2e
def test_cancelling_an_activity_asks_first(live_server, browser):
    from datetime import timedelta

    from wxapp_backend.activities.services import SHANGHAI

    page, log = browser
    base, db_url = live_server.base_url, live_server.service.database_url
    _browser_login(page, base, live_server.admin_password)
    demo = _activity_statuses(db_url)  # seed-demo's activities, left as they are

    # An activity published for tomorrow, made in the editor as staff make one.
    start = (datetime.now(UTC) + timedelta(days=1)).astimezone(SHANGHAI).replace(hour=12, minute=0)
    page.goto(base + "/console/activities/new")
    page.select_option("select[name=category]", "concert")
    page.select_option("select[name=status]", "published")
    page.fill("input[name=title]", "午间音乐会")
    page.fill("input[name=address]", "一楼大堂")
    page.fill("input[name=starts_at]", start.strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=ends_at]", (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=capacity]", "30")
    with page.expect_navigation():
        page.click("form.form button[type=submit]")
    assert _activity_statuses(db_url) == {**demo, "午间音乐会": "published"}
    activity_id = re.search(r'/console/activities/(\d+)/edit', page.content()).group(1)

    # Changing the status to 已取消 and saving cancels every registration and tells each registrant, and cannot be
    # undone: the browser asks first, and "cancel" keeps the activity as it was.
    page.goto(f"{base}/console/activities/{activity_id}/edit")
    page.select_option("select[name=status]", "cancelled")
    asked = []
    page.once("dialog", lambda d: (asked.append(d.message), d.dismiss()))
    page.click("form.form button[type=submit]")
    page.wait_for_timeout(500)
    assert asked and "午间音乐会" in asked[0] and "不能恢复" in asked[0], asked
    assert _activity_statuses(db_url) == {**demo, "午间音乐会": "published"}
    # Any other edit is saved without a question.
    page.goto(f"{base}/console/activities/{activity_id}/edit")
    page.fill("input[name=address]", "二楼多功能厅")
    questions = []
    page.on("dialog", lambda d: (questions.append(d.message), d.accept()))
    with page.expect_navigation():
        page.click("form.form button[type=submit]")
    assert not questions, questions
    assert not [m for m in log.console_errors if "favicon" not in m], log.console_errors


@pytest.mark.e2e
def test_a_pasted_link_does_not_widen_the_page(live_server, browser):
    page, log = browser
    base = live_server.base_url
    _browser_login(page, base, live_server.admin_password)
    # A link pasted into a standard question (an unbroken 200-character run) stays inside the page.
    link = "https://zwdt.sh.gov.cn/govPortals/bsfw/item/" + "a1b2c3d4e5" * 16
    page.goto(base + "/console/kb/new")
    page.fill("input[name=id]", "qa12-long-link")
    page.fill("input[name=question]", "一网通办的办事指南在哪里看 " + link)
    page.fill("textarea[name=answer]", "请打开 " + link)
    with page.expect_navigation():
        page.click("form.form button[type=submit]")
    for path in ("/console/kb/?q=qa12-long-link&show=all", "/console/kb/qa12-long-link/edit"):
        page.goto(base + path)
        assert link in page.content()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1280, (path, width)
    assert not [m for m in log.console_errors if "favicon" not in m], log.console_errors


def test_the_weekly_report_says_which_days_it_covers_and_keeps_a_mistyped_week(client, make_staff, console_login):
    console_login(make_staff(role="staff"))
    page = client.get("/console/appeals/report?week=2026-W10").get_data(as_text=True)
    # “2026-W10” alone is a code: staff are told the days (Monday to Sunday, Shanghai time).
    assert "2026年3月2日 至 3月8日" in page, re.search(r"<h1>.*?</h1>", page, re.S).group(0)
    assert 'type="week"' in page  # the browser's week picker, not a code to type
    across = client.get("/console/appeals/report?week=2026-W01").get_data(as_text=True)
    assert "2025年12月29日 至 2026年1月4日" in across

    resp = client.get("/console/appeals/report?week=2026-W60")
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    # The report's own page says what is wrong, with the week typed still in its box to correct.
    assert "没有这一周" in page and 'value="2026-W60"' in page and 'id="report-week-error"' in page


def test_deleting_a_building_returns_to_the_filtered_list(client, make_grid, make_building, make_staff, console_login):
    from wxapp_backend.enterprises.models import Building

    grid = make_grid(name="番禺路网格")
    gone = make_building(name="番禺路 100 号旧楼", grid_id=grid.id)
    make_building(name="番禺路 200 号", grid_id=grid.id)
    csrf = console_login(make_staff(role="admin"))
    listing = f"http://localhost/console/buildings?grid_id={grid.id}&q=%E7%95%AA%E7%A6%BA"  # q=番禺
    assert "番禺路 100 号旧楼" in client.get(listing).get_data(as_text=True)
    resp = client.post(f"/console/buildings/{gone.id}/delete", data={"csrf_token": csrf},
                       headers={"Referer": listing})
    assert resp.status_code == 302
    # Back to the grid's buildings and the search the admin was working in, not to every building.
    assert resp.headers["Location"].endswith(f"/console/buildings?grid_id={grid.id}&q=%E7%95%AA%E7%A6%BA"), \
        resp.headers["Location"]
    with session_scope() as s:
        assert s.get(Building, gone.id) is None
    # A Referer naming another site or another page is not followed.
    other = make_building(name="别处的楼", grid_id=grid.id)
    resp = client.post(f"/console/buildings/{other.id}/delete", data={"csrf_token": csrf},
                       headers={"Referer": "https://example.com/console/buildings?x=1"})
    assert resp.headers["Location"].endswith("/console/buildings"), resp.headers["Location"]


def test_triage_shows_the_longest_waiting_first_and_says_how_many_more(client, make_user, make_staff, console_login,
                                                                     monkeypatch):
    from wxapp_backend.appeals import console as appeals_console
    from wxapp_backend.appeals import services as appeal_services

    numbers = []
    for text in ("有个事情想问一下", "麻烦联系我一下", "想找人聊聊情况"):  # nothing the rules can place
        with session_scope() as s:
            appeal, _ = appeal_services.submit_appeal(s, make_user().id, appeal_services.Intake(
                content=text, contact_name="张三", contact_phone="13800138000"))
            assert appeal.needs_triage
            numbers.append(appeal.number)
    console_login(make_staff(role="staff"))
    monkeypatch.setattr(appeals_console, "TRIAGE_PER_PAGE", 2)  # the page lists 100: two stand for them here
    page = client.get("/console/appeals/triage").get_data(as_text=True)
    shown = re.findall(r">(SQ\d{8}-\d{4})</a>", page)
    # The two waiting longest (their deadlines run from submission), not the two newest with the oldest unseen.
    assert shown == numbers[:2], shown
    assert re.search(r"共 3 件[^<]*列出[^<]*2 件", page), re.search(r"<h1>.*?<table", page, re.S).group(0)


def test_an_appeal_queue_page_past_the_end_is_not_called_empty(client, make_user, make_staff, console_login):
    from wxapp_backend.appeals import services as appeal_services

    with session_scope() as s:
        appeal_services.submit_appeal(s, make_user().id, appeal_services.Intake(
            content="楼道灯坏了", contact_name="张三", contact_phone="13800138000"))
    console_login(make_staff(role="staff"))
    # An old link to page 4 (appeals were handled since): not “没有符合条件的诉求” while one is listed on page 1.
    page = client.get("/console/appeals?page=4&open_only=true").get_data(as_text=True)
    assert "没有符合条件的诉求" not in page
    assert "这一页已经没有内容了" in page and 'href="/console/appeals?page=1&amp;open_only=True"' in page, page
