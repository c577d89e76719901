"""Staff console as staff meet it: an expired page or login in plain words, work kept across a new login, audit
actions in Chinese, deletes refused on the list page itself."""

from __future__ import annotations

import json
import re
from html import unescape

from wxapp_backend.audit import SYSTEM, Actor, audit
from wxapp_backend.auth import tokens
from wxapp_backend.db import session_scope


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def _expire_login(client, app) -> None:
    """The console login runs out in Redis (its 12 hours are up) while the browser keeps its cookie."""
    with client.session_transaction("/console/") as sess:
        sid = sess["sid"]
    tokens.revoke(app.extensions["wxapp"].redis, "console", sid)


def _draft(page: str) -> dict | None:
    found = re.search(r'<script type="application/json" id="console-draft">(.*?)</script>', page, re.S)
    return json.loads(unescape(found.group(1))) if found else None


# --- 1. a refused CSRF token, in words a staff member understands -----------------------------------------

def test_an_expired_page_says_what_happened_and_links_back_without_jargon(client, make_staff, console_login, db):
    from wxapp_backend.auth.models import StaffUser

    console_login(make_staff(role="admin"))
    resp = client.post("/console/staff/new", data={"csrf_token": "stale", "username": "newbie", "role": "staff",
                                                   "password": "Secret-123"},
                       headers={"Referer": "http://localhost/console/staff/new"})
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    text = re.sub(r"<[^>]+>", " ", page)
    assert "CSRF" not in text and "csrf" not in text.lower().replace("csrf_failed", ""), text
    assert "页面已过期" in page and "刷新" in page and "没有保存" in page, text
    # A link back to the form the staff member was on (this site's only), not just to the dashboard.
    assert 'id="back-link" href="/console/staff/new"' in page, page
    assert 'data-error="csrf_failed"' in page  # the code stays available for scripts, out of sight
    assert db.query(StaffUser).filter_by(username="newbie").count() == 0

    resp = client.post("/console/staff/new", data={"csrf_token": "stale"},
                       headers={"Referer": "https://evil.example/console/staff/new"})
    assert resp.status_code == 400 and 'id="back-link" href="/console/"' in resp.get_data(as_text=True)


