"""QA round 8 on users, login and enterprises: each test shows a defect that was found and fixed."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from wxapp_backend.audit import AuditLog
from wxapp_backend.auth.models import User


def _bind(client, headers, name, code):
    return client.post("/api/v1/me/enterprise", json={"name": name, "credit_code": code}, headers=headers)


def _approve_form(page: str, user_id: int) -> tuple[str, dict[str, str]]:
    """The action and fields of the 通过 button's form for one user, as the browser would post them."""
    for form in re.findall(r"<form (.*?)</form>", page, re.S):
        if f'id="approve-{user_id}"' in form:
            action = re.search(r'action="([^"]+)"', form).group(1)
            fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))
            return action, fields
    raise AssertionError(f"no approve form for user {user_id}")


def test_staff_approval_does_not_verify_an_enterprise_the_user_switched_to_after_the_page_loaded(
        client, make_user, user_token, make_enterprise, make_staff, console_login, db):
    """The console's 通过 carried only the user id: a user who changed their application (to another, bigger
    enterprise) between the page load and the click got verified for the enterprise staff never saw."""
    console_login(make_staff(role="staff"))
    own = make_enterprise(name="小微科技有限公司")
    big = make_enterprise(name="某大型集团有限公司")
    user = make_user(nickname="小王")
    h = user_token(user)
    assert _bind(client, h, own.name, own.credit_code).status_code == 200
    page = client.get("/console/users?state=pending").get_data(as_text=True)
    assert "小微科技有限公司" in page
    action, fields = _approve_form(page, user.id)
    assert _bind(client, h, big.name, big.credit_code).status_code == 200  # switched while staff looked
    resp = client.post(action, data=fields)
    assert resp.status_code == 409
    assert "刷新" in resp.get_data(as_text=True)
    row = db.get(User, user.id)
    assert (row.enterprise_id, row.binding_state) == (big.id, "pending")
    assert not db.scalars(select(AuditLog).where(AuditLog.action == "binding.verified")).all()
    # After a refresh staff see the enterprise now applied for, and approving that works.
    page = client.get("/console/users?state=pending").get_data(as_text=True)
    assert "某大型集团有限公司" in page
    action, fields = _approve_form(page, user.id)
    assert client.post(action, data=fields).status_code == 302
    db.expire_all()
    assert db.get(User, user.id).binding_state == "verified"


def test_staff_api_decision_can_name_the_enterprise_it_checked(client, make_user, user_token, make_enterprise,
                                                               make_staff, staff_headers):
    staff = staff_headers(make_staff(role="staff"))
    own, big = make_enterprise(), make_enterprise()
    user = make_user()
    assert _bind(client, user_token(user), big.name, big.credit_code).status_code == 200
    url = f"/api/v1/staff/users/{user.id}/binding"
    resp = client.post(url, json={"approve": True, "enterprise_id": own.id}, headers=staff)
    assert resp.status_code == 409 and resp.get_json()["error"] == "binding_changed"
    resp = client.post(url, json={"approve": True, "enterprise_id": big.id}, headers=staff)
    assert resp.status_code == 200 and resp.get_json()["binding_state"] == "verified"


