"""Enterprises, buildings and bindings: defects found in session 10, each test failing without its fix."""

from __future__ import annotations

import unicodedata

from sqlalchemy import select

from wxapp_backend.audit import Actor
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import services

ACTOR = Actor("staff", 3, role="staff")


def code(n: int) -> str:
    return demo_credit_code("91310105", n)


def test_approval_message_promises_only_what_a_verified_contact_can_do(app_ctx, make_enterprise, make_user,
                                                                        run_jobs, db):
    from wxapp_backend.notices.models import InboxItem

    ent = make_enterprise(name="上海云帆科技有限公司")
    u = make_user(enterprise_id=ent.id, binding_state="pending")
    with session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=True)
    run_jobs()
    item = db.scalar(select(InboxItem).where(InboxItem.kind == "binding_result"))
    assert "上海云帆科技有限公司" in item.body
    assert "企业的诉求进度" not in item.body, item.body


def test_full_width_credit_code_from_a_chinese_keyboard_binds(client, make_user, user_token, db):
    u = make_user()
    wide = unicodedata.normalize("NFKC", code(7)).translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})
    assert wide != code(7)
    r = client.post("/api/v1/me/enterprise", json={"name": "全角科技有限公司", "credit_code": wide},
                    headers=user_token(u))
    assert r.status_code == 200, r.get_json()
    assert db.scalar(select(User.binding_state).where(User.id == u.id)) == "pending"


def test_deleting_an_enterprise_tells_the_users_who_lose_their_binding(app_ctx, make_enterprise, make_user,
                                                                         run_jobs, db):
    from wxapp_backend.notices.models import InboxItem

    ent = make_enterprise(name="待核实科技有限公司")
    pending = make_user(enterprise_id=ent.id, binding_state="pending", role="enterprise_contact")
    verified = make_user(enterprise_id=ent.id, binding_state="verified", role="enterprise_contact")
    make_user(enterprise_id=ent.id, binding_state="rejected", role="enterprise_contact")  # heard already
    with session_scope() as s:
        services.delete_enterprise(s, ACTOR, ent.id)
    run_jobs()
    items = list(db.scalars(select(InboxItem).where(InboxItem.kind == "binding_result")))
    assert {i.user_id for i in items} == {pending.id, verified.id}
    assert all("待核实科技有限公司" in i.body and "重新申请" in i.body for i in items)


def test_deciding_a_binding_that_is_gone_says_so(app_ctx, make_enterprise, make_user):
    """The application vanished (its enterprise file was deleted, which unbinds it) while the page was open: the
    answer said 已经处理过了 about an application nobody had decided, sending staff looking for who did."""
    import pytest

    from wxapp_backend.errors import Conflict

    ent = make_enterprise()
    u = make_user(enterprise_id=ent.id, binding_state="pending")
    with session_scope() as s:
        services.delete_enterprise(s, ACTOR, ent.id)
    with pytest.raises(Conflict) as info, session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=True, enterprise_id=ent.id)
    assert "已经处理过" not in info.value.message and "没有待核实" in info.value.message
    decided = make_user(enterprise_id=make_enterprise().id, binding_state="verified")
    with pytest.raises(Conflict, match="已经处理过"), session_scope() as s:
        services.decide_binding(s, ACTOR, decided.id, approve=False)


def test_staff_see_the_company_name_the_applicant_typed(client, make_enterprise, make_user, user_token,
                                                        make_staff, console_login):
    """The applicant's own words are the evidence staff check a binding against, and they were shown only the
    name on file: someone typing “随便写写” with a real company's code looked exactly like its contact."""
    ent = make_enterprise(name="上海云帆科技有限公司", credit_code=code(31))
    odd, same = make_user(nickname="小王"), make_user(nickname="小李")
    for u, name in ((odd, "随便写写公司"), (same, "上海云帆科技有限公司")):
        r = client.post("/api/v1/me/enterprise", json={"name": name, "credit_code": ent.credit_code},
                        headers=user_token(u))
        assert r.status_code == 200, r.get_json()
    console_login(make_staff(role="staff"))
    html = client.get("/console/users?state=pending").get_data(as_text=True)
    row = html.split(f'id="user-{odd.id}"', 1)[1].split("</tr>", 1)[0]
    assert "随便写写公司" in row and "上海云帆科技有限公司" in row
    row = html.split(f'id="user-{same.id}"', 1)[1].split("</tr>", 1)[0]
    assert "申请时填写" not in row  # nothing to point out when the names agree


