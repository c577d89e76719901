"""A form sent after the console login ran out, in headless Chromium (QA pass 13): after logging in again the
staff member is back on the page with the form filled by console.js (never sent for them) and a note; a box they
unticked stays unticked; a record changed meanwhile is not filled over, and the note shows the text to copy.

The login runs out server-side, as in the non-browser tests of this feature: the console tokens are revoked in
Redis while the browser keeps its cookie (and with it the page's CSRF token)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import text

from tests.e2e.helpers import count_rows

pytestmark = pytest.mark.e2e

NOTE = "已电话联系企业张经理：\n1. 路灯已报修，编号 BX-0042；\n2. 约定周五上午再回访。"


def _login(page, password: str) -> None:
    page.wait_for_selector("#login-submit")
    page.fill("#username", "admin")
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("#login-submit")


def _log_in_first(page, server) -> None:
    page.goto(server.base_url + "/console/login")
    _login(page, server.admin_password)
    assert urlsplit(page.url).path == "/console/", page.url


def _expire_login(server, database) -> None:
    """The admin's console login runs out in Redis (its hours are up); the browser keeps its cookie."""
    import redis

    from wxapp_backend.auth import tokens

    with database.session_scope() as s:
        admin_id = s.execute(text("SELECT id FROM staff_users WHERE username = 'admin'")).scalar_one()
    client = redis.Redis.from_url(server.service.redis_url())
    try:
        assert tokens.revoke_subject(client, "console", admin_id) >= 1
    finally:
        client.close()


def _send_and_log_in_again(page, server, submit_selector: str, back_to: str, *, mistype: bool = False) -> None:
    """Send the form with the login gone: the login page, saying the text is kept; log in; back on `back_to`.
    `mistype`: a wrong password first, which must lose neither the kept text nor the way back."""
    with page.expect_navigation():
        page.click(submit_selector)
    here = urlsplit(page.url)
    assert here.path == "/console/login", page.url
    assert parse_qs(here.query).get("next") == [back_to], page.url
    assert "暂存" in page.locator("#draft-kept").inner_text()
    if mistype:
        _login(page, server.admin_password + "-typo")
        assert "用户名或密码不正确" in page.inner_text("[role=alert]")
        assert "暂存" in page.locator("#draft-kept").inner_text()
    _login(page, server.admin_password)
    assert urlsplit(page.url).path == back_to, page.url
    page.wait_for_selector("#draft-restored")


def _make_appeal(database) -> int:
    from wxapp_backend.appeals import services as appeal_services
    from wxapp_backend.auth.models import User

    with database.session_scope() as s:
        user = User(openid="o-qa13-console3-" + datetime.now(UTC).strftime("%H%M%S%f"))
        s.add(user)
        s.flush()
        appeal, _ = appeal_services.submit_appeal(s, user.id, appeal_services.Intake(
            content="园区门口路灯不亮，晚上下班很危险", contact_name="张经理", contact_phone="13800138000"))
        return appeal.id


def _events(database, appeal_id: int) -> int:
    with database.session_scope() as s:
        return s.execute(text("SELECT count(*) FROM appeal_events WHERE appeal_id = :a"), {"a": appeal_id}).scalar_one()


# --- 1. typed, login ran out, sent, logged in again: filled, not sent, with a note -----------------------------

