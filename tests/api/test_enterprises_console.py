"""Console pages for enterprises, buildings, grids and users: forms, CSRF, roles, escaping, import/export."""

from __future__ import annotations

import codecs
import io
import re

import openpyxl
from sqlalchemy import select

from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises.models import Building, Enterprise, Grid


def code(n: int) -> str:
    return demo_credit_code("91310105", n)


def test_pages_need_login(client):
    for path in ("/console/enterprises", "/console/buildings", "/console/grids", "/console/users"):
        resp = client.get(path)
        assert resp.status_code == 302 and "/console/login" in resp.headers["Location"]


def test_dept_can_view_but_not_edit(client, make_staff, console_login, make_enterprise):
    token = console_login(make_staff(role="dept"))
    e = make_enterprise(name="只读企业有限公司")
    for path in ("/console/enterprises", "/console/buildings", "/console/grids", f"/console/enterprises/{e.id}"):
        assert client.get(path).status_code == 200, path
    page = client.get("/console/enterprises").get_data(as_text=True)
    assert "只读企业有限公司" in page and "新建企业" not in page
    for nav in ("企业", "楼宇", "网格"):
        assert f">{nav}</a>" in page
    # The list of every user's phone and binding is for staff and admins (a department decides no binding).
    assert ">用户</a>" not in page and client.get("/console/users?state=pending").status_code == 403
    assert client.get("/console/enterprises/new").status_code == 403
    assert client.post("/console/enterprises/new", data={"csrf_token": token, "name": "x公司",
                                                         "credit_code": code(1)}).status_code == 403
    assert client.get("/console/enterprises/import").status_code == 403
    assert client.get("/console/enterprises/export.csv").status_code == 403


def test_staff_cannot_delete(client, make_staff, console_login, make_enterprise, make_building, make_grid):
    token = console_login(make_staff(role="staff"))
    e, b, g = make_enterprise(), make_building(), make_grid()
    assert client.post(f"/console/enterprises/{e.id}/delete", data={"csrf_token": token}).status_code == 403
    assert client.post(f"/console/buildings/{b.id}/delete", data={"csrf_token": token}).status_code == 403
    resp = client.post(f"/console/grids/{g.id}/delete", data={"csrf_token": token})
    assert resp.status_code == 403 and "没有权限" in resp.get_data(as_text=True)


def test_create_enterprise_through_the_form(client, make_staff, console_login, make_building, db):
    token = console_login(make_staff(role="staff"))
    b = make_building(name="新华大厦")
    page = client.get("/console/enterprises/new").get_data(as_text=True)
    assert "新华大厦" in page and 'name="csrf_token"' in page
    resp = client.post("/console/enterprises/new", data={
        "csrf_token": token, "name": "上海甲有限公司", "credit_code": code(2), "building_id": str(b.id),
        "tags": "高新技术、专精特新", "contact_phone": "", "industry": "", "floor_room": "", "tax_bracket": "",
        "contact_name": "", "note": ""})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    e = db.scalar(select(Enterprise))
    assert e.tags == ["高新技术", "专精特新"] and e.building_id == b.id
    db.rollback()
    detail = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "企业档案已建立" in detail and "专精特新" in detail


def test_form_errors_come_back_on_the_form(client, make_staff, console_login, make_enterprise):
    token = console_login(make_staff(role="staff"))
    make_enterprise(name="老企业有限公司", credit_code=code(3))
    resp = client.post("/console/enterprises/new", data={"csrf_token": token, "name": "新企业",
                                                         "credit_code": code(3)})
    assert resp.status_code == 409
    page = resp.get_data(as_text=True)
    assert "老企业有限公司" in page and 'value="新企业"' in page
    bad = code(4)[:-1] + ("0" if code(4)[-1] != "0" else "1")
    resp = client.post("/console/enterprises/new", data={"csrf_token": token, "name": "新企业",
                                                         "credit_code": bad, "contact_phone": "123"})
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert "校验位" in page and 'id="error-contact_phone"' in page


def test_missing_csrf_is_400(client, make_staff, console_login, make_enterprise, make_user):
    console_login(make_staff(role="admin"))
    e = make_enterprise()
    u = make_user(enterprise_id=e.id, binding_state="pending")
    for path, data in ((f"/console/enterprises/{e.id}/delete", {}), ("/console/enterprises/new", {"name": "x"}),
                       (f"/console/users/{u.id}/binding", {"approve": "1"}),
                       ("/console/grids/new", {"name": "网格"})):
        resp = client.post(path, data=data)
        assert resp.status_code == 400 and "页面已过期" in resp.get_data(as_text=True), path
    with session_scope() as s:
        assert s.get(Enterprise, e.id) is not None and s.get(User, u.id).binding_state == "pending"


