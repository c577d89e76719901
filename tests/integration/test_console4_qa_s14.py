"""Staff console pages (pass 14): stale page links, refusals said on the page they came from, typed input kept."""

from __future__ import annotations

import re

import pytest

from wxapp_backend.audit import SYSTEM, audit
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store import services as kb_services
from wxapp_backend.knowledge_store.cli import load_default_if_empty
from wxapp_backend.knowledge_store.models import UnansweredQuestion


@pytest.fixture
def kb(app_ctx):
    load_default_if_empty()
    runtime = kb_services.get_runtime()
    runtime.check_interval = 0
    return runtime


def _text(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


# --- 1. the audit log's page past the end -----------------------------------------------------------------

def test_an_audit_log_page_past_the_end_is_not_said_to_have_no_records(client, make_staff, console_login):
    """An old link to page 3 of the log (a filter narrowed since, a bookmark): it said 没有符合条件的记录 with no
    pager, as if nothing matched, while the log had plenty. It says the page is past the end, with a way back."""
    console_login(make_staff(role="admin"))
    with session_scope() as s:
        for i in range(3):
            audit(s, SYSTEM, "demo.seeded", None, n=i)
    resp = client.get("/console/audit", query_string={"action": "demo.", "page": "3"})
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert "没有符合条件的记录" not in page, _text(page)
    assert "这一页已经没有内容了（共 3 条）" in page
    assert re.search(r'href="/console/audit\?[^"]*page=1', page), page
    # A filter that matches nothing still says so.
    page = client.get("/console/audit", query_string={"action": "nothing."}).get_data(as_text=True)
    assert "没有符合条件的记录" in page


# --- 2. the unanswered queue's buttons refused: said on the queue, the staff member kept on their page -----

def test_a_mistyped_entry_number_for_a_phrasing_is_said_on_the_queue_page(client, kb, make_staff, console_login, db):
    """“加为问法” with an entry number mistyped (or an entry taken offline meanwhile): a bare error page titled
    页面不存在, the queue and its page gone. The queue comes back at the tab and page the button was on, saying what
    went wrong and which number was typed; the question is still waiting."""
    csrf = console_login(make_staff(role="staff"))
    db.add_all([UnansweredQuestion(norm=f"q{i}", text=f"没人答过的问题{i}号", count=60 - i) for i in range(55)])
    db.commit()
    asked = db.query(UnansweredQuestion).filter_by(norm="q52").one()
    queue = "http://localhost/console/kb/unanswered?status=open&page=2"
    resp = client.post(f"/console/kb/unanswered/{asked.id}/phrasing", data={"csrf_token": csrf, "entry_id": "no-such-entry"},
                       headers={"Referer": queue})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 404
    assert "页面不存在" not in page and "第 2 / 2 页" in page and "没人答过的问题52号" in page, _text(page)
    refusal = re.search(r'id="queue-refusal">([^<]*)<', page)
    assert refusal is not None and "没有找到" in refusal.group(1) and "no-such-entry" in refusal.group(1), _text(page)
    db.expire_all()
    assert db.get(UnansweredQuestion, asked.id).status == "open"

    # Ignored by a colleague meanwhile: said on the queue too, not an error page.
    db.get(UnansweredQuestion, asked.id).status = "ignored"
    db.commit()
    resp = client.post(f"/console/kb/unanswered/{asked.id}/ignore", data={"csrf_token": csrf},
                       headers={"Referer": queue})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 409 and 'id="queue-refusal"' in page and "已被处理" in page, _text(page)
    assert "第 2 / 2 页" in page or "第 1 / 2 页" in page  # 54 still open: the page it was on, or the last


# --- 3. numbers typed with a Chinese input method's full-width digits ----------------------------------------

def _submit(user_id: int, content: str) -> tuple[int, str]:
    from wxapp_backend.appeals import services as appeal_services

    with session_scope() as s:
        appeal, _ = appeal_services.submit_appeal(s, user_id, appeal_services.Intake(
            content=content, contact_name="张三", contact_phone="13800138000"))
        return appeal.id, appeal.number


def _wide(text: str) -> str:
    """As a Chinese input method in full-width mode types it: ＳＱ２０２５…－０００７."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def test_an_appeal_number_typed_in_full_width_finds_the_master_appeal(client, make_user, make_staff, console_login,
                                                                      db):
    """合并到主诉求 with the number typed in full-width mode (ＳＱ２０２６１２０６－０００１) was refused with
    “没有编号为 ＳＱ… 的诉求” while that appeal was on screen: the same number, other digits."""
    from wxapp_backend.appeals.models import Appeal

    csrf = console_login(make_staff(role="admin"))
    user = make_user()
    master_id, master_number = _submit(user.id, "楼道灯坏了，麻烦修一下")
    child_id, _ = _submit(user.id, "我们楼道的灯也坏了")
    version = db.get(Appeal, child_id).version
    resp = client.post(f"/console/appeals/{child_id}/action", data={
        "csrf_token": csrf, "action": "merge", "version": str(version), "master": _wide(master_number)})
    assert resp.status_code == 302, _text(resp.get_data(as_text=True))
    db.expire_all()
    assert db.get(Appeal, child_id).master_id == master_id
    # The appeal's number in the id's place works the same way (１２ is 12).
    third_id, _ = _submit(user.id, "三楼的灯也不亮")
    resp = client.post(f"/console/appeals/{third_id}/action", data={
        "csrf_token": csrf, "action": "merge", "version": str(db.get(Appeal, third_id).version),
        "master": _wide(str(master_id))})
    assert resp.status_code == 302, _text(resp.get_data(as_text=True))
    db.expire_all()
    assert db.get(Appeal, third_id).master_id == master_id


def test_a_test_recipient_number_typed_in_full_width_is_saved(client, make_user, make_staff, console_login, db):
    """我的测试接收人 is a plain text box: 用户编号 typed as ２３ was refused as “应为正整数”."""
    from wxapp_backend.notices.broadcast_models import StaffTestRecipient

    staff = make_staff(role="staff")
    csrf = console_login(staff)
    user = make_user()
    resp = client.post("/console/notices/test-recipient", data={"csrf_token": csrf, "user_id": _wide(str(user.id))})
    assert resp.status_code == 302
    page = client.get("/console/notices").get_data(as_text=True)
    assert "测试接收人已保存" in page, _text(page)
    assert db.get(StaffTestRecipient, staff.id).user_id == user.id


# --- 4. a long name does not widen the page ---------------------------------------------------------------

def _overflow(page: str, tmp_path, width: int) -> list[str]:
    """The elements of `page` that reach past a `width`-pixel window, as headless Chromium lays it out with the
    console's stylesheet."""
    import shutil
    import subprocess
    from pathlib import Path

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(chromium).exists(), "Chromium is not installed: run .ci/install-browser"
    css = (Path(__file__).resolve().parents[2] / "static" / "console.css").as_uri()
    page = re.sub(r'href="/static/console\.css[^"]*"', f'href="{css}"', page)
    probe = ("<script>addEventListener('load', () => document.body.dataset.wide = [...document.querySelectorAll('*')]"
             ".filter(e => e.getBoundingClientRect().right > innerWidth + 1)"
             ".map(e => e.tagName + ':' + (e.name || e.className)).join(' '));</script>")
    html = tmp_path / f"page{len(list(tmp_path.iterdir()))}.html"
    html.write_text(page.replace("</body>", probe + "</body>"))
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},800",
                          "--virtual-time-budget=3000", "--dump-dom", html.as_uri()],
                         capture_output=True, text=True, timeout=90).stdout
    found = re.search(r'data-wide="([^"]*)"', dom)
    assert found is not None, dom[-2000:]
    return found.group(1).split()


