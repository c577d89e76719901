"""Sixteenth QA pass (ent6): import refusals by row, contacts who left, a metrics period ending on a date."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from wxapp_backend.audit import Actor
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import importer
from wxapp_backend.enterprises.models import Enterprise

SHANGHAI = ZoneInfo("Asia/Shanghai")

ADMIN = Actor("staff", 1, role="admin")


def code(n: int) -> str:
    return demo_credit_code("91310112", n)


# --- 1. every refusal of an import row names the row -------------------------------------------------


def test_an_import_row_whose_code_is_an_orphaned_retired_file_is_refused_by_row_and_column(
    app_ctx, make_enterprise
):
    """A retired duplicate whose kept file was deleted: the refusal said which code, not which row of the file."""
    orphan = make_enterprise(name="未申科技", credit_code=code(41))
    with session_scope() as s:
        s.execute(
            Enterprise.__table__.update()
            .where(Enterprise.id == orphan.id)
            .values(retired_at=datetime(2026, 1, 1, tzinfo=UTC))
        )
    data = f"企业名称,统一社会信用代码\n上海甲有限公司,{code(42)}\n未申科技,{code(41)}\n".encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv", data)
    assert not report.ok and len(report.errors) == 1, report.errors
    problem = report.errors[0]
    assert (problem.row, problem.column) == (3, "统一社会信用代码"), problem
    assert str(problem).startswith("第 3 行「统一社会信用代码」") and "已被删除" in str(problem)
    assert "没有导入任何数据" in report.summary()


# --- 2. a contact who left is no longer listed as one ------------------------------------------------


def _left_user(client, make_user, make_enterprise, user_token):
    e = make_enterprise(name="上海离职测试科技有限公司")
    u = make_user(
        nickname="小王",
        phone="13800138000",
        enterprise_id=e.id,
        binding_state="verified",
        role="enterprise_contact",
    )
    r = client.delete("/api/v1/me/enterprise", headers=user_token(u))
    assert r.status_code == 200 and r.get_json()["binding_state"] == "none"
    return e, u


def test_a_contact_who_left_is_not_shown_as_an_enterprise_contact(
    client, make_user, make_enterprise, user_token, make_staff, console_login, staff_headers
):
    """After leaving, the users page still called them 企业联系人 (their role stayed), and the staff API said
    role enterprise_contact: a list of contacts built from it named people who had left."""
    # The page shows when they left in Beijing time: from 16:00 UTC on its date is not UTC's (the test read UTC's)
    days = {datetime.now(SHANGHAI).strftime("%Y-%m-%d")}
    e, u = _left_user(client, make_user, make_enterprise, user_token)
    days.add(datetime.now(SHANGHAI).strftime("%Y-%m-%d"))  # (left just before midnight)
    staff = make_staff(role="admin")
    console_login(staff)
    page = client.get("/console/users").get_data(as_text=True)
    row = page.split(f'id="user-{u.id}"')[1].split("</tr>")[0]
    assert "企业联系人" not in row, row
    # history: it says they left, where from and when
    assert "已解除绑定" in row and e.name in row and any(day in row for day in days), row
    h = staff_headers(staff)
    items = client.get("/api/v1/staff/users", headers=h).get_json()["items"]
    assert [i["role"] for i in items if i["id"] == u.id] == ["white_collar"], items
    assert client.get("/api/v1/me", headers=user_token(u)).get_json()["role"] == "white_collar"
    detail = client.get(f"/api/v1/staff/enterprises/{e.id}", headers=h).get_json()
    assert detail["users"] == []


def test_a_contact_unbound_by_staff_is_not_shown_as_an_enterprise_contact(
    client, make_user, make_enterprise, make_staff, console_login, db
):
    e = make_enterprise(name="上海解绑测试科技有限公司")
    u = make_user(nickname="小李", enterprise_id=e.id, binding_state="verified", role="enterprise_contact")
    token = console_login(make_staff(role="admin"))
    r = client.post(
        f"/console/users/{u.id}/binding/revoke", data={"csrf_token": token, "reason": "企业来函，已离职"}
    )
    assert r.status_code == 302, r.get_data(as_text=True)
    db.expire_all()
    assert db.scalar(select(User.role).where(User.id == u.id)) == "white_collar"
    row = client.get("/console/users").get_data(as_text=True).split(f'id="user-{u.id}"')[1].split("</tr>")[0]
    assert "企业联系人" not in row and "已解除绑定" in row and e.name in row, row


# --- 3. metrics?to=<a date> counts that day --------------------------------------------------------------


def test_metrics_to_a_date_includes_that_day(client, make_user, make_staff, staff_headers):
    """to=2025-10-31 was read as that day's midnight: appeals of 31 October fell out of "October"."""
    from wxapp_backend.appeals import services as appeals
    from wxapp_backend.appeals.calendar import TZ

    user = make_user()
    for when in (
        datetime(2025, 10, 1, 0, 0, tzinfo=TZ),
        datetime(2025, 10, 31, 23, 59, tzinfo=TZ),
        datetime(2025, 11, 1, 0, 0, tzinfo=TZ),
    ):
        with session_scope() as s:
            appeals.submit_appeal(
                s,
                user.id,
                appeals.Intake(
                    content=f"税控盘坏了，发票开不出来（{when:%m%d}）",
                    contact_name="张三",
                    contact_phone="13800138000",
                ),
                now=when,
            )
    h = staff_headers(make_staff(role="admin"))
    body = client.get("/api/v1/staff/appeals/metrics?from=2025-10-01&to=2025-10-31", headers=h).get_json()
    assert body["submitted"] == 2, body
    assert body["end"].startswith("2025-11-01T00:00:00") or body["end"].startswith("2025-10-31T16:00:00"), (
        body
    )
    # an explicit time keeps the half-open period it says
    body = client.get(
        "/api/v1/staff/appeals/metrics?from=2025-10-01T00:00:00&to=2025-10-31T00:00:00", headers=h
    ).get_json()
    assert body["submitted"] == 1, body
    # one day, from=to as dates, is that day
    body = client.get("/api/v1/staff/appeals/metrics?from=2025-10-31&to=2025-10-31", headers=h).get_json()
    assert body["submitted"] == 1, body
    doc = client.get("/api/v1/openapi.json").get_json()["paths"]["/api/v1/staff/appeals/metrics"]["get"]
    assert "当天" in str(doc), doc


