"""Seventeenth QA pass (binding): repeated binding requests, a department reading contacts' phones, files left
behind by withdrawn applications."""

from __future__ import annotations

from sqlalchemy import select

from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises.models import Enterprise


def _requests(user_id: int) -> list[dict]:
    with session_scope() as s:
        return [a.data for a in s.scalars(select(AuditLog).where(
            AuditLog.action == "binding.requested", AuditLog.target_id == str(user_id)).order_by(AuditLog.id))]


def _bind(client, headers, name: str, code: str) -> dict:
    r = client.post("/api/v1/me/enterprise", json={"name": name, "credit_code": code}, headers=headers)
    assert r.status_code == 200, r.get_json()
    return r.get_json()


# --- 1. the same request sent again is not a new one --------------------------------------------------


def test_a_repeated_binding_request_keeps_its_place_in_the_queue_and_writes_no_second_row(
    client, make_user, make_enterprise, user_token, make_staff, staff_headers
):
    """An applicant who tapped 提交 again (the page showed nothing new) got a second binding.requested row each time
    and was moved behind everyone who applied after them: the pending list is ordered by the latest request."""
    e = make_enterprise(name="上海甲科技有限公司")
    first, second = make_user(nickname="先申请"), make_user(nickname="后申请")
    _bind(client, user_token(first), e.name, e.credit_code)
    _bind(client, user_token(second), e.name, e.credit_code)
    again = _bind(client, user_token(first), e.name, e.credit_code.lower())  # the same code, typed another way
    assert again["binding_state"] == "pending" and again["enterprise"]["id"] == e.id
    assert len(_requests(first.id)) == 1, _requests(first.id)
    items = client.get("/api/v1/staff/users?state=pending",
                       headers=staff_headers(make_staff(role="staff"))).get_json()["items"]
    assert [i["id"] for i in items] == [first.id, second.id], items


def test_a_repeated_switch_request_writes_no_second_row_but_a_new_name_does(
    client, make_user, make_enterprise, user_token
):
    """The same for a verified contact's application to switch; a request with another name is a new one (staff
    check what was typed last)."""
    a, b = make_enterprise(name="上海甲科技有限公司"), make_enterprise(name="上海乙科技有限公司")
    u = make_user(enterprise_id=a.id, binding_state="verified", role="enterprise_contact")
    h = user_token(u)
    _bind(client, h, b.name, b.credit_code)
    body = _bind(client, h, b.name, b.credit_code)
    assert body["pending_enterprise"]["id"] == b.id and body["enterprise"]["id"] == a.id
    assert len(_requests(u.id)) == 1
    _bind(client, h, "上海乙科技", b.credit_code)
    assert [r["name_given"] for r in _requests(u.id)] == [b.name, "上海乙科技"]


# --- 2. a department account reads contacts' phones masked ---------------------------------------------


def test_a_department_reads_the_phones_of_an_enterprises_users_masked(
    client, make_user, make_enterprise, make_staff, staff_headers, console_login
):
    """The enterprise file (console page and staff API) listed the phone of every user bound to it or applying
    for it in full to department accounts, applicants who were refused included; a department reads registrants'
    phones as 139****1111 and may not open the users list at all."""
    e = make_enterprise(name="上海甲科技有限公司")
    make_user(nickname="联系人", phone="13900001111", enterprise_id=e.id, binding_state="verified",
              role="enterprise_contact")
    make_user(nickname="被驳回", phone="13900002222", enterprise_id=e.id, binding_state="rejected",
              role="enterprise_contact")
    dept = make_staff(role="dept")
    body = client.get(f"/api/v1/staff/enterprises/{e.id}", headers=staff_headers(dept)).get_json()
    assert sorted(u["phone"] for u in body["users"]) == ["139****1111", "139****2222"], body["users"]
    console_login(dept)
    page = client.get(f"/console/enterprises/{e.id}").get_data(as_text=True)
    assert "13900001111" not in page and "13900002222" not in page and "139****1111" in page
    # staff and admins still read them whole
    staff = make_staff(role="staff")
    body = client.get(f"/api/v1/staff/enterprises/{e.id}", headers=staff_headers(staff)).get_json()
    assert sorted(u["phone"] for u in body["users"]) == ["13900001111", "13900002222"]
    console_login(staff)
    assert "13900001111" in client.get(f"/console/enterprises/{e.id}").get_data(as_text=True)