def test_a_long_building_name_does_not_widen_the_list_pages_or_the_activity_form(
        client, make_staff, make_building, console_login, tmp_path):
    """The 楼宇 filter menu is as wide as its longest option: one building named at length (a full address in
    English, up to 100 characters) pushed the appeals and enterprises lists past a 700-pixel window, which then
    scrolled sideways; the activity form's three date-time boxes in a row did the same."""
    console_login(make_staff(role="admin"))
    make_building(name=("SHANGHAI " + "INTERNATIONAL " * 6 + "FINANCE CENTRE")[:100])
    for url in ("/console/appeals", "/console/enterprises", "/console/activities/new"):
        page = client.get(url).get_data(as_text=True)
        assert _overflow(page, tmp_path, 700) == [], url


# --- 5. 退出 clicked in a second tab after logging out in the first -----------------------------------------

def test_logging_out_again_from_another_tab_is_not_an_expired_page_error(client, make_staff, console_login):
    """Two tabs open; 退出 in the first, then 退出 in the second (its form's token belonged to the ended login): the
    second said 页面已过期…这次提交没有保存…把填写的内容复制下来 — an error about unsaved work, for a logout that had
    already happened. It lands on the login page, logged out."""
    csrf = console_login(make_staff(role="staff"))
    assert client.post("/console/logout", data={"csrf_token": csrf}).status_code == 302
    resp = client.post("/console/logout", data={"csrf_token": csrf})
    assert resp.status_code == 302, _text(resp.get_data(as_text=True))
    assert resp.headers["Location"].endswith("/console/login")
    page = client.get("/console/login").get_data(as_text=True)
    assert "页面已过期" not in page and "退出" in _text(page)
    assert client.get("/console/").status_code == 302  # still logged out