def test_contacts_of_a_deleted_file_are_no_longer_contacts(
    client, make_user, make_enterprise, make_staff, console_login, db
):
    e = make_enterprise(name="上海删除测试科技有限公司")
    u = make_user(nickname="小赵", enterprise_id=e.id, binding_state="verified", role="enterprise_contact")
    token = console_login(make_staff(role="admin"))
    assert client.post(f"/console/enterprises/{e.id}/delete", data={"csrf_token": token}).status_code == 302
    db.expire_all()
    assert db.scalar(select(User.role).where(User.id == u.id)) == "white_collar"
    row = client.get("/console/users").get_data(as_text=True).split(f'id="user-{u.id}"')[1].split("</tr>")[0]
    assert "企业联系人" not in row and "企业档案删除" in row and e.name in row, row


# --- 4. two staff editing one file: the second save does not silently put back what the first changed ---------


def _form_fields(page: str) -> dict[str, str]:
    """The values a browser would send for the page's enterprise form (inputs, selected options, textareas)."""
    from html.parser import HTMLParser

    form = page.split('class="form" id="')[1].split("</form>")[0]
    out: dict[str, str] = {}

    class P(HTMLParser):
        select = textarea = None

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "input" and a.get("name"):
                out[a["name"]] = a.get("value") or ""
            elif tag == "select":
                self.select = a["name"]
                out[self.select] = ""
            elif tag == "option" and self.select and "selected" in a:
                out[self.select] = a.get("value") or ""
            elif tag == "textarea":
                self.textarea = a["name"]
                out[self.textarea] = ""

        def handle_endtag(self, tag):
            if tag == "select":
                self.select = None
            elif tag == "textarea":
                self.textarea = None

        def handle_data(self, data):
            if self.textarea:
                out[self.textarea] += data

    P().feed(form)
    return out


def _second_browser(app, staff):
    import re

    other = app.test_client()
    page = other.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    r = other.post(
        "/console/login",
        data={"username": staff.username, "password": staff.plain_password, "csrf_token": token},
    )
    assert r.status_code == 302
    return other


