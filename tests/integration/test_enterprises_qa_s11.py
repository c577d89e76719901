"""Enterprises and bindings: defects found in session 11, each test failing without its fix."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import services
from wxapp_backend.errors import Conflict

ACTOR = Actor("staff", 3, role="staff")


def code(n: int) -> str:
    return demo_credit_code("91310106", n)


def _user(db, user_id: int) -> User:
    return db.scalar(select(User).where(User.id == user_id))


# --- 1. an application never takes away a verified binding ------------------------------------------

@pytest.fixture
def switching(client, make_enterprise, make_user, user_token):
    """A verified contact of A who has just applied to bind to B (a new file, made by the request)."""
    a = make_enterprise(name="甲科技有限公司")
    u = make_user(enterprise_id=a.id, binding_state="verified", role="enterprise_contact")
    r = client.post("/api/v1/me/enterprise", json={"name": "乙科技有限公司", "credit_code": code(1)},
                    headers=user_token(u))
    assert r.status_code == 200, r.get_json()
    return a, u, r.get_json()


def test_applying_to_another_enterprise_keeps_the_verified_binding_while_pending(switching, db):
    a, u, body = switching
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state) == (a.id, "verified")
    assert body["binding_state"] == "verified" and body["enterprise"]["id"] == a.id
    assert body["pending_enterprise"]["name"] == "乙科技有限公司"
    # Staff see the application among the pending ones, with what the user typed.
    with session_scope() as s:
        page = services.list_users(s, state="pending")
        assert u.id in [x.id for x in page.items]


def test_approving_the_switch_moves_the_binding(switching, db):
    a, u, body = switching
    b_id = body["pending_enterprise"]["id"]
    with session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=True, enterprise_id=b_id)
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (b_id, "verified", None)
    verified = db.scalar(select(AuditLog).where(AuditLog.action == "binding.verified"))
    assert verified.data["enterprise_id"] == b_id and verified.data["previous_enterprise_id"] == a.id


def test_rejecting_the_switch_keeps_the_old_binding(switching, db):
    a, u, body = switching
    b_id = body["pending_enterprise"]["id"]
    with session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=False, enterprise_id=b_id)
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (a.id, "verified", None)
    # A decision about A (the page was stale) is not mistaken for one about B.
    with pytest.raises(Conflict), session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=False, enterprise_id=a.id)


def test_withdrawing_the_switch_keeps_the_old_binding(switching, client, user_token, db):
    a, u, _body = switching
    r = client.delete("/api/v1/me/enterprise", headers=user_token(u))
    assert r.status_code == 200
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (a.id, "verified", None)


def test_deleting_the_applied_enterprise_drops_only_the_application(switching, db):
    a, u, body = switching
    with session_scope() as s:
        services.delete_enterprise(s, ACTOR, body["pending_enterprise"]["id"])
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (a.id, "verified", None)


def test_deleting_the_verified_enterprise_leaves_the_application_pending(switching, db):
    a, u, body = switching
    with session_scope() as s:
        services.delete_enterprise(s, ACTOR, a.id)
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (
        body["pending_enterprise"]["id"], "pending", None)


def test_console_lists_and_decides_the_switch(switching, client, make_staff, console_login, db):
    a, u, body = switching
    b_id = body["pending_enterprise"]["id"]
    staff = make_staff(role="staff")
    token = console_login(staff)
    page = client.get("/console/users?state=pending").get_data(as_text=True)
    assert f'id="approve-{u.id}"' in page and "乙科技有限公司" in page and "甲科技有限公司" in page
    assert f'name="enterprise_id" value="{b_id}"' in page
    r = client.post(f"/console/users/{u.id}/binding", data={"approve": "1", "enterprise_id": str(b_id),
                                                            "csrf_token": token})
    assert r.status_code == 302
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (b_id, "verified", None)


# --- 2. staff merge duplicate enterprise files ------------------------------------------------------

ADMIN = Actor("staff", 1, role="admin")


def _legacy(make_enterprise, name: str, raw_code: str):
    """A file from before the check digit was validated (an old import): the code may be anything."""
    return make_enterprise(name=name, credit_code=raw_code)


def test_merge_moves_everything_and_retires_the_duplicate(app_ctx, make_enterprise, make_user, make_building,
                                                          make_activity, db):
    from wxapp_backend.activities.models import Registration
    from wxapp_backend.appeals.models import Appeal
    from wxapp_backend.enterprises.models import Enterprise

    building = make_building()
    keep = make_enterprise(name="上海云帆科技有限公司", credit_code=code(10))
    typo = code(11)[:17] + ("A" if code(11)[17] != "A" else "B")  # the check digit typed wrong
    dup = _legacy(make_enterprise, "上海云帆科技", typo)
    with session_scope() as s:
        s.execute(Enterprise.__table__.update().where(Enterprise.id == dup.id)
                  .values(industry="信息技术", building_id=building.id, tags=["高新"]))
    contact = make_user(enterprise_id=dup.id, binding_state="verified", role="enterprise_contact")
    applicant = make_user(enterprise_id=dup.id, binding_state="pending", role="enterprise_contact")
    other = make_enterprise()
    switcher = make_user(enterprise_id=other.id, binding_state="verified", pending_enterprise_id=dup.id)
    activity = make_activity()
    with session_scope() as s:
        appeal = Appeal(number="S11-0001", user_id=contact.id, content="老诉求", contact_name="张三",
                        contact_phone="13800000000", enterprise_id=dup.id)
        reg = Registration(activity_id=activity.id, user_id=contact.id, enterprise_id=dup.id,
                           status="confirmed", active_key=f"{activity.id}:{contact.id}")
        s.add_all([appeal, reg])
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, keep.id, dup.id)
    assert (_user(db, contact.id).enterprise_id, _user(db, contact.id).binding_state) == (keep.id, "verified")
    assert (_user(db, applicant.id).enterprise_id, _user(db, applicant.id).binding_state) == (keep.id, "pending")
    assert _user(db, switcher.id).pending_enterprise_id == keep.id
    assert db.scalar(select(Appeal.enterprise_id).where(Appeal.id == appeal.id)) == keep.id
    assert db.scalar(select(Registration.enterprise_id).where(Registration.id == reg.id)) == keep.id
    retired = db.scalar(select(Enterprise).where(Enterprise.id == dup.id))  # not deleted
    assert retired.merged_into_id == keep.id and retired.retired_at is not None
    kept = db.scalar(select(Enterprise).where(Enterprise.id == keep.id))
    assert (kept.industry, kept.building_id, kept.tags) == ("信息技术", building.id, ["高新"])
    row = db.scalar(select(AuditLog).where(AuditLog.action == "enterprise.merged"))
    assert row.actor_type == "staff" and row.target_id == str(keep.id) and row.data["duplicate_id"] == dup.id
    assert row.data["moved"]["users"] == sorted([contact.id, applicant.id])
    # The retired file no longer shows up in lists, and cannot be edited.
    with session_scope() as s:
        assert dup.id not in [e.id for e in services.search_enterprises(s, q="云帆").items]
    with pytest.raises(Conflict, match="已合并"), session_scope() as s:
        services.update_enterprise(s, ADMIN, dup.id, {"note": "改一下"})


@pytest.mark.parametrize("case", ["itself", "into_retired", "retired_again", "two_valid_codes",
                                  "keep_invalid"])
def test_merge_refuses_what_is_not_a_duplicate(app_ctx, make_enterprise, case):
    from wxapp_backend.errors import AppError

    a = make_enterprise(name="甲公司", credit_code=code(20))
    b = make_enterprise(name="甲公司", credit_code=code(21))
    bad = _legacy(make_enterprise, "甲公司（旧）", "91310106MA0000000X")
    keep_id, dup_id, words = {
        "itself": (a.id, a.id, "合并到它自己"),
        "into_retired": (bad.id, None, "不能再作为保留"),
        "retired_again": (a.id, bad.id, "已经合并"),
        "two_valid_codes": (a.id, b.id, "不同的企业"),
        "keep_invalid": (bad.id, a.id, "校验不通过"),
    }[case]
    if case in {"into_retired", "retired_again"}:
        with session_scope() as s:
            services.merge_enterprises(s, ADMIN, a.id, bad.id)
        if case == "into_retired":
            dup_id = b.id
    with pytest.raises(AppError, match=words) as info, session_scope() as s:
        services.merge_enterprises(s, ADMIN, keep_id, dup_id)
    assert info.value.status in {409, 422}


def test_binding_with_a_retired_code_lands_on_the_kept_file(client, make_enterprise, make_user, user_token, db):
    keep = make_enterprise(name="乙公司", credit_code=code(30))
    dup = make_enterprise(name="乙公司（重复）", credit_code=code(30).lower())  # an old import in lower case
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, keep.id, dup.id)
    u = make_user()
    with session_scope() as s:
        from wxapp_backend.auth.services import request_enterprise_binding

        user = s.get(User, u.id)
        request_enterprise_binding(s, user, name="乙公司", credit_code=code(30))
    assert _user(db, u.id).enterprise_id == keep.id


def test_console_merge_is_admin_only_with_csrf_and_chinese_errors(client, make_enterprise, make_staff,
                                                                  console_login, db):
    from wxapp_backend.enterprises.models import Enterprise

    keep = make_enterprise(name="丙公司", credit_code=code(40))
    dup = _legacy(make_enterprise, "丙公司", "91310106MA0000002X")
    other = make_enterprise(name="丁公司", credit_code=code(41))
    staff = make_staff(role="staff")
    token = console_login(staff)
    r = client.post(f"/console/enterprises/{keep.id}/merge", data={"duplicate": str(dup.id), "csrf_token": token})
    assert r.status_code == 403
    client.post("/console/logout", data={"csrf_token": token})
    admin = make_staff(role="admin")
    token = console_login(admin)
    page = client.get(f"/console/enterprises/{keep.id}").get_data(as_text=True)
    assert f'id="merge-{dup.id}"' in page  # offered as a likely duplicate (same name)
    r = client.post(f"/console/enterprises/{keep.id}/merge", data={"duplicate": str(dup.id)})
    assert r.status_code == 400 and "页面已过期" in r.get_data(as_text=True)
    r = client.post(f"/console/enterprises/{keep.id}/merge", data={"duplicate": other.credit_code,
                                                                  "csrf_token": token})
    assert r.status_code == 422 and "不同的企业" in r.get_data(as_text=True)
    r = client.post(f"/console/enterprises/{keep.id}/merge", data={"duplicate": "不存在的", "csrf_token": token})
    assert r.status_code == 422 and "没有找到" in r.get_data(as_text=True)
    r = client.post(f"/console/enterprises/{keep.id}/merge", data={"duplicate": str(dup.id), "csrf_token": token})
    assert r.status_code == 302
    assert db.scalar(select(Enterprise.merged_into_id).where(Enterprise.id == dup.id)) == keep.id
    page = client.get(f"/console/enterprises/{dup.id}").get_data(as_text=True)
    assert "已合并停用" in page and "丙公司" in page and "编辑档案" not in page


def test_staff_api_merge(client, make_enterprise, make_staff, staff_headers, db):
    keep = make_enterprise(name="戊公司", credit_code=code(50))
    dup = _legacy(make_enterprise, "戊公司", "91310106MA0000002X")
    r = client.post(f"/api/v1/staff/enterprises/{keep.id}/merge", json={"duplicate": dup.credit_code},
                    headers=staff_headers(make_staff(role="staff")))
    assert r.status_code == 403
    admin = staff_headers(make_staff(role="admin"))
    r = client.post(f"/api/v1/staff/enterprises/{keep.id}/merge", json={"duplicate": str(keep.id)}, headers=admin)
    assert r.status_code == 422 and "自己" in r.get_json()["message"]
    r = client.post(f"/api/v1/staff/enterprises/{keep.id}/merge", json={"duplicate": dup.credit_code.lower()},
                    headers=admin)
    assert r.status_code == 200, r.get_json()
    r = client.get(f"/api/v1/staff/enterprises/{dup.id}", headers=admin)
    assert r.get_json()["merged_into_id"] == keep.id


def test_import_naming_a_retired_code_points_to_the_kept_file(app_ctx, make_enterprise, db):
    from wxapp_backend.enterprises import importer
    from wxapp_backend.enterprises.models import Enterprise

    keep = make_enterprise(name="己公司", credit_code=code(60))
    dup = make_enterprise(name="己公司（重复）", credit_code=code(61))
    with session_scope() as s:  # an old duplicate whose code is the same enterprise's (its code was corrected)
        s.execute(Enterprise.__table__.update().where(Enterprise.id == keep.id).values(credit_code="91310106MA0000002X"))
        services.merge_enterprises(s, ADMIN, dup.id, keep.id)
    data = f"企业名称,统一社会信用代码\n己公司（改名）,{code(61)}\n".encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv", data)
    assert report.ok and report.updated == 1  # the kept file, not the retired one, carries the valid code
    assert db.scalar(select(Enterprise.name).where(Enterprise.id == dup.id)) == "己公司（改名）"


def test_the_applied_enterprise_file_shows_the_switch_applicant(switching, client, make_staff, console_login,
                                                                 staff_headers):
    a, u, body = switching
    b_id = body["pending_enterprise"]["id"]
    staff = make_staff(role="staff")
    r = client.get(f"/api/v1/staff/enterprises/{b_id}", headers=staff_headers(staff))
    assert [x["id"] for x in r.get_json()["users"]] == [u.id]
    console_login(staff)
    page = client.get(f"/console/enterprises/{b_id}").get_data(as_text=True)
    assert "申请改绑" in page and "去核实" in page
    page = client.get(f"/console/enterprises/{a.id}").get_data(as_text=True)
    assert "已核实" in page


# --- review: what a demanding user would call wrong ------------------------------------------------

def test_search_finds_a_credit_code_pasted_full_width_or_with_blanks(app_ctx, make_enterprise, make_user):
    """A code copied from a licence photo's OCR or typed with a Chinese keyboard found nothing, while the same
    text is accepted when binding or creating a file."""
    e = make_enterprise(name="庚科技有限公司", credit_code=code(70))
    u = make_user(enterprise_id=e.id, binding_state="pending")
    wide = code(70).lower().translate({c: c + 0xFEE0 for c in range(0x21, 0x7F)})
    spaced = " ".join([code(70)[:6], code(70)[6:12], code(70)[12:]])
    with session_scope() as s:
        for q in (wide, spaced):
            assert [x.id for x in services.search_enterprises(s, q=q).items] == [e.id], q
        assert [x.id for x in services.list_users(s, q=wide).items] == [u.id]


def test_deleting_a_file_tells_switching_users_what_really_changed(switching, run_jobs, db):
    """A verified contact of A applying to B heard '您与它的绑定已解除…请重新申请' when B's file was deleted, though
    only the application went and A's binding stayed; and when A's file went, that their B application stands."""
    from wxapp_backend.notices.models import InboxItem

    a, u, body = switching
    with session_scope() as s:
        services.delete_enterprise(s, ACTOR, body["pending_enterprise"]["id"])
    run_jobs()
    item = db.scalar(select(InboxItem).where(InboxItem.kind == "binding_result", InboxItem.user_id == u.id))
    assert "绑定已解除" not in item.title + item.body and "甲科技有限公司" in item.body, item.body


def test_deleting_the_verified_file_says_the_application_stands(switching, run_jobs, db):
    from wxapp_backend.notices.models import InboxItem

    a, u, _body = switching
    with session_scope() as s:
        services.delete_enterprise(s, ACTOR, a.id)
    run_jobs()
    item = db.scalar(select(InboxItem).where(InboxItem.kind == "binding_result", InboxItem.user_id == u.id))
    assert "乙科技有限公司" in item.body and "重新申请" not in item.body, item.body


def test_staff_who_cannot_merge_still_see_a_likely_duplicate(client, make_enterprise, make_staff, console_login):
    keep = make_enterprise(name="辛科技有限公司", credit_code=code(80))
    dup = _legacy(make_enterprise, "辛科技有限公司", "91310106MA0000002X")
    console_login(make_staff(role="staff"))
    page = client.get(f"/console/enterprises/{keep.id}").get_data(as_text=True)
    assert 'id="possible-duplicates"' in page and f"/console/enterprises/{dup.id}" in page
    assert 'id="merge-submit"' not in page


def _approve_while_the_user_applies_elsewhere(app, make_enterprise, make_user) -> tuple[int, int]:
    """Staff approve a user's application for A and hold the transaction open a moment while the user, in the
    mini-program, applies to B. Returns (user id, A's id)."""
    import threading

    from wxapp_backend.auth.services import request_enterprise_binding

    a = make_enterprise(name="壬公司")
    u = make_user(enterprise_id=a.id, binding_state="pending", role="enterprise_contact")
    locked = threading.Event()

    def staff():
        with app.app_context(), session_scope() as s:
            services.decide_binding(s, ACTOR, u.id, approve=True)
            locked.set()
            threading.Event().wait(0.5)

    def user():
        with app.app_context(), session_scope() as s:
            row = s.get(User, u.id)  # as the API loads it: before the decision commits
            locked.wait(5)
            request_enterprise_binding(s, row, name="癸公司", credit_code=code(90))

    threads = [threading.Thread(target=staff), threading.Thread(target=user)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return u.id, a.id


@pytest.mark.postgres
def test_an_application_racing_an_approval_does_not_undo_it(app, app_ctx, db, make_enterprise, make_user):
    user_id, a_id = _approve_while_the_user_applies_elsewhere(app, make_enterprise, make_user)
    row = _user(db, user_id)
    assert (row.enterprise_id, row.binding_state) == (a_id, "verified")
    assert row.pending_enterprise_id is not None


@pytest.mark.postgres
def test_negative_control_without_the_lock_the_approval_is_lost(app, app_ctx, db, make_enterprise, make_user,
                                                                monkeypatch):
    from wxapp_backend.auth import services as auth_services

    monkeypatch.setattr(auth_services, "_locked", lambda session, user: user)
    user_id, a_id = _approve_while_the_user_applies_elsewhere(app, make_enterprise, make_user)
    row = _user(db, user_id)
    # The race the lock prevents: the verification of A is gone, and (only the changed column being written)
    # the user even ends up "verified" for B, which nobody checked.
    assert row.enterprise_id != a_id and row.pending_enterprise_id is None


def test_applying_again_to_the_verified_enterprise_withdraws_the_switch(switching, client, user_token, db):
    a, u, _body = switching
    r = client.post("/api/v1/me/enterprise", json={"name": a.name, "credit_code": a.credit_code},
                    headers=user_token(u))
    assert r.status_code == 200 and r.get_json()["pending_enterprise"] is None
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (a.id, "verified", None)
    assert db.scalar(select(AuditLog.action).where(AuditLog.target_id == str(u.id))
                     .order_by(AuditLog.id.desc()).limit(1)) == "binding.withdrawn"


def test_a_decision_from_a_page_loaded_before_a_merge_still_counts(app_ctx, make_enterprise, make_user, db):
    """The users page was opened, an admin merged the file the user applied for, then the decision was sent: it
    was refused with '这位用户刚刚改了申请绑定的企业', which the user never did."""
    keep = make_enterprise(name="子公司", credit_code=code(95))
    dup = _legacy(make_enterprise, "子公司", "91310106MA0000002X")
    u = make_user(enterprise_id=dup.id, binding_state="pending", role="enterprise_contact")
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, keep.id, dup.id)
    with session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=True, enterprise_id=dup.id)
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state) == (keep.id, "verified")