def test_a_phone_number_is_stored_in_ascii_digits_only(client, make_user, user_token, db):
    """PHONE_RE's \\d took any Unicode digit: "13٨00138000" (an Arabic-Indic eight) was stored as a phone
    number nobody can dial or find, while the same number typed in full-width digits (a Chinese input method
    in full-width mode) was refused."""
    user = make_user()
    h = user_token(user)
    for odd in ("13٨00138000", "1٣800138000", "021-١٢٣٤٥٦٧٨", "13800138००0"):
        resp = client.patch("/api/v1/me", json={"phone": odd}, headers=h)
        assert resp.status_code == 422, odd
        assert resp.get_json()["fields"]["phone"]
    assert db.get(User, user.id).phone == ""
    resp = client.patch("/api/v1/me", json={"phone": "１３８００１３８０００"}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["phone"] == "13800138000"
    resp = client.patch("/api/v1/me", json={"phone": "０２１－６３２１００００"}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["phone"] == "021-63210000"


def test_two_colleagues_applying_with_the_same_new_credit_code_at_once_both_get_pending(
        client, make_user, user_token, make_enterprise, monkeypatch, db):
    """The first application for a credit code not on file creates the enterprise. When a colleague's
    application committed that row between this one's lookup and its insert (two requests at once on
    PostgreSQL; SQLite's BEGIN IMMEDIATE serialises them, so the lookup miss is staged here), the insert hit
    the unique key and the user got a 500."""
    from sqlalchemy.orm import Session

    other = make_enterprise(name="同一家公司")  # the colleague's request has just committed it
    real_scalar = Session.scalar
    missed = []

    def scalar(self, statement, *args, **kwargs):
        sql = str(statement)
        if not missed and "FROM enterprises" in sql and "enterprises.credit_code =" in sql:
            missed.append(sql)
            return None  # this request looked before the colleague's commit
        return real_scalar(self, statement, *args, **kwargs)

    monkeypatch.setattr(Session, "scalar", scalar)
    user = make_user()
    resp = _bind(client, user_token(user), "同一家公司", other.credit_code)
    assert missed
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["binding_state"] == "pending" and body["enterprise"]["id"] == other.id
    assert [a.action for a in db.scalars(select(AuditLog).order_by(AuditLog.id))] == ["binding.requested"]


def test_a_user_can_remove_their_phone_number_nickname_and_building(client, make_user, user_token,
                                                                     make_building, db):
    """PATCH /me with an emptied phone (or null) answered 200 and kept the number: a user could never take back
    a phone number they had given, and the answer claimed success."""
    building = make_building()
    user = make_user(nickname="小王", phone="13800138000", building_id=building.id)
    h = user_token(user)
    resp = client.patch("/api/v1/me", json={"phone": "", "nickname": None}, headers=h)
    assert resp.status_code == 200
    assert (resp.get_json()["phone"], resp.get_json()["nickname"]) == ("", "")
    resp = client.patch("/api/v1/me", json={"building_id": None}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["building"] is None
    row = db.get(User, user.id)
    assert (row.phone, row.nickname, row.building_id) == ("", "", None)
    changes = [a.data for a in db.scalars(select(AuditLog).where(AuditLog.action == "user.profile_updated")
                                          .order_by(AuditLog.id))]
    assert len(changes) == 2 and "13800138000" not in str(changes)
    # Nothing sent, nothing changed; sending an empty value again changes nothing and writes no audit row.
    assert client.patch("/api/v1/me", json={"phone": ""}, headers=h).status_code == 200
    assert client.patch("/api/v1/me", json={}, headers=h).status_code == 200
    assert db.scalar(select(func.count(AuditLog.id)).where(AuditLog.action == "user.profile_updated")) == 2


def test_moving_to_another_building_answers_with_the_new_one(client, make_user, user_token, make_building):
    old, new = make_building(name="旧楼"), make_building(name="新楼")
    user = make_user(building_id=old.id)
    resp = client.patch("/api/v1/me", json={"building_id": new.id}, headers=user_token(user))
    assert resp.status_code == 200 and resp.get_json()["building"]["name"] == "新楼"


def test_a_login_wechat_blocks_as_high_risk_is_told_so(client, standin, db):
    """jscode2session's 40226 means WeChat itself blocks this high-risk account's login; it was answered as an
    invalid code ("请重新打开小程序"), which only sends the user round the same refusal again."""
    standin.fail_next("/sns/jscode2session", errcode=40226, errmsg="high risk user")
    resp = client.post("/api/v1/auth/login", json={"code": "risky"})
    assert resp.status_code == 403
    body = resp.get_json()
    assert body["error"] == "login_blocked_by_wechat"
    assert "风险" in body["message"] and "重新打开" not in body["message"]
    assert db.scalar(select(func.count(User.id))) == 0