def test_a_kb_entry_sent_after_the_login_ran_out_comes_back_filled_not_sent(live_server, browser, posts, database):
    from playwright.sync_api import expect

    page, log = browser
    _log_in_first(page, live_server)
    page.goto(live_server.base_url + "/console/kb/new")
    answer = "企业可在「一网通办」申请房租补贴。\n材料：营业执照、法人身份证、租赁合同。\n咨询电话 021-12345678。"
    page.fill("input[name=id]", "qa13-rent-aid")
    page.fill("input[name=question]", "房租补贴怎么申请？")
    page.fill("textarea[name=answer]", answer)
    _expire_login(live_server, database)

    _send_and_log_in_again(page, live_server, "#kb-save", "/console/kb/new")
    posts_after_login = len(posts)

    expect(page.locator("input[name=id]")).to_have_value("qa13-rent-aid")
    expect(page.locator("input[name=question]")).to_have_value("房租补贴怎么申请？")
    expect(page.locator("textarea[name=answer]")).to_have_value(answer)  # line breaks and all
    expect(page.locator("#draft-restored")).to_contain_text("还没有提交")
    # Only filled: no POST since the login, the URL is the form's, and the entry is not in the database.
    page.wait_for_load_state("networkidle")
    assert posts[posts_after_login:] == [], posts
    assert urlsplit(page.url).path == "/console/kb/new"
    with database.session_scope() as s:
        assert s.execute(text("SELECT count(*) FROM kb_entries WHERE id = 'qa13-rent-aid'")).scalar_one() == 0

    # The staff member checks it and sends it themselves: it is saved then.
    with page.expect_navigation():
        page.click("#kb-save")
    with database.session_scope() as s:
        assert s.execute(text("SELECT answer FROM kb_entries WHERE id = 'qa13-rent-aid'")).scalar_one() == answer
    # Filled once: the next visit is the plain form.
    page.goto(live_server.base_url + "/console/kb/new")
    expect(page.locator("textarea[name=answer]")).to_have_value("")
    assert page.locator("#draft-restored").count() == 0
    assert not log.non_loopback(), log.non_loopback()
    assert not [m for m in log.console_errors if "favicon" not in m], log.console_errors


def test_an_appeal_note_comes_back_in_its_own_form_only(live_server, browser, posts, database):
    from playwright.sync_api import expect

    page, log = browser
    appeal_id = _make_appeal(database)
    detail = f"/console/appeals/{appeal_id}"
    _log_in_first(page, live_server)
    page.goto(live_server.base_url + detail)
    page.fill("#action-note textarea[name=note]", NOTE)
    _expire_login(live_server, database)
    events = _events(database, appeal_id)

    _send_and_log_in_again(page, live_server, "#action-note button[type=submit]", detail)

    expect(page.locator("#action-note textarea[name=note]")).to_have_value(NOTE)
    # 催办 has a field named "note" too, posting to the same address: its hidden action differs, it stays empty.
    expect(page.locator("#action-urge input[name=note]")).to_have_value("")
    expect(page.locator("#draft-restored")).to_contain_text("填回")
    page.wait_for_load_state("networkidle")
    assert not [p for p in posts if p.endswith("/action")][1:], posts  # the one sent with the login gone
    assert _events(database, appeal_id) == events  # nothing written on the appeal
    assert not [m for m in log.console_errors if "favicon" not in m], log.console_errors


# --- 2. a box the staff member unticked stays unticked ---------------------------------------------------------

def test_an_unticked_box_stays_unticked_and_a_ticked_one_ticked(live_server, browser, posts, database):
    from playwright.sync_api import expect

    page, log = browser
    _log_in_first(page, live_server)
    page.goto(live_server.base_url + "/console/activities/new")
    waitlist = page.locator("input[type=checkbox][name=waitlist_enabled]")
    approval = page.locator("input[type=checkbox][name=requires_approval]")
    expect(waitlist).to_be_checked()  # the page's default for a new activity, or unticking it would prove nothing
    expect(approval).not_to_be_checked()
    start = (datetime.now(UTC) + timedelta(days=7)).replace(hour=4, minute=0, second=0, microsecond=0)
    page.fill("input[name=title]", "午间瑜伽体验课")
    page.fill("textarea[name=description]", "自带瑜伽垫。\n名额有限，先到先得。")
    page.fill("input[name=starts_at]", start.strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=ends_at]", (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M"))
    page.fill("input[name=capacity]", "20")
    waitlist.uncheck()
    approval.check()
    activities = count_rows(live_server.service.database_url, "activities")
    _expire_login(live_server, database)

    _send_and_log_in_again(page, live_server, "form.form button[type=submit]", "/console/activities/new",
                           mistype=True)

    expect(page.locator("input[name=title]")).to_have_value("午间瑜伽体验课")
    expect(page.locator("textarea[name=description]")).to_have_value("自带瑜伽垫。\n名额有限，先到先得。")
    expect(page.locator("input[name=capacity]")).to_have_value("20")
    expect(waitlist).not_to_be_checked()
    expect(approval).to_be_checked()
    page.wait_for_load_state("networkidle")
    assert count_rows(live_server.service.database_url, "activities") == activities
    # The wrong password's page is a 401, which Chromium logs; nothing else may be.
    assert not [m for m in log.console_errors if "favicon" not in m and "401" not in m], log.console_errors