def test_a_title_row_above_the_header_is_skipped_and_said(app_ctx):
    """Chinese registers usually open with a title line (“2024年新华街道企业名单”) above the header: the import
    refused them with 缺少必填列…请在第一行表头中加上, though the header was right there on the next line."""
    import io

    import openpyxl

    from wxapp_backend.enterprises import importer
    from wxapp_backend.enterprises.models import Enterprise

    book = openpyxl.Workbook()
    for row in (["2024年新华街道企业名单"], ["填表单位：营商服务中心", None, "日期：2024-05-01"],
                ["企业名称", "统一社会信用代码", "联系人"], ["甲科技有限公司", code(41), "张三"]):
        book.active.append(row)
    buf = io.BytesIO()
    book.save(buf)
    with session_scope() as s:
        report = importer.import_file(s, ACTOR, "enterprises", "企业.xlsx", buf.getvalue())
    assert report.ok and report.created == 1, report.error_lines()
    assert any("第 3 行" in w and "表头" in w for w in report.warnings), report.warnings
    with session_scope() as s:
        assert s.scalar(select(Enterprise.contact_name).where(Enterprise.credit_code == code(41))) == "张三"
    # A file with no header anywhere still says what is missing, about its first row.
    with session_scope() as s:
        report = importer.import_file(s, ACTOR, "enterprises", "企业.csv", "名单\n甲科技有限公司\n".encode())
    assert not report.ok and "缺少必填列「企业名称」" in report.error_lines()[0]


def test_a_merged_title_above_the_header_is_no_reason_to_refuse(app_ctx):
    """The title line of a register is nearly always merged across the table (A1:C1): the file was refused for
    合并单元格 though nothing merged was to be imported. A merge in the data is still refused."""
    import io

    import openpyxl

    from wxapp_backend.enterprises import importer

    def book(merge: str) -> bytes:
        wb = openpyxl.Workbook()
        for row in (["2024年新华街道企业名单"], ["企业名称", "统一社会信用代码", "行业"],
                    ["甲科技有限公司", code(51), "软件"], ["乙科技有限公司", code(52), "软件"]):
            wb.active.append(row)
        wb.active.merge_cells(merge)
        buf = io.BytesIO()
        wb.save(buf)
        return buf.getvalue()

    with session_scope() as s:
        report = importer.import_file(s, ACTOR, "enterprises", "企业.xlsx", book("A1:C1"))
    assert report.ok and report.created == 2, report.error_lines()
    with session_scope() as s:
        report = importer.import_file(s, ACTOR, "enterprises", "企业.xlsx", book("C3:C4"))
    assert not report.ok and "合并单元格" in report.error_lines()[0] and "C3:C4" in report.error_lines()[0]


def test_pending_bindings_are_listed_in_the_order_they_were_asked(client, make_enterprise, make_user, user_token):
    """The queue claimed first-come first-served but sorted by account: someone who signed up a year ago and
    applied today went ahead of everyone who had been waiting."""
    ent = make_enterprise()
    old_account, new_account = make_user(nickname="老用户"), make_user(nickname="新用户")
    for u in (new_account, old_account):  # the newer account applies first
        r = client.post("/api/v1/me/enterprise", json={"name": ent.name, "credit_code": ent.credit_code},
                        headers=user_token(u))
        assert r.status_code == 200, r.get_json()
    with session_scope() as s:
        page = services.list_users(s, state="pending")
        assert [u.id for u in page.items] == [new_account.id, old_account.id]


def test_a_file_a_binding_created_says_how_the_check_went(client, make_user, user_token, db):
    """An unknown credit code makes a file noted 待核实 for staff to check with the binding; after staff verified
    (or rejected) the binding the file still said 待核实 forever, and one a rejected stranger made looked like any
    other. The note follows the decision, with an audit row."""
    from wxapp_backend.audit import AuditLog
    from wxapp_backend.enterprises.models import Enterprise

    first, second = make_user(), make_user()
    for u in (first, second):
        r = client.post("/api/v1/me/enterprise", json={"name": "新开张科技有限公司", "credit_code": code(61)},
                        headers=user_token(u))
        assert r.status_code == 200
    ent_id = db.scalar(select(Enterprise.id).where(Enterprise.credit_code == code(61)))
    with session_scope() as s:
        services.decide_binding(s, ACTOR, first.id, approve=False)
    db.expire_all()
    assert "未通过" in db.get(Enterprise, ent_id).note and "待核实" not in db.get(Enterprise, ent_id).note
    with session_scope() as s:
        services.decide_binding(s, ACTOR, second.id, approve=True)
    db.expire_all()
    assert "已核实" in db.get(Enterprise, ent_id).note
    rows = list(db.scalars(select(AuditLog).where(AuditLog.action == "enterprise.updated",
                                                  AuditLog.target_id == str(ent_id))))
    assert len(rows) == 2 and all("note" in r.data["changes"] for r in rows)