def test_script_in_names_is_escaped(client, make_staff, console_login, make_enterprise, make_building, make_grid):
    console_login(make_staff(role="admin"))
    evil = "<script>alert(1)</script>"
    g = make_grid(name=evil + "网格")
    b = make_building(name=evil + "楼", grid_id=g.id)
    e = make_enterprise(name=evil + "公司", building_id=b.id, tags=[evil])
    for path in ("/console/enterprises", f"/console/enterprises/{e.id}", f"/console/enterprises/{e.id}/edit",
                 "/console/buildings", "/console/grids", f"/console/buildings/{b.id}/edit"):
        page = client.get(path).get_data(as_text=True)
        assert "<script>alert(1)</script>" not in page, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page, path
    resp = client.get("/console/enterprises")
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]


def test_search_and_pagination(client, make_staff, console_login, make_enterprise):
    console_login(make_staff(role="dept"))
    for i in range(23):
        make_enterprise(name=f"新华科技{i:02d}有限公司", credit_code=code(100 + i))
    make_enterprise(name="别的公司", credit_code=code(200))
    page = client.get("/console/enterprises?q=科技").get_data(as_text=True)
    assert "第 1 / 2 页，共 23 条" in page and "别的公司" not in page
    assert "page=2" in page and "q=%E7%A7%91%E6%8A%80" in page
    page2 = client.get("/console/enterprises?q=科技&page=2").get_data(as_text=True)
    assert page2.count("新华科技") == 3


def test_edit_and_delete_building_and_grid(client, make_staff, console_login, make_grid, make_building, db):
    token = console_login(make_staff(role="admin"))
    g = make_grid(name="一网格")
    b = make_building(name="旧名")
    resp = client.post(f"/console/buildings/{b.id}/edit", data={"csrf_token": token, "name": "新名",
                                                                "address": "新华路 9 号", "grid_id": str(g.id),
                                                                "note": ""})
    assert resp.status_code == 302
    assert db.get(Building, b.id).name == "新名"
    db.rollback()
    resp = client.post(f"/console/grids/{g.id}/delete", data={"csrf_token": token}, follow_redirects=True)
    assert "还有 1 栋楼宇" in resp.get_data(as_text=True) and resp.status_code == 409
    assert client.post(f"/console/buildings/{b.id}/delete", data={"csrf_token": token}).status_code == 302
    assert client.post(f"/console/grids/{g.id}/delete", data={"csrf_token": token}).status_code == 302
    assert db.get(Grid, g.id) is None


def test_grid_form_creates_grid(client, make_staff, console_login, db):
    token = console_login(make_staff(role="staff"))
    assert client.get("/console/grids/new").status_code == 200
    resp = client.post("/console/grids/new", data={"csrf_token": token, "name": "二网格", "specialist_name": "李",
                                                   "specialist_phone": "13900000000", "specialist_staff_id": "",
                                                   "note": ""})
    assert resp.status_code == 302
    assert db.scalar(select(Grid.name)) == "二网格"


def test_users_pending_verify_and_reject(client, make_staff, console_login, make_enterprise, make_user, db):
    token = console_login(make_staff(role="staff"))
    e = make_enterprise(name="核实企业有限公司")
    a = make_user(enterprise_id=e.id, binding_state="pending", nickname="小王")
    b = make_user(enterprise_id=e.id, binding_state="pending", nickname="小李")
    make_user(nickname="白领小张")
    page = client.get("/console/users?state=pending").get_data(as_text=True)
    assert "小王" in page and "小李" in page and "白领小张" not in page and "核实企业有限公司" in page
    assert f'id="approve-{a.id}"' in page
    resp = client.post(f"/console/users/{a.id}/binding", data={"csrf_token": token, "approve": "1",
                                                               "state": "pending"})
    assert resp.status_code == 302 and "state=pending" in resp.headers["Location"]
    assert client.post(f"/console/users/{b.id}/binding", data={"csrf_token": token, "approve": "0"}).status_code == 302
    assert client.post(f"/console/users/{b.id}/binding", data={"csrf_token": token, "approve": "1"}).status_code == 409
    assert client.post(f"/console/users/{b.id}/binding", data={"csrf_token": token, "approve": "x"}).status_code == 400
    assert {u.nickname: u.binding_state for u in db.scalars(select(User))} == {
        "小王": "verified", "小李": "rejected", "白领小张": "none"}
    db.rollback()
    assert "没有待核实" in client.get("/console/users?state=pending").get_data(as_text=True)


def test_dept_sees_no_verify_buttons(client, make_staff, console_login, make_enterprise, make_user):
    token = console_login(make_staff(role="dept"))
    u = make_user(enterprise_id=make_enterprise().id, binding_state="pending")
    assert f'id="approve-{u.id}"' not in client.get("/console/users?state=pending").get_data(as_text=True)
    assert client.post(f"/console/users/{u.id}/binding", data={"csrf_token": token, "approve": "1"}).status_code == 403