def test_a_login_page_left_open_too_long_comes_back_ready_to_log_in(client, make_staff):
    staff = make_staff()
    client.get("/console/login")
    resp = client.post("/console/login", data={"username": staff.username, "password": staff.plain_password,
                                               "csrf_token": "from-yesterday", "next": "/console/appeals"})
    assert resp.status_code == 400
    page = resp.get_data(as_text=True)
    assert "CSRF" not in page and "登录页面已过期" in page
    # The login form itself again, with the name typed and where to go next kept (never the password).
    assert 'id="login-submit"' in page and f'value="{staff.username}"' in page
    assert 'name="next" value="/console/appeals"' in page and staff.plain_password not in page
    resp = client.post("/console/login", data={"username": staff.username, "password": staff.plain_password,
                                               "csrf_token": _csrf(page), "next": "/console/appeals"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/console/appeals")


# --- 2. a login that ran out while a long form was being filled ---------------------------------------------

def test_a_form_sent_after_the_login_ran_out_comes_back_filled_after_logging_in(client, app, make_staff,
                                                                                console_login):
    from wxapp_backend.knowledge_store.models import KBEntry

    staff = make_staff(role="staff")
    csrf = console_login(staff)
    assert client.get("/console/kb/new").status_code == 200
    _expire_login(client, app)
    answer = "企业可在「一网通办」申请，材料：营业执照、法人身份证。\n咨询电话 021-12345678。" * 20
    form = {"csrf_token": csrf, "id": "policy-rent", "question": "房租补贴怎么申请？", "answer": answer,
            "category": "惠企政策", "from_unanswered": ""}
    resp = client.post("/console/kb/new", data=form, headers={"Referer": "http://localhost/console/kb/new"})
    assert resp.status_code == 302
    assert "/console/login?next=/console/kb/new" in resp.headers["Location"], resp.headers["Location"]
    with session_scope() as s:
        assert s.get(KBEntry, "policy-rent") is None  # nothing sent on the staff member's behalf

    login_page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert 'id="draft-kept"' in login_page and "暂存" in login_page
    resp = client.post("/console/login", data={"username": staff.username, "password": staff.plain_password,
                                               "csrf_token": _csrf(login_page), "next": "/console/kb/new"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/console/kb/new")

    page = client.get("/console/kb/new").get_data(as_text=True)
    draft = _draft(page)
    assert draft is not None and 'id="draft-restored"' in page, page[:2000]
    fields = dict(draft["fields"])
    assert draft["action"] == "/console/kb/new"
    assert fields["answer"] == answer and fields["question"] == "房租补贴怎么申请？"
    assert "csrf_token" not in fields
    # Still not saved: the staff member checks the form and sends it.
    with session_scope() as s:
        assert s.get(KBEntry, "policy-rent") is None
    # Filled once: the next visit is the plain form.
    assert _draft(client.get("/console/kb/new").get_data(as_text=True)) is None


def test_a_kept_form_never_holds_a_password_and_goes_back_to_the_page_it_came_from(client, app, make_staff,
                                                                                   console_login, redis_client):
    admin = make_staff(role="admin")
    target = make_staff(role="staff")
    csrf = console_login(admin)
    _expire_login(client, app)
    # The password form is POST-only and lives on the account's edit page (the Referer).
    resp = client.post(f"/console/staff/{target.id}/password", data={"csrf_token": csrf, "password": "Brand-new-9"},
                       headers={"Referer": f"http://localhost/console/staff/{target.id}/edit"})
    assert resp.status_code == 302
    assert f"next=/console/staff/{target.id}/edit" in resp.headers["Location"], resp.headers["Location"]
    for key in redis_client.scan_iter("console:draft:*"):
        assert b"Brand-new-9" not in redis_client.get(key)
    login_page = client.get(resp.headers["Location"]).get_data(as_text=True)
    client.post("/console/login", data={"username": admin.username, "password": admin.plain_password,
                                        "csrf_token": _csrf(login_page), "next": f"/console/staff/{target.id}/edit"})
    page = client.get(f"/console/staff/{target.id}/edit").get_data(as_text=True)
    assert "Brand-new-9" not in page


def test_a_colleague_logging_in_on_the_same_browser_never_sees_the_kept_form(client, app, make_staff,
                                                                            console_login):
    first = make_staff(role="staff")
    csrf = console_login(first)
    _expire_login(client, app)
    resp = client.post("/console/kb/new", data={"csrf_token": csrf, "id": "x1", "question": "内部草稿问题",
                                                "answer": "只给本人看的草稿"})
    assert resp.status_code == 302
    other = make_staff(role="staff")
    login_page = client.get("/console/login?next=/console/kb/new").get_data(as_text=True)
    client.post("/console/login", data={"username": other.username, "password": other.plain_password,
                                        "csrf_token": _csrf(login_page), "next": "/console/kb/new"})
    page = client.get("/console/kb/new").get_data(as_text=True)
    assert _draft(page) is None and "只给本人看的草稿" not in page


# --- 3. audit actions in Chinese ---------------------------------------------------------------------------

def test_the_audit_log_names_actions_in_chinese_and_keeps_the_code(client, make_staff, console_login):
    admin = make_staff(role="admin")
    console_login(admin)
    with session_scope() as s:
        audit(s, Actor("staff", admin.id), "binding.merged", None, enterprise_id=1)
        audit(s, Actor("staff", admin.id), "appeal.assigned", None, number="SQ1")
        audit(s, SYSTEM, "registration.cancelled", None)
        audit(s, Actor("staff", admin.id), "enterprises.exported", None, format="xlsx")
        audit(s, SYSTEM, "something.new_kind", None)
    page = client.get("/console/audit").get_data(as_text=True)
    cells = re.findall(r'<td class="audit-action"[^>]*>(.*?)</td>', page, re.S)
    shown = [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", c)).strip() for c in cells]
    shown = shown[:5]  # newest first; the login's own row (工作人员登录) comes after
    assert shown[0] == "something.new_kind", shown  # unknown: the code itself, once
    assert shown[1].startswith("导出企业") and "enterprises.exported" in shown[1], shown
    assert shown[2].startswith("报名") and "取消" in shown[2], shown
    assert shown[3].startswith("诉求") and "交办" in shown[3] and "appeal.assigned" in shown[3], shown
    assert shown[4].startswith("合并") and "binding.merged" in shown[4], shown
    assert 'title="binding.merged"' in page


def test_every_action_the_code_writes_has_a_chinese_label():
    """A new audit action added without its label would show as a bare code again."""
    import ast
    import pathlib

    from wxapp_backend.console.audit_log import action_label

    root = pathlib.Path(__file__).resolve().parents[2] / "wxapp_backend"
    missing = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "audit" and len(node.args) >= 3:
                arg = node.args[2]  # a code, or `"a.b" if ... else "a.c"` (f-strings are checked by family above)
                for c in (arg.body, arg.orelse) if isinstance(arg, ast.IfExp) else (arg,):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str):
                        if action_label(c.value) == c.value:
                            missing.append(f"{path.name}: {c.value}")
    assert not missing, missing


# --- 4. a delete that cannot happen, on the list page ------------------------------------------------------

def test_deleting_a_building_with_enterprises_explains_on_the_list_page(client, make_staff, console_login,
                                                                        make_grid, make_building, make_enterprise):
    from wxapp_backend.enterprises.models import Building

    grid = make_grid(name="新华网格")
    busy = make_building(name="新华大厦", grid_id=grid.id)
    make_building(name="番禺大楼", address="番禺路 8 号", grid_id=grid.id)
    make_enterprise(building_id=busy.id)
    make_enterprise(building_id=busy.id)
    csrf = console_login(make_staff(role="admin"))
    listing = f"http://localhost/console/buildings?grid_id={grid.id}&q=%E6%96%B0%E5%8D%8E"  # q=新华
    resp = client.post(f"/console/buildings/{busy.id}/delete", data={"csrf_token": csrf},
                       headers={"Referer": listing})
    assert resp.status_code == 409
    page = resp.get_data(as_text=True)
    assert re.search(r'id="delete-error"[^>]*>[^<]*还登记着 2 家企业', page), page
    # The list itself, as it was filtered: the search box still holds 新华, the other building is filtered out.
    assert 'id="building-table"' in page and 'value="新华"' in page and "番禺大楼" not in page
    assert "新华大厦" in page and 'class="topbar"' in page and "请求没有完成" not in page
    with session_scope() as s:
        assert s.get(Building, busy.id) is not None


def test_deleting_a_grid_with_buildings_explains_on_the_list_page(client, make_staff, console_login, make_grid,
                                                                  make_building):
    from wxapp_backend.enterprises.models import Grid

    grid = make_grid(name="淮海网格")
    make_building(grid_id=grid.id)
    csrf = console_login(make_staff(role="admin"))
    resp = client.post(f"/console/grids/{grid.id}/delete", data={"csrf_token": csrf})
    assert resp.status_code == 409
    page = resp.get_data(as_text=True)
    assert re.search(r'id="delete-error"[^>]*>[^<]*还有 1 栋楼宇', page), page
    assert 'id="grid-table"' in page and "淮海网格" in page and "请求没有完成" not in page
    with session_scope() as s:
        assert s.get(Grid, grid.id) is not None


# --- bad input keeps what was typed ------------------------------------------------------------------------

def test_a_refused_edit_of_a_category_keeps_what_was_typed_in_that_category_row(client, make_staff, console_login):
    from wxapp_backend.appeals.models import AppealCategory
    from wxapp_backend.appeals.services import ensure_catalogue

    csrf = console_login(make_staff(role="admin"))
    with session_scope() as s:
        ensure_catalogue(s)
        s.flush()
        tax = s.query(AppealCategory).filter_by(code="tax").one()
        tax_id, keywords = tax.id, list(tax.keywords)
    typed = "税,发票,退税,出口退税新政"
    resp = client.post("/console/appeal-categories", data={"csrf_token": csrf, "id": str(tax_id), "name": "税务",
                                                           "department": "税务所", "promised_days": "0",
                                                           "keywords": typed, "active": "true"})
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    form = re.search(rf'<form[^>]*id="category-{tax_id}".*?</form>', page, re.S)
    assert form is not None, page
    # The row being edited holds the keywords as typed and says what is wrong, right there.
    assert f'value="{typed}"' in form.group(0) and 'value="0"' in form.group(0), form.group(0)
    assert re.search(rf'id="category-error-{tax_id}"[^>]*>[^<]*承诺办结工作日', page), page
    with session_scope() as s:
        assert s.get(AppealCategory, tax_id).keywords == keywords


# --- empty states and paging -------------------------------------------------------------------------------

def test_the_activity_list_tells_an_empty_category_and_a_page_past_the_end_from_no_activities(
        client, make_staff, console_login, make_activity):
    def empty(url: str) -> str:
        found = re.search(r'id="no-activities">(.*?)</td>', client.get(url).get_data(as_text=True), re.S)
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip() if found else ""

    console_login(make_staff(role="staff"))
    assert empty("/console/activities").startswith("还没有活动")
    make_activity(category="vertical_marathon", title="登高赛")
    # A category with nothing in it is not "no activities": it names the category and offers the whole list.
    assert empty("/console/activities?category=fitness") == "“健身”类别下还没有活动。 查看全部活动"
    # A page past the end (an old link) says so and leads back to the first page.
    assert empty("/console/activities?page=5") == "这一页已经没有内容了（共 1 个活动）。 回到第一页"
    page = client.get("/console/activities").get_data(as_text=True)
    assert "登高赛" in page and 'id="no-activities"' not in page


def test_a_binding_decision_that_cannot_be_made_is_explained_on_the_users_list(client, make_staff, console_login,
                                                                             make_enterprise, make_user):
    from wxapp_backend.auth.models import User
    from wxapp_backend.enterprises import services as ent_services

    e = make_enterprise(name="新华科技有限公司")
    applicant = make_user(nickname="小王", enterprise_id=e.id, binding_state="pending")
    colleague = make_staff(role="staff")
    csrf = console_login(make_staff(role="staff"))
    listing = client.get("/console/users?state=pending").get_data(as_text=True)
    assert f'id="approve-{applicant.id}"' in listing
    with session_scope() as s:  # a colleague got there first
        ent_services.decide_binding(s, Actor("staff", colleague.id, role="staff"), applicant.id, approve=True,
                                    enterprise_id=e.id)
    resp = client.post(f"/console/users/{applicant.id}/binding",
                       data={"csrf_token": csrf, "approve": "0", "enterprise_id": str(e.id), "reason": "材料不全",
                             "state": "pending", "q": "", "page": "1"})
    assert resp.status_code == 409
    page = resp.get_data(as_text=True)
    # The pending list itself (its tab kept), saying what happened, not a bare error page.
    assert re.search(r'id="decision-error"[^>]*>[^<]*已经处理过了', page), page
    assert "请求没有完成" not in page and "没有待核实的绑定申请" in page
    with session_scope() as s:
        assert s.get(User, applicant.id).binding_state == "verified"

    # A reason the service refuses (too short): the users list again, with the reason as typed in its box.
    resp = client.post(f"/console/users/{applicant.id}/binding/revoke",
                       data={"csrf_token": csrf, "reason": "走", "state": "", "q": "小王", "page": "1"})
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert re.search(r'id="decision-error"[^>]*>[^<]*解除原因', page), page
    assert re.search(r'<form[^>]*binding/revoke[^>]*>.*?name="reason" value="走"', page, re.S), page
    assert 'value="小王"' in page and "请求没有完成" not in page
    with session_scope() as s:
        assert s.get(User, applicant.id).binding_state == "verified"


def test_a_list_link_with_a_filter_that_does_not_hold_is_the_list_saying_so(client, make_staff, console_login,
                                                                           make_enterprise, make_building):
    """An edited or stale link (page=abc, a category no longer offered): the list without that condition and a
    note on what was left out, with a 4xx; it was a bare error page whose only way on was the dashboard."""
    from wxapp_backend.appeals.services import ensure_catalogue

    with session_scope() as s:
        ensure_catalogue(s)
    make_enterprise(name="静安咖啡有限公司")
    make_building(name="静安大厦")
    console_login(make_staff(role="admin"))
    for url, table, word in (("/console/enterprises?q=静安&page=abc", "enterprise-table", "页码"),
                             ("/console/buildings?q=静安&grid_id=abc", "building-table", "网格"),
                             ("/console/users?state=zzz", None, "绑定状态"),
                             ("/console/appeals?q=灯&category=zzz", None, "类别"),
                             ("/console/appeals?page=0&status=", None, "页码")):
        resp = client.get(url)
        page = resp.get_data(as_text=True)
        assert resp.status_code == 422, (url, resp.status_code)
        assert "请求没有完成" not in page and 'id="filter-error"' in page, (url, page)
        assert word in re.search(r'id="filter-error"[^>]*>([^<]*)<', page).group(1), url
        assert "没有用上" in page, url
        if table:
            assert f'id="{table}"' in page and 'value="静安"' in page, url
    assert 'value="灯"' in client.get("/console/appeals?q=灯&category=zzz").get_data(as_text=True)
    # An export never drops a condition: a file of everything is not what was asked for.
    assert client.get("/console/enterprises/export.csv?building_id=abc").status_code == 422