def test_a_note_staff_wrote_is_left_alone(app_ctx, make_enterprise, make_user, db):
    from wxapp_backend.enterprises.models import Enterprise

    ent = make_enterprise(note="重点企业，区里挂号")
    u = make_user(enterprise_id=ent.id, binding_state="pending")
    with session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=True)
    assert db.get(Enterprise, ent.id).note == "重点企业，区里挂号"


def test_a_user_without_a_verified_binding_can_file_a_tax_appeal_naming_the_company(client, make_user, user_token,
                                                                                     make_enterprise):
    """税务、工商登记、融资、政策兑现、知识产权 require an enterprise, and only a verified binding can be chosen: a
    contact whose binding staff were still checking (or who never bound) was told 需要选择企业 and could not file at
    all. The company's name, which anyone may write and staff read, answers the requirement; it stays text."""
    from wxapp_backend.appeals.models import Appeal

    ent = make_enterprise(name="甲科技有限公司")
    body = {"content": "我们公司的增值税发票开不出来，请帮忙看看", "contact_name": "张三",
            "contact_phone": "13800138000", "category": "tax"}
    pending = make_user(enterprise_id=ent.id, binding_state="pending")
    r = client.post("/api/v1/appeals", json=body, headers=user_token(pending))
    assert r.status_code == 422 and "企业名称" in r.get_json()["fields"]["enterprise_id"], r.get_json()
    for u in (pending, make_user()):
        r = client.post("/api/v1/appeals", json={**body, "enterprise_name": "甲科技有限公司"}, headers=user_token(u))
        assert r.status_code == 201, r.get_json()
        with session_scope() as s:
            appeal = s.get(Appeal, r.get_json()["id"])
            assert (appeal.enterprise_name, appeal.enterprise_id) == ("甲科技有限公司", None)


def test_a_script_can_find_the_bindings_waiting_for_staff(client, make_enterprise, make_user, user_token, make_staff,
                                                          staff_headers):
    """POST /api/v1/staff/users/<id>/binding decides a binding, but no staff API listed the users waiting: a script
    had no way to learn whom to decide about (the console was the only door)."""
    ent = make_enterprise(name="上海云帆科技有限公司")
    waiting = make_user(nickname="小王")
    make_user(nickname="路人")
    r = client.post("/api/v1/me/enterprise", json={"name": "云帆", "credit_code": ent.credit_code},
                    headers=user_token(waiting))
    assert r.status_code == 200
    h = staff_headers(make_staff(role="staff"))
    r = client.get("/api/v1/staff/users?state=pending", headers=h)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["total"] == 1 and [u["id"] for u in body["items"]] == [waiting.id]
    item = body["items"][0]
    assert item["enterprise"]["id"] == ent.id and item["name_given"] == "云帆"
    assert client.get("/api/v1/staff/users?state=maybe", headers=h).status_code == 422


def test_a_page_past_the_end_does_not_say_the_registry_is_empty(client, make_enterprise, make_user, make_staff,
                                                                 console_login):
    """A bookmarked or stale ?page=3 after records went away said 还没有企业档案 / 没有符合条件的用户 while there
    were records on the pages before."""
    make_enterprise()
    make_user(nickname="小王")
    console_login(make_staff(role="staff"))
    for path in ("/console/enterprises?page=3", "/console/users?page=3"):
        html = client.get(path).get_data(as_text=True)
        assert "还没有企业档案" not in html and "没有符合条件的用户" not in html, path
        assert "共 1 条" in html and "page=1" in html.replace("&amp;", "&"), path


def test_staff_find_an_applicant_by_their_company(app_ctx, make_enterprise, make_user):
    """A contact phones about their binding: most have no nickname (WeChat no longer gives one) and the search only
    looked at nickname and phone, so staff could not find them by the company they named."""
    ent = make_enterprise(name="上海云帆科技有限公司")
    u = make_user(enterprise_id=ent.id, binding_state="pending")
    make_user(nickname="云帆爱好者")
    with session_scope() as s:
        assert [x.id for x in services.list_users(s, state="pending", q="云帆").items] == [u.id]
        assert [x.id for x in services.list_users(s, q=ent.credit_code[-6:].lower()).items] == [u.id]
        assert services.list_users(s, q="云帆").total == 2