def test_contacts_moved_by_a_merge_are_told_under_which_name(app_ctx, make_enterprise, make_user, run_jobs, db):
    """The name of a contact's enterprise changed in the app overnight, with no word why."""
    from wxapp_backend.notices.models import InboxItem

    keep = make_enterprise(name="上海丑科技有限公司", credit_code=code(96))
    dup = _legacy(make_enterprise, "丑科技", "91310106MA0000002X")
    verified = make_user(enterprise_id=dup.id, binding_state="verified", role="enterprise_contact")
    rejected = make_user(enterprise_id=dup.id, binding_state="rejected", role="enterprise_contact")
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, keep.id, dup.id)
    run_jobs()
    items = list(db.scalars(select(InboxItem).where(InboxItem.kind == "binding_result")))
    assert [i.user_id for i in items] == [verified.id] and rejected.id not in [i.user_id for i in items]
    assert "丑科技" in items[0].body and "上海丑科技有限公司" in items[0].body and "无需重新申请" in items[0].body


def test_the_enterprise_file_shows_its_appeals(client, make_enterprise, make_user, make_staff, console_login):
    """一企一档: the file page said nothing of the enterprise's appeals; staff had to search the queue by name."""
    from wxapp_backend.appeals.models import Appeal

    e = make_enterprise(name="寅公司")
    u = make_user(enterprise_id=e.id, binding_state="verified")
    with session_scope() as s:
        for i, status in enumerate(["submitted", "closed"]):
            s.add(Appeal(number=f"S11-10{i}", user_id=u.id, content="问题", contact_name="张三",
                         contact_phone="13800000000", enterprise_id=e.id, status=status))
    console_login(make_staff(role="staff"))  # a department counts only its own (test_privacy_qa_s14)
    page = client.get(f"/console/enterprises/{e.id}").get_data(as_text=True)
    assert 'id="appeal-counts"' in page and "共 2 件" in page and "在办 1 件" in page
    assert f"/console/appeals/issues.xlsx?enterprise_id={e.id}" in page


