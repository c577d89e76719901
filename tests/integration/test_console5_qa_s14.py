"""Staff console (pass 14, console5): what a refused form says and keeps, and pager links that keep the page size.

- 申请延期 with “abc” or “2.5” in 工作日 says the number is wrong, not that the box was left empty;
- the enterprises and users lists' pager keeps per_page (下一页 went back to 20 a page) and the filters;
- a refused 受理 / 交办 / 改分类 comes back with the options chosen still chosen in its menus;
- the appeal-categories page says why a save with an `id` that names no category was refused.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import (  # noqa: F401  (headless Chromium)
    browser,
    chromium_executable,
    database,
    live_server,
    posts,
)
from tests.e2e.test_console3_qa_s13 import (  # noqa: F401  (pass 13's login-ran-out steps)
    _expire_login,
    _log_in_first,
    _send_and_log_in_again,
)
from tests.integration.test_appeals2_qa_s11 import at, w  # noqa: F401  (pass 11's fixture)
from wxapp_backend.appeals.models import AppealExtension
from wxapp_backend.auth.models import BindingState

MONDAY = at(2025, 11, 3, 10, 0)


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


def _form(page: str, action: str) -> str:
    found = re.search(rf'<form[^>]*id="action-{action}".*?</form>', page, re.S)
    assert found is not None, _text(page)
    return found.group(0)


def _selected(form: str, name: str) -> list[str]:
    select = re.search(rf'<select name="{name}">(.*?)</select>', form, re.S)
    assert select is not None, form
    return re.findall(r'<option value="([^"]*)"\s*selected', select.group(1))


# --- 1. 申请延期 with a 工作日 that is not a whole number ---------------------------------------------------------

@pytest.mark.parametrize("typed", ["abc", "2.5", "-1"])
def test_an_extension_with_days_that_are_not_a_whole_number_says_so(w, db, client, console_login, typed):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    csrf = console_login(w.admin)
    resp = client.post(f"/console/appeals/{appeal_id}/action", data={
        "csrf_token": csrf, "action": "request_extension", "working_days": typed, "reason": "需现场核查"})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422, _text(page)
    assert "请填写延期工作日数" not in page
    assert "延期应为 1-30 个工作日" in page
    assert f'value="{typed}"' in page and "需现场核查" in page
    assert db.query(AppealExtension).filter_by(appeal_id=appeal_id).count() == 0
    # A box left empty is still said to be empty.
    resp = client.post(f"/console/appeals/{appeal_id}/action", data={
        "csrf_token": csrf, "action": "request_extension", "working_days": " ", "reason": "需现场核查"})
    assert resp.status_code == 422 and "请填写延期工作日数" in resp.get_data(as_text=True)


# --- 2. the pager keeps the page size ------------------------------------------------------------------------

def _pager_links(page: str) -> list[str]:
    nav = re.search(r'<nav class="pager".*?</nav>', page, re.S)
    assert nav is not None, _text(page)
    return [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', nav.group(0))]


def test_the_enterprises_pager_keeps_per_page_and_the_filters(client, make_staff, console_login, make_enterprise):
    console_login(make_staff(role="staff"))
    for i in range(12):
        make_enterprise(name=f"页码测试企业{i:02d}有限公司", industry="软件")
    page = client.get("/console/enterprises", query_string={"q": "页码测试", "industry": "软件", "per_page": "5",
                                                            "page": "2"}).get_data(as_text=True)
    assert "第 2 / 3 页" in page, _text(page)
    links = _pager_links(page)
    assert len(links) == 2
    for link in links:
        assert "per_page=5" in link and "industry=" in link and "q=" in link, links
    # The next page, followed, is still five a page.
    page = client.get(links[1]).get_data(as_text=True)
    assert "第 3 / 3 页" in page and page.count("页码测试企业") == 2, _text(page)
    # The default size is not spelt out in every link.
    page = client.get("/console/enterprises", query_string={"q": "页码测试", "per_page": "5"}).get_data(as_text=True)
    assert "per_page=5" in _pager_links(page)[0]
    # The search box keeps it too.
    assert '<input type="hidden" name="per_page" value="5">' in page


def test_the_users_pager_and_decisions_keep_per_page(client, make_staff, console_login, make_user, make_enterprise):
    csrf = console_login(make_staff(role="staff"))
    enterprise = make_enterprise()
    users = [make_user(nickname=f"翻页用户{i:02d}", binding_state=BindingState.PENDING,
                       pending_enterprise_id=enterprise.id) for i in range(7)]
    page = client.get("/console/users", query_string={"q": "翻页用户", "per_page": "3", "page": "2"}
                      ).get_data(as_text=True)
    assert "第 2 / 3 页" in page, _text(page)
    assert all("per_page=3" in link and "q=" in link for link in _pager_links(page)), _pager_links(page)
    # A decision made on that page comes back to it: same page, same size.
    assert '<input type="hidden" name="per_page" value="3">' in page
    resp = client.post(f"/console/users/{users[0].id}/binding", data={
        "csrf_token": csrf, "approve": "1", "enterprise_id": str(enterprise.id), "q": "翻页用户", "page": "2",
        "per_page": "3"})
    assert resp.status_code == 302 and "per_page=3" in resp.headers["Location"], resp.headers.get("Location")


# --- 3. a refused 受理 / 交办 / 改分类 keeps what was chosen in its menus -------------------------------------------

def test_a_refused_accept_keeps_the_category_chosen(w, db, client, console_login):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    csrf = console_login(w.admin)
    stale = w.appeal(appeal_id).version - 1
    resp = client.post(f"/console/appeals/{appeal_id}/action", data={
        "csrf_token": csrf, "action": "accept", "category": "talent", "version": str(stale)})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 409, _text(page)
    assert _selected(_form(page, "accept"), "category") == ["talent"]
    # The 改分类 form, not the one refused, shows the appeal's own category.
    assert _selected(_form(page, "set_category"), "category") != ["talent"]


def test_a_refused_assign_keeps_the_department_and_handler_chosen(w, db, client, console_login):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    csrf = console_login(w.admin)
    stale = w.appeal(appeal_id).version - 1
    resp = client.post(f"/console/appeals/{appeal_id}/action", data={
        "csrf_token": csrf, "action": "assign", "department": "税务所", "handler_id": str(w.tax.id),
        "version": str(stale)})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 409, _text(page)
    form = _form(page, "assign")
    assert _selected(form, "department") == ["税务所"], form
    assert _selected(form, "handler_id") == [str(w.tax.id)], form
    # Not refused: the page shows the appeal's own department as before.
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    assert _selected(_form(page, "assign"), "handler_id") == []


def test_a_refused_category_change_keeps_the_category_chosen(w, db, client, console_login):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    csrf = console_login(w.admin)
    own = _selected(_form(client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True), "set_category"),
                    "category")
    assert own != ["talent"]
    stale = w.appeal(appeal_id).version - 1
    resp = client.post(f"/console/appeals/{appeal_id}/action", data={
        "csrf_token": csrf, "action": "set_category", "category": "talent", "version": str(stale)})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 409, _text(page)
    assert _selected(_form(page, "set_category"), "category") == ["talent"]


# --- 4. the catalogue page says why an edit of a category it does not show was refused ------------------------

def test_a_category_save_naming_no_category_says_why(client, make_staff, console_login):
    csrf = console_login(make_staff(role="admin"))
    client.get("/console/appeal-categories")
    resp = client.post("/console/appeal-categories", data={
        "csrf_token": csrf, "id": "99999", "name": "不存在的类别", "department": "税务所", "promised_days": "5",
        "active": "true"})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 404
    assert "没有这个类别" in page, _text(page)


# --- 5. the kept-values note of a notice draft sent after the login ran out: words, not codes ------------------

def test_the_kept_values_note_shows_the_words_of_menus_and_boxes_not_their_codes(client, make_staff, app, db):
    """The note's list (to copy from when the form is not filled) showed policy, activity, on, 3 for the notice
    composer's menus and boxes: the values are sent with their field's name, for console.js to word them."""
    from wxapp_backend.auth import tokens

    staff = make_staff(role="staff")
    page = client.get("/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    login = {"username": staff.username, "password": staff.plain_password, "csrf_token": csrf}
    assert client.post("/console/login", data=login).status_code == 302
    page = client.get("/console/notices/new").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    with client.session_transaction("/console/") as sess:
        tokens.revoke(app.extensions["wxapp"].redis, "console", sess["sid"])
    resp = client.post("/console/notices/new", data={"csrf_token": csrf, "kind": "activity", "title": "稳岗补贴申报开始",
                                                     "audience_all": "on"})
    assert resp.status_code in (302, 401, 400), resp.status_code
    page = client.get("/console/login").get_data(as_text=True)
    login["csrf_token"] = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/console/login", data={**login, "next": "/console/notices/new"}).status_code == 302
    page = client.get("/console/notices/new").get_data(as_text=True)
    kept = re.findall(r'<pre class="draft-value" data-name="([^"]+)">([^<]*)</pre>', page)
    assert ("kind", "activity") in kept and ("title", "稳岗补贴申报开始") in kept and ("audience_all", "on") in kept, page


@pytest.mark.e2e
def test_in_the_browser_the_kept_values_note_words_menus_and_boxes(live_server, browser, posts, database):  # noqa: F811
    page, log = browser
    _log_in_first(page, live_server)
    page.goto(live_server.base_url + "/console/notices/new")
    page.select_option("select[name=kind]", "activity")
    page.fill("input[name=title]", "稳岗补贴申报开始")
    page.check("input[type=checkbox][name=audience_all]")
    _expire_login(live_server, database)

    _send_and_log_in_again(page, live_server, "form.form button[type=submit]", "/console/notices/new")

    kept = [page.locator(".draft-value").nth(i).text_content() for i in range(page.locator(".draft-value").count())]
    assert "活动通知" in kept and "稳岗补贴申报开始" in kept and "已勾选：全部用户" in kept, kept
    assert "activity" not in kept and "on" not in kept, kept
    assert page.locator("select[name=kind]").input_value() == "activity"  # the form is filled as before
    assert not [m for m in log.console_errors if "favicon" not in m], log.console_errors