# --- 3. a file made only for an application that was withdrawn does not stay in the registry ---------------


def _files() -> dict[str, str]:
    with session_scope() as s:
        return {e.credit_code: e.name for e in s.scalars(select(Enterprise))}


def test_a_file_made_by_a_withdrawn_application_is_taken_off_the_registry(
    client, make_user, user_token, make_staff, console_login
):
    """An unknown credit code makes a file “待核实” for staff to check with the application. Withdrawn (or replaced
    by an application with another code) the file stayed in 一企一档 under whatever name was typed, with nobody
    applying for it: nothing led staff to check it, and ten a day per user filled the registry."""
    u = make_user(nickname="小王")
    h = user_token(u)
    typo, right = demo_credit_code("91310101", 991), demo_credit_code("91310101", 992)
    _bind(client, h, "上海虚构科技有限公司", typo)
    assert typo in _files()
    _bind(client, h, "上海真实科技有限公司", right)  # the code was mistyped: applied again with the right one
    assert typo not in _files() and right in _files()
    r = client.delete("/api/v1/me/enterprise", headers=h)
    assert r.status_code == 200 and r.get_json()["binding_state"] == "none"
    assert right not in _files()
    with session_scope() as s:
        gone = [a.data for a in s.scalars(select(AuditLog).where(AuditLog.action == "enterprise.deleted"))]
    assert sorted(g["credit_code"] for g in gone) == sorted([typo, right]), gone
    assert all(g["via"] == "binding_withdrawn" for g in gone)
    console_login(make_staff(role="staff"))
    page = client.get("/console/enterprises").get_data(as_text=True)
    assert "上海虚构科技有限公司" not in page and "上海真实科技有限公司" not in page


def test_a_verified_contacts_withdrawn_switch_takes_its_new_file_along(client, make_user, make_enterprise,
                                                                       user_token):
    a = make_enterprise(name="上海甲科技有限公司")
    u = make_user(enterprise_id=a.id, binding_state="verified", role="enterprise_contact")
    code = demo_credit_code("91310101", 993)
    _bind(client, user_token(u), "上海新开科技有限公司", code)
    assert code in _files()
    body = client.delete("/api/v1/me/enterprise", headers=user_token(u)).get_json()
    assert body["binding_state"] == "verified" and body["pending_enterprise"] is None
    assert code not in _files() and a.credit_code in _files()


def test_a_file_someone_else_applies_for_or_staff_have_touched_stays(client, make_user, user_token, make_staff,
                                                                      staff_headers):
    """The negative controls: another applicant, or a file staff have edited, keeps it on file."""
    shared, edited = demo_credit_code("91310101", 994), demo_credit_code("91310101", 995)
    first, second, third = make_user(), make_user(), make_user()
    _bind(client, user_token(first), "上海共用科技有限公司", shared)
    _bind(client, user_token(second), "上海共用科技有限公司", shared)
    client.delete("/api/v1/me/enterprise", headers=user_token(first))
    assert shared in _files()
    body = _bind(client, user_token(third), "上海改过科技有限公司", edited)
    r = client.patch(f"/api/v1/staff/enterprises/{body['enterprise']['id']}", json={"industry": "软件"},
                     headers=staff_headers(make_staff(role="staff")))
    assert r.status_code == 200, r.get_json()
    client.delete("/api/v1/me/enterprise", headers=user_token(third))
    assert edited in _files()