def test_staff_find_an_applicant_by_the_name_they_typed(client, make_enterprise, make_user, user_token):
    """An applicant rings about their application under the name they typed, which differs from the name on
    file (their code is another's, or the file's name is the official one): the users search found nothing."""
    make_enterprise(name="上海辰星餐饮管理有限公司", credit_code=code(97))
    u = make_user(nickname="")
    r = client.post("/api/v1/me/enterprise", json={"name": "卯记小馆", "credit_code": code(97)},
                    headers=user_token(u))
    assert r.status_code == 200
    with session_scope() as s:
        assert [x.id for x in services.list_users(s, q="卯记").items] == [u.id]
        assert [x.id for x in services.list_users(s, state="pending", q="卯记").items] == [u.id]
        assert services.list_users(s, q="不相干").items == []
        assert services.list_users(s, q="name").items == []  # the JSON's keys are not what staff search


def test_staff_can_end_a_verified_binding_with_a_reason(client, make_enterprise, make_user, make_staff,
                                                        console_login, run_jobs, db):
    """A contact left the company and the enterprise asked the centre to remove them: staff had no way to, short
    of deleting the whole enterprise file; the former employee kept filing appeals in the enterprise's name."""
    from wxapp_backend.notices.models import InboxItem

    e = make_enterprise(name="巳公司")
    u = make_user(enterprise_id=e.id, binding_state="verified", role="enterprise_contact", nickname="小李")
    token = console_login(make_staff(role="dept"))
    r = client.post(f"/console/users/{u.id}/binding/revoke", data={"reason": "已离职", "csrf_token": token})
    assert r.status_code == 403
    client.post("/console/logout", data={"csrf_token": token})
    token = console_login(make_staff(role="staff"))
    page = client.get("/console/users?state=verified").get_data(as_text=True)
    assert f'id="revoke-{u.id}"' in page
    r = client.post(f"/console/users/{u.id}/binding/revoke", data={"reason": "", "csrf_token": token})
    assert r.status_code == 422 and "原因" in r.get_data(as_text=True)
    r = client.post(f"/console/users/{u.id}/binding/revoke", data={"reason": "企业来函：已离职", "csrf_token": token})
    assert r.status_code == 302
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state) == (None, "none")
    log = db.scalar(select(AuditLog).where(AuditLog.action == "binding.revoked"))
    assert log.actor_type == "staff" and log.data == {"enterprise_id": e.id, "reason": "企业来函：已离职"}
    run_jobs()
    item = db.scalar(select(InboxItem).where(InboxItem.user_id == u.id))
    assert "巳公司" in item.body and "企业来函：已离职" in item.body
    r = client.post(f"/console/users/{u.id}/binding/revoke", data={"reason": "再来一次", "csrf_token": token})
    assert r.status_code == 409