def test_a_logout_without_the_token_still_cannot_end_a_live_login(client, make_staff, console_login):
    """Another site's form posting to /console/logout while the staff member is logged in stays refused."""
    console_login(make_staff(role="staff"))
    resp = client.post("/console/logout", data={"csrf_token": "forged"})
    assert resp.status_code == 400
    assert client.get("/console/").status_code == 200


# --- 6. an audit-log link with an 操作人类型 the menu lacks --------------------------------------------------

def test_an_audit_link_with_an_unknown_actor_type_names_the_choices_in_chinese(client, make_staff, console_login):
    """An old or edited link (actor_type=robot) was answered “操作人类型只能是：staff、user、system”: codes staff never
    see in the menu, which says 工作人员、用户、系统. The choices are named as the menu names them."""
    console_login(make_staff(role="admin"))
    resp = client.get("/console/audit", query_string={"actor_type": "robot"})
    assert resp.status_code == 400
    message = re.search(r'id="filter-error">([^<]*)<', resp.get_data(as_text=True)).group(1)
    assert "操作人类型只能是" in message and "工作人员" in message and "系统" in message, message
    assert "staff、user" not in message


# --- 7. the appeals list found by the enterprise's name as the list shows it --------------------------------

def test_the_appeals_search_finds_an_enterprise_by_the_name_the_list_shows(client, make_user, make_enterprise,
                                                                           make_staff, console_login, db):
    """The list shows each appeal's enterprise by its file's name today; the search looked only at the name copied
    onto the appeal when it was sent. After the file was renamed (a name corrected, 更名), typing the name on the
    screen found nothing: 没有符合条件的诉求."""
    from wxapp_backend.enterprises.models import Enterprise

    console_login(make_staff(role="admin"))
    firm = make_enterprise(name="上海旧名称科技有限公司")
    user = make_user(enterprise_id=firm.id, binding_state="verified")
    appeal_id, number = _submit(user.id, "发票开不出来")
    row = db.get(Enterprise, firm.id)
    row.name = "上海新名称科技有限公司"
    db.commit()
    page = client.get("/console/appeals", query_string={"q": "新名称"}).get_data(as_text=True)
    assert number in page and "上海新名称科技有限公司" in page, _text(page)
    # "%" typed is still a character, not a wildcard.
    assert number not in client.get("/console/appeals", query_string={"q": "新%称"}).get_data(as_text=True)


# --- 8. 同意并改派 refused: the department typed stays in its box ----------------------------------------------

def test_a_refused_reroute_keeps_the_department_typed(client, make_user, make_staff, console_login):
    """同意退单并改派 to the department that returned it (请改派到另一个部门) came back with the box empty, and the
    不同意 form's 说明 likewise: typed again from nothing. The refused form's text is back in its box."""
    csrf = console_login(make_staff(role="admin"))
    appeal_id, _ = _submit(make_user().id, "楼道灯坏了，麻烦修一下")
    for action, extra in (("accept", {}), ("assign", {"department": "城运中心"}), ("return", {"reason": "不归我们管"})):
        resp = client.post(f"/console/appeals/{appeal_id}/action", data={"csrf_token": csrf, "action": action, **extra})
        assert resp.status_code == 302, (action, _text(resp.get_data(as_text=True)))
    page = client.get(f"/console/appeals/{appeal_id}").get_data(as_text=True)
    return_id = re.search(r'name="return_id" value="(\d+)"', page).group(1)
    resp = client.post(f"/console/appeals/{appeal_id}/action", data={
        "csrf_token": csrf, "action": "decide_return", "return_id": return_id, "accept": "1", "department": "城运中心"})
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert "请改派到另一个部门" in page
    box = re.search(r'<input name="department" required list="departments"[^>]*>', page).group(0)
    assert 'value="城运中心"' in box, box


# --- 9. the knowledge-base list with a search the box cannot hold ---------------------------------------------

def test_a_knowledge_base_link_with_an_overlong_search_shows_the_list_with_a_note(client, kb, make_staff,
                                                                                  console_login):
    """A link with a whole chat message as its search (longer than the box's 300 characters, pasted into the
    address bar or sent by a colleague): a bare 请求没有完成 page. As on the other lists, the search is left out with
    a note and the list is there, its other filters applied."""
    console_login(make_staff(role="staff"))
    resp = client.get("/console/kb/", query_string={"q": "停车" * 200, "show": "all"})
    page = resp.get_data(as_text=True)
    assert "请求没有完成" not in page, _text(page)
    note = re.search(r'id="filter-error">([^<]*)<', page)
    assert note is not None and "搜索不能超过 300 个字" in note.group(1) and "没有用上" in note.group(1)
    assert "<code>appeal-how-to-submit</code>" in page or re.search(r"共 [1-9]\d* 条", page), _text(page)
    assert 'value="all" selected' in page