# --- 3. the record changed in between: not filled over, the text in the note to copy ---------------------------

def test_an_appeal_changed_meanwhile_is_not_filled_and_the_note_shows_the_text(live_server, browser, posts,
                                                                               database):
    from playwright.sync_api import expect

    page, log = browser
    appeal_id = _make_appeal(database)
    detail = f"/console/appeals/{appeal_id}"
    _log_in_first(page, live_server)
    page.goto(live_server.base_url + detail)
    page.fill("#action-note textarea[name=note]", NOTE)
    _expire_login(live_server, database)
    with page.expect_navigation():
        page.click("#action-note button[type=submit]")
    assert urlsplit(page.url).path == "/console/login", page.url
    # Meanwhile a colleague acts on the appeal: its version moves on.
    with database.session_scope() as s:
        s.execute(text("UPDATE appeals SET version = version + 1 WHERE id = :a"), {"a": appeal_id})
    sent_before = len(posts)
    _login(page, live_server.admin_password)
    assert urlsplit(page.url).path == detail, page.url
    note = page.locator("#draft-restored")
    expect(note).to_be_visible()

    expect(page.locator("#action-note textarea[name=note]")).to_have_value("")
    # The note says so (it does not claim the form was filled) and shows the text, ready to copy, unfolded.
    expect(note).not_to_contain_text("已为您把重新登录前填写的内容填回")
    expect(note).to_contain_text("已有变动")
    kept = note.locator(".draft-value").filter(has_text="BX-0042")
    expect(kept).to_be_visible()
    assert kept.inner_text() == NOTE
    page.wait_for_load_state("networkidle")
    assert posts[sent_before:] == ["/console/login"], posts  # the login only: nothing sent for the staff member
    assert not [m for m in log.console_errors if "favicon" not in m], log.console_errors


@pytest.mark.parametrize("changed", [False, True], ids=["unchanged", "saved-by-a-colleague"])
def test_a_kb_entry_edit_is_filled_back_only_over_the_revision_it_was_typed_on(live_server, browser, posts,
                                                                                database, changed):
    from playwright.sync_api import expect

    page, log = browser
    entry = f"qa13-edit-{'changed' if changed else 'same'}"
    from wxapp_backend.knowledge_store.models import KBEntry

    with database.session_scope() as s:
        s.add(KBEntry(id=entry, question="稳岗补贴怎么申请", answer="在一网通办申报。"))
    edit = f"/console/kb/{entry}/edit"
    _log_in_first(page, live_server)
    page.goto(live_server.base_url + edit)
    typed = "在一网通办申报，材料：营业执照、社保缴费记录。\n2026 年起按季度发放。"
    page.fill("textarea[name=answer]", typed)
    _expire_login(live_server, database)
    with page.expect_navigation():
        page.click("#kb-save")
    assert urlsplit(page.url).path == "/console/login", page.url
    if changed:  # a colleague saves the entry meanwhile: the revision the form carries is now old
        with database.session_scope() as s:
            row = s.get(KBEntry, entry)
            row.answer, row.revision = "同事改过的答案", row.revision + 1
    _login(page, live_server.admin_password)
    assert urlsplit(page.url).path == edit, page.url
    note = page.locator("#draft-restored")
    expect(note).to_be_visible()

    if changed:
        expect(page.locator("textarea[name=answer]")).to_have_value("同事改过的答案")
        expect(note).to_contain_text("已有变动")
        expect(note.locator(".draft-value").filter(has_text="社保缴费记录")).to_be_visible()
    else:
        expect(page.locator("textarea[name=answer]")).to_have_value(typed)
        expect(note).to_contain_text("还没有提交")
    page.wait_for_load_state("networkidle")
    with database.session_scope() as s:
        saved = s.execute(text("SELECT answer FROM kb_entries WHERE id = :i"), {"i": entry}).scalar_one()
    assert saved == ("同事改过的答案" if changed else "在一网通办申报。")
    assert not [m for m in log.console_errors if "favicon" not in m], log.console_errors