def test_import_page_reports_rows_and_imports_nothing(client, make_staff, console_login):
    token = console_login(make_staff(role="staff"))
    assert "批量导入企业" in client.get("/console/enterprises/import").get_data(as_text=True)
    bad = f"企业名称,统一社会信用代码,联系电话\n甲公司,{code(5)},13800000000\n<b>乙</b>公司,{code(6)},555\n"
    resp = client.post("/console/enterprises/import", data={
        "csrf_token": token, "file": (io.BytesIO(bad.encode("gbk")), "企业.csv")}, content_type="multipart/form-data")
    assert resp.status_code == 422
    page = resp.get_data(as_text=True)
    assert "第 3 行「联系电话」" in page and "没有导入任何数据" in page
    with session_scope() as s:
        assert s.scalar(select(Enterprise.id)) is None
    good = bad.replace(",555", ",13900000000")
    resp = client.post("/console/enterprises/import", data={
        "csrf_token": token, "file": (io.BytesIO(good.encode()), "企业.csv")}, content_type="multipart/form-data")
    assert resp.status_code == 200 and "新建 2 个企业" in resp.get_data(as_text=True)
    page = client.get("/console/enterprises").get_data(as_text=True)
    assert "&lt;b&gt;乙&lt;/b&gt;公司" in page


def test_import_without_file_or_csrf(client, make_staff, console_login):
    token = console_login(make_staff(role="staff"))
    resp = client.post("/console/buildings/import", data={"csrf_token": token}, content_type="multipart/form-data")
    assert resp.status_code == 400 and "请先选择" in resp.get_data(as_text=True)
    resp = client.post("/console/buildings/import", data={"file": (io.BytesIO(b"name\nx\n"), "b.csv")},
                       content_type="multipart/form-data")
    assert resp.status_code == 400


def test_export_csv_and_xlsx(client, make_staff, console_login, make_enterprise, make_building):
    console_login(make_staff(role="staff"))
    b = make_building(name="新华大厦")
    make_enterprise(name="=1+1", credit_code=code(7), building_id=b.id, tags=["a", "b"])
    make_enterprise(name="别家公司", credit_code=code(8))
    resp = client.get(f"/console/enterprises/export.csv?building_id={b.id}")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    body = resp.get_data()
    assert body.startswith(codecs.BOM_UTF8)
    text = body[3:].decode("utf-8")
    assert text.splitlines()[0].startswith("企业名称,统一社会信用代码,行业,楼宇")
    assert "'=1+1" in text and "a|b" in text and "别家公司" not in text
    resp = client.get("/console/buildings/export.xlsx")
    book = openpyxl.load_workbook(io.BytesIO(resp.get_data()), read_only=True)
    assert list(book.worksheets[0].iter_rows(values_only=True))[1][0] == "新华大厦"
    assert client.get("/console/enterprises/export.pdf").status_code == 400
    template = client.get("/console/import-template/enterprises.csv").get_data()
    assert template.startswith(codecs.BOM_UTF8) and "统一社会信用代码".encode() in template


def test_missing_rows_are_404_pages(client, make_staff, console_login):
    console_login(make_staff(role="admin"))
    for path in ("/console/enterprises/999", "/console/enterprises/999/edit", "/console/buildings/999/edit",
                 "/console/grids/999/edit"):
        resp = client.get(path)
        assert resp.status_code == 404 and "没有找到" in resp.get_data(as_text=True), path


def test_dashboard_links_to_these_pages(client, make_staff, console_login):
    console_login(make_staff(role="staff"))
    page = client.get("/console/").get_data(as_text=True)
    assert 'href="/console/users?state=pending"' in page
    assert re.search(r'href="/console/enterprises"', page)


def test_a_department_has_no_users_cards_or_list(client, make_staff, console_login, staff_headers):
    """The users list holds every mini-program user's phone and enterprise binding, white-collar workers included;
    a department account could browse it (console and API) though it decides no binding."""
    dept = make_staff(role="dept", department="税务所")
    console_login(dept)
    page = client.get("/console/").get_data(as_text=True)
    assert 'id="count-users"' not in page and "/console/users" not in page
    assert 'href="/console/enterprises"' in page
    assert client.get("/console/users").status_code == 403
    assert client.get("/api/v1/staff/users", headers=staff_headers(dept)).status_code == 403


def test_edit_enterprise_clears_blank_fields(client, make_staff, console_login, make_enterprise, make_building, db):
    token = console_login(make_staff(role="staff"))
    b = make_building()
    e = make_enterprise(building_id=b.id, industry="餐饮", tags=["重点企业"])
    page = client.get(f"/console/enterprises/{e.id}/edit").get_data(as_text=True)
    assert 'value="重点企业"' in page and f'value="{b.id}" selected' in page
    resp = client.post(f"/console/enterprises/{e.id}/edit", data={
        "csrf_token": token, "name": e.name, "credit_code": e.credit_code, "building_id": "", "industry": "",
        "tags": "重点企业，新标签", "contact_phone": "", "floor_room": "", "tax_bracket": "", "contact_name": "",
        "note": ""})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    got = db.get(Enterprise, e.id)
    assert (got.building_id, got.industry, got.tags) == (None, "", ["重点企业", "新标签"])