def test_a_save_from_a_page_loaded_before_a_colleagues_save_is_refused_not_written_over(
    app, client, make_enterprise, make_staff, console_login, db
):
    e = make_enterprise(name="上海并发编辑科技有限公司", contact_phone="13800138000", industry="")
    console_login(make_staff(role="staff"))
    other = _second_browser(app, make_staff(role="staff"))
    mine = _form_fields(client.get(f"/console/enterprises/{e.id}/edit").get_data(as_text=True))
    theirs = _form_fields(other.get(f"/console/enterprises/{e.id}/edit").get_data(as_text=True))
    # the colleague corrects the phone and saves first
    r = other.post(f"/console/enterprises/{e.id}/edit", data={**theirs, "contact_phone": "13900139000"})
    assert r.status_code == 302, r.get_data(as_text=True)
    # this staff member, from the page loaded before, fills in the industry
    r = client.post(f"/console/enterprises/{e.id}/edit", data={**mine, "industry": "信息技术"})
    assert r.status_code == 409, r.status_code
    page = r.get_data(as_text=True)
    assert "其他同事修改" in page and "13900139000" in page, page
    db.expire_all()
    row = db.get(Enterprise, e.id)
    assert (row.contact_phone, row.industry) == ("13900139000", ""), (row.contact_phone, row.industry)
    # what they typed is still in the form; saved again from it (after checking), it is written
    again = _form_fields(page)
    assert again["industry"] == "信息技术"
    r = client.post(f"/console/enterprises/{e.id}/edit", data={**again, "contact_phone": "13900139000"})
    assert r.status_code == 302, r.get_data(as_text=True)
    db.expire_all()
    row = db.get(Enterprise, e.id)
    assert (row.contact_phone, row.industry) == ("13900139000", "信息技术")
    # a double click (the same save sent twice) is no conflict
    r = client.post(f"/console/enterprises/{e.id}/edit", data={**again, "contact_phone": "13900139000"})
    assert r.status_code == 302


def test_a_building_saved_from_a_stale_page_is_refused_too(
    app, client, make_building, make_grid, make_staff, console_login, db
):
    from wxapp_backend.enterprises.models import Building

    grid = make_grid(name="第一网格")
    b = make_building(name="新华大厦", address="新华路1号")
    console_login(make_staff(role="staff"))
    other = _second_browser(app, make_staff(role="staff"))
    mine = _form_fields(client.get(f"/console/buildings/{b.id}/edit").get_data(as_text=True))
    theirs = _form_fields(other.get(f"/console/buildings/{b.id}/edit").get_data(as_text=True))
    assert (
        other.post(f"/console/buildings/{b.id}/edit", data={**theirs, "grid_id": str(grid.id)}).status_code
        == 302
    )
    r = client.post(f"/console/buildings/{b.id}/edit", data={**mine, "address": "新华路2号"})
    assert r.status_code == 409
    page = r.get_data(as_text=True)
    assert "其他同事修改" in page and "第一网格" in page.split('id="edit-conflict"')[1], page
    db.expire_all()
    row = db.get(Building, b.id)
    assert (row.grid_id, row.address) == (grid.id, "新华路1号")
    again = _form_fields(page)
    assert (
        client.post(f"/console/buildings/{b.id}/edit", data={**again, "grid_id": str(grid.id)}).status_code
        == 302
    )
    db.expire_all()
    assert db.get(Building, b.id).address == "新华路2号"


def test_a_grid_saved_from_a_stale_page_is_refused_too(app, client, make_grid, make_staff, console_login, db):
    from wxapp_backend.enterprises.models import Grid

    g = make_grid(name="第二网格", specialist_name="王专员")
    console_login(make_staff(role="staff"))
    other = _second_browser(app, make_staff(role="staff"))
    mine = _form_fields(client.get(f"/console/grids/{g.id}/edit").get_data(as_text=True))
    theirs = _form_fields(other.get(f"/console/grids/{g.id}/edit").get_data(as_text=True))
    assert (
        other.post(f"/console/grids/{g.id}/edit", data={**theirs, "specialist_name": "李专员"}).status_code
        == 302
    )
    r = client.post(f"/console/grids/{g.id}/edit", data={**mine, "note": "含新华路北段"})
    assert r.status_code == 409 and "李专员" in r.get_data(as_text=True).split('id="edit-conflict"')[1]
    db.expire_all()
    assert (db.get(Grid, g.id).specialist_name, db.get(Grid, g.id).note) == ("李专员", "")