def test_revoking_a_switchers_binding_leaves_their_application_pending(switching, client, make_staff,
                                                                      staff_headers, db):
    a, u, body = switching
    headers = staff_headers(make_staff(role="staff"))
    r = client.post(f"/api/v1/staff/users/{u.id}/binding/revoke", json={}, headers=headers)
    assert r.status_code == 422
    r = client.post(f"/api/v1/staff/users/{u.id}/binding/revoke", json={"reason": "企业来函"}, headers=headers)
    assert r.status_code == 200, r.get_json()
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (
        body["pending_enterprise"]["id"], "pending", None)


def test_a_rejection_can_say_why(client, make_enterprise, make_user, make_staff, console_login, run_jobs, db):
    """A rejected applicant heard only '未能核实，请核对名称和信用代码', with no way for staff to say what was wrong
    (e.g. 'not on the enterprise's list of contacts'), so they re-applied with the same details."""
    from wxapp_backend.notices.models import InboxItem

    e = make_enterprise(name="午公司")
    u = make_user(enterprise_id=e.id, binding_state="pending", role="enterprise_contact")
    token = console_login(make_staff(role="staff"))
    page = client.get("/console/users?state=pending").get_data(as_text=True)
    assert f'id="reject-reason-{u.id}"' in page
    r = client.post(f"/console/users/{u.id}/binding", data={"approve": "0", "enterprise_id": str(e.id),
                                                            "reason": "企业联系人名单中没有您", "csrf_token": token})
    assert r.status_code == 302
    run_jobs()
    item = db.scalar(select(InboxItem).where(InboxItem.user_id == u.id))
    assert "企业联系人名单中没有您" in item.body
    log = db.scalar(select(AuditLog).where(AuditLog.action == "binding.rejected"))
    assert log.data["reason"] == "企业联系人名单中没有您"


def test_a_retired_duplicate_is_counted_and_exported_nowhere(client, make_enterprise, make_building, make_staff,
                                                             console_login, db):
    import re

    building = make_building()
    keep = make_enterprise(name="未公司", credit_code=code(98), building_id=building.id, industry="零售")
    dup = _legacy(make_enterprise, "未公司", "91310106MA0000002X")
    with session_scope() as s:
        from wxapp_backend.enterprises.models import Enterprise

        s.execute(Enterprise.__table__.update().where(Enterprise.id == dup.id)
                  .values(building_id=building.id, industry="旧行业"))
        services.merge_enterprises(s, ADMIN, keep.id, dup.id)
    with session_scope() as s:
        assert services.industries(s) == ["零售"]
        assert dict((b.id, n) for b, n in services.list_buildings(s))[building.id] == 1
    console_login(make_staff(role="staff"))
    page = client.get("/console/").get_data(as_text=True)
    assert re.search(r'id="count-enterprises">1<', page)
    csv = client.get("/console/enterprises/export.csv").get_data(as_text=True)
    assert csv.count("未公司") == 1 and "91310106MA0000002X" not in csv
