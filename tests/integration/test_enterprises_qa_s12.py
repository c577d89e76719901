"""Enterprises, bindings and merged files: defects found in session 12, each test failing without its fix."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import services
from wxapp_backend.enterprises.models import Enterprise
from wxapp_backend.errors import Conflict

ACTOR = Actor("staff", 3, role="staff")
ADMIN = Actor("staff", 1, role="admin")
INVALID = "91310106MA0000002X"  # an old file's code, from before the check digit was validated


def code(n: int) -> str:
    return demo_credit_code("91310112", n)


def _user(db, user_id: int) -> User:
    db.expire_all()
    return db.scalar(select(User).where(User.id == user_id))


def _merged_pair(make_enterprise, keep_name="上海星河科技有限公司", dup_name="星河科技", n=1):
    keep = make_enterprise(name=keep_name, credit_code=code(n))
    dup = make_enterprise(name=dup_name, credit_code=INVALID)
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, keep.id, dup.id)
    return keep, dup


def _set(enterprise_id: int, **values) -> None:
    """Write columns as old data (or a lost race) left them, past every service check."""
    with session_scope() as s:
        s.execute(Enterprise.__table__.update().where(Enterprise.id == enterprise_id).values(**values))


def _set_user(user_id: int, **values) -> None:
    with session_scope() as s:
        s.execute(User.__table__.update().where(User.id == user_id).values(**values))


# --- 1. a binding never lands on a retired duplicate ------------------------------------------------

@pytest.mark.postgres
def test_a_binding_request_racing_a_merge_lands_on_the_kept_file(app, app_ctx, make_enterprise, make_user, db):
    """The merge moved the duplicate's contacts while a user's request for the duplicate's code was being
    written: the request committed after it, and the user was bound to the retired file (shown nowhere)."""
    from wxapp_backend.auth.services import request_enterprise_binding

    # The old file has the code in lower case; a binding request made a second one with the code as typed.
    keep = make_enterprise(name="上海寅科技有限公司", credit_code=code(2).lower())
    dup = make_enterprise(name="寅科技", credit_code=code(2))
    u = make_user()
    merged, errors = threading.Event(), []

    def admin():
        try:
            with app.app_context(), session_scope() as s:
                services.merge_enterprises(s, ADMIN, keep.id, dup.id)
                merged.set()
                threading.Event().wait(0.6)  # the merge's transaction stays open a moment
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            merged.set()

    def applicant():
        try:
            merged.wait(5)
            with app.app_context(), session_scope() as s:
                request_enterprise_binding(s, s.get(User, u.id), name="寅科技", credit_code=dup.credit_code)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=admin), threading.Thread(target=applicant)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, errors
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state) == (keep.id, "pending")


def test_approving_an_application_for_a_file_retired_since_binds_the_kept_file(app_ctx, make_enterprise, make_user,
                                                                               db):
    """A user left applying for a retired duplicate (a request that raced the merge) was approved as it stood:
    verified for a file no list shows, whose appeals count nowhere."""
    keep, dup = _merged_pair(make_enterprise)
    u = make_user(enterprise_id=dup.id, binding_state="pending", role="enterprise_contact")
    with session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=True, enterprise_id=dup.id)
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state) == (keep.id, "verified")
    verified = db.scalar(select(AuditLog).where(AuditLog.action == "binding.verified"))
    assert verified.data["enterprise_id"] == keep.id and verified.data["merged_from"] == dup.id


def test_approving_a_switch_to_a_file_retired_since_binds_the_kept_file(app_ctx, make_enterprise, make_user, db):
    keep, dup = _merged_pair(make_enterprise)
    other = make_enterprise(name="卯贸易有限公司", credit_code=code(4))
    u = make_user(enterprise_id=other.id, binding_state="verified", role="enterprise_contact",
                  pending_enterprise_id=dup.id)
    with session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=True, enterprise_id=dup.id)
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state, row.pending_enterprise_id) == (keep.id, "verified", None)


def test_a_retired_file_whose_kept_file_is_gone_is_refused_in_chinese(client, make_enterprise, make_user, user_token,
                                                                      db):
    """Old data: a retired duplicate pointing at nothing. A request for its code bound the user to it."""
    orphan = make_enterprise(name="辰科技", credit_code=code(5))
    _set(orphan.id, retired_at=datetime(2026, 1, 1, tzinfo=UTC))  # merged into a file deleted since
    u = make_user()
    r = client.post("/api/v1/me/enterprise", json={"name": "辰科技", "credit_code": code(5)}, headers=user_token(u))
    assert r.status_code == 409, r.get_json()
    assert "停用" in r.get_json()["message"] and "服务专员" in r.get_json()["message"]
    row = _user(db, u.id)
    assert (row.enterprise_id, row.binding_state) == (None, "none")
    # ... and one already waiting on it is not approved onto it either.
    _set_user(u.id, enterprise_id=orphan.id, binding_state="pending")
    with pytest.raises(Conflict, match="停用.*删除这份停用的档案"), session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=True)
    assert _user(db, u.id).binding_state == "pending"


def test_an_orphaned_retired_file_says_how_to_get_out_of_it(client, make_enterprise, make_user, user_token,
                                                           make_staff, console_login):
    """Neither the user (refused) nor staff (a retired file cannot be edited or merged) had a way on: the page
    now says that deleting the orphan lets the enterprise be filed again, and after that a request binds."""
    orphan = make_enterprise(name="未申科技", credit_code=code(33))
    _set(orphan.id, retired_at=datetime(2026, 1, 1, tzinfo=UTC))
    token = console_login(make_staff(role="admin"))
    page = client.get(f"/console/enterprises/{orphan.id}").get_data(as_text=True)
    assert "它合并到的档案已被删除" in page and "请管理员删除这份档案" in page
    r = client.post(f"/console/enterprises/{orphan.id}/delete", data={"csrf_token": token})
    assert r.status_code == 302
    r = client.post("/api/v1/me/enterprise", json={"name": "未申科技", "credit_code": code(33)},
                    headers=user_token(make_user()))
    assert r.status_code == 200 and r.get_json()["binding_state"] == "pending"


# --- 2. legacy codes stored lower-case or with blanks ------------------------------------------------

def test_binding_with_the_upper_case_code_finds_a_lower_case_legacy_file(client, make_enterprise, make_user,
                                                                         user_token, db):
    """The user typed the code from the licence (upper case): no file matched the old lower-case one, and a
    second file of the same enterprise was made for them (the unique index is case-sensitive)."""
    legacy = make_enterprise(name="上海巳科技有限公司", credit_code=code(6).lower())
    u = make_user()
    r = client.post("/api/v1/me/enterprise", json={"name": "巳科技", "credit_code": code(6)}, headers=user_token(u))
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["enterprise"]["id"] == legacy.id
    assert db.scalar(select(Enterprise.id).where(Enterprise.id != legacy.id)) is None


def test_a_blank_in_a_legacy_code_does_not_hide_it(app_ctx, make_enterprise, make_user, db):
    from wxapp_backend.auth.services import request_enterprise_binding

    if db.bind.dialect.name == "postgresql":  # VARCHAR(18) holds no 19-character code there
        legacy = make_enterprise(name="午科技", credit_code=code(7)[:8].lower() + " " + code(7)[9:])
        typed = code(7)[:8] + code(7)[9:]  # the same text the other way round: what matters is the fold
    else:
        legacy = make_enterprise(name="午科技", credit_code=f" {code(7)[:9].lower()} {code(7)[9:]}")
        typed = code(7)
    u = make_user()
    with session_scope() as s:
        if typed == code(7):
            request_enterprise_binding(s, s.get(User, u.id), name="午科技", credit_code=typed)
            assert s.get(User, u.id).enterprise_id == legacy.id
        assert services.find_enterprise(s, typed.lower()).id == legacy.id


def test_staff_cannot_file_a_second_copy_of_a_lower_case_legacy_file(app_ctx, make_enterprise):
    make_enterprise(name="上海未科技有限公司", credit_code=code(8).lower())
    with pytest.raises(Conflict, match="上海未科技有限公司"), session_scope() as s:
        services.create_enterprise(s, ACTOR, {"name": "未科技", "credit_code": code(8)})


def test_search_and_import_find_a_lower_case_legacy_file(app_ctx, make_enterprise, make_user, db):
    from wxapp_backend.enterprises import importer

    legacy = make_enterprise(name="上海申科技有限公司", credit_code=code(9).lower())
    u = make_user(enterprise_id=legacy.id, binding_state="pending")
    with session_scope() as s:
        assert [e.id for e in services.search_enterprises(s, q=code(9)).items] == [legacy.id]
        assert [x.id for x in services.list_users(s, q=code(9)).items] == [u.id]
    data = f"企业名称,统一社会信用代码,行业\n上海申科技有限公司,{code(9)},软件\n".encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv", data)
    assert report.ok and (report.created, report.updated) == (0, 1), report
    assert db.scalar(select(Enterprise.industry).where(Enterprise.id == legacy.id)) == "软件"


# --- 3. chat intake names a retired duplicate --------------------------------------------------------

def test_chat_intake_maps_a_retired_duplicates_name_to_the_kept_file(app_ctx, make_enterprise, make_building):
    from wxapp_backend.appeals import intake

    building = make_building(name="酉大厦")
    keep, dup = _merged_pair(make_enterprise, keep_name="上海酉科技有限公司", dup_name="酉科技", n=10)
    _set(keep.id, building_id=building.id)
    with session_scope() as s:
        found = intake.match_place(s, "酉科技")
    assert found["enterprise_id"] == keep.id and found["building_id"] == building.id


def test_a_chat_draft_made_before_a_merge_files_into_the_kept_file(app_ctx, make_enterprise, make_user, db):
    """A verified contact's draft named the duplicate (their file when the chat began); the merge moved them to
    the kept file, and the appeal went in with no enterprise at all."""
    from wxapp_backend.appeals import intake
    from wxapp_backend.appeals.models import Appeal

    keep = make_enterprise(name="上海戌科技有限公司", credit_code=code(11))
    dup = make_enterprise(name="戌科技", credit_code=INVALID)
    u = make_user(enterprise_id=dup.id, binding_state="verified", role="enterprise_contact")
    with session_scope() as s:
        draft = {"id": "d-s12", "content": "园区停车位不够，能否协调", "contact_name": "王五",
                 "contact_phone": "13800138000", **intake.chat_profile(s, u.id)}
    assert draft["enterprise_id"] == dup.id
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, keep.id, dup.id)
    with session_scope() as s:
        appeal_id = intake.submit_from_chat(s, u.id, draft, account="oa").id
    row = db.scalar(select(Appeal).where(Appeal.id == appeal_id))
    assert (row.enterprise_id, row.enterprise_name) == (keep.id, "上海戌科技有限公司")


def test_the_chat_offers_the_kept_file_to_a_contact_left_on_a_retired_one(app_ctx, make_enterprise, make_user):
    from wxapp_backend.appeals import intake

    keep, dup = _merged_pair(make_enterprise, keep_name="上海乾科技有限公司", dup_name="乾科技", n=15)
    u = make_user(enterprise_id=dup.id, binding_state="verified", role="enterprise_contact")  # a lost race
    with session_scope() as s:
        profile = intake.chat_profile(s, u.id)
    assert (profile["enterprise_id"], profile["enterprise_name"]) == (keep.id, "上海乾科技有限公司")


# --- 4. deleting a kept file --------------------------------------------------------------------------

def test_deleting_a_kept_file_takes_its_retired_duplicates_with_it(client, make_enterprise, make_user, user_token,
                                                                   db):
    """The duplicates merged into a deleted file stayed retired pointing at nothing: a user typing a duplicate's
    code was then bound to a file no list shows (and staff could neither edit nor merge it)."""
    keep, dup = _merged_pair(make_enterprise, keep_name="上海亥科技有限公司", dup_name="亥科技", n=12)
    dup_code = code(13)
    _set(dup.id, credit_code=dup_code)  # a valid code of its own (a merge of old files keeps both on record)
    with session_scope() as s:
        services.delete_enterprise(s, ADMIN, keep.id)
    assert db.scalar(select(Enterprise.id)) is None
    rows = list(db.scalars(select(AuditLog).where(AuditLog.action == "enterprise.deleted").order_by(AuditLog.id)))
    by_target = {r.target_id: r.data for r in rows}
    assert by_target[str(keep.id)]["retired_files_deleted"] == [dup.id]
    assert by_target[str(dup.id)]["with_kept_file"] == keep.id
    u = make_user()
    r = client.post("/api/v1/me/enterprise", json={"name": "亥科技", "credit_code": dup_code}, headers=user_token(u))
    assert r.status_code == 200, r.get_json()
    fresh = db.scalar(select(Enterprise).where(Enterprise.credit_code == dup_code))
    assert fresh.retired_at is None and r.get_json()["enterprise"]["id"] == fresh.id


def test_the_delete_button_of_a_kept_file_says_its_duplicates_go_too(client, make_enterprise, make_staff,
                                                                      console_login):
    keep, _dup = _merged_pair(make_enterprise, keep_name="上海子丑有限公司", dup_name="子丑", n=14)
    console_login(make_staff(role="admin"))
    page = client.get(f"/console/enterprises/{keep.id}").get_data(as_text=True)
    assert "合并进来的 1 份留底档案" in page


# --- further defects -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["？？", "🙂🙂", "12", "!!!", "上海甲\n科技有限公司"])
def test_an_enterprise_name_without_words_is_refused_in_chinese(client, make_user, user_token, make_staff,
                                                                staff_headers, name, db):
    """A binding request named “？？” (or 🙂🙂, or 12) made a file in the registry under that name."""
    from wxapp_backend.enterprises import importer

    r = client.post("/api/v1/me/enterprise", json={"name": name, "credit_code": code(20)},
                    headers=user_token(make_user()))
    assert r.status_code == 422 and "企业名称" in r.get_json()["fields"]["name"], r.get_json()
    r = client.post("/api/v1/staff/enterprises", json={"name": name, "credit_code": code(21)},
                    headers=staff_headers(make_staff(role="staff")))
    assert r.status_code == 422 and "企业名称" in r.get_json()["fields"]["name"], r.get_json()
    data = ("企业名称,统一社会信用代码\n" + '"' + name + '"' + f",{code(22)}\n").encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv", data)
    assert not report.ok and "企业名称" in str(report.errors[0])
    assert db.scalar(select(Enterprise.id)) is None


def test_merging_by_a_code_both_files_share_means_the_other_file(client, make_enterprise, make_staff, staff_headers,
                                                                 console_login, db):
    """The lower-case legacy file and the new one have the same code: naming it from the new file's page
    answered '不能把档案合并到它自己'."""
    keep = make_enterprise(name="上海坤科技有限公司", credit_code=code(23))
    dup = make_enterprise(name="坤科技", credit_code=code(23).lower())
    r = client.post(f"/api/v1/staff/enterprises/{keep.id}/merge", json={"duplicate": code(23)},
                    headers=staff_headers(make_staff(role="admin")))
    assert r.status_code == 200, r.get_json()
    assert db.scalar(select(Enterprise.merged_into_id).where(Enterprise.id == dup.id)) == keep.id
    # ... and the console form the same way round.
    other = make_enterprise(name="上海艮科技有限公司", credit_code=code(24))
    legacy = make_enterprise(name="艮科技", credit_code=code(24).lower())
    token = console_login(make_staff(role="admin"))
    r = client.post(f"/console/enterprises/{legacy.id}/merge", data={"duplicate": code(24), "csrf_token": token})
    assert r.status_code == 302, r.get_data(as_text=True)
    assert db.scalar(select(Enterprise.merged_into_id).where(Enterprise.id == other.id)) == legacy.id


def test_a_company_name_typed_with_other_brackets_is_still_recognised(app_ctx, make_enterprise):
    """“上海酉(集团)科技有限公司” typed in the chat, “上海酉（集团）科技有限公司” on file: the appeal went in without
    its enterprise, and the two files were not offered as likely duplicates either."""
    from wxapp_backend.appeals import intake

    e = make_enterprise(name="上海巽（集团）科技有限公司", credit_code=code(25))
    twin = make_enterprise(name="上海巽(集团) 科技有限公司", credit_code=INVALID)
    with session_scope() as s:
        assert intake.match_place(s, "上海巽(集团)科技有限公司").get("enterprise_id") == e.id
        assert [d.id for d in services.possible_duplicates(s, s.get(Enterprise, e.id))] == [twin.id]


def test_the_kept_legacy_file_can_still_be_edited_after_a_merge(client, make_enterprise, make_staff, console_login,
                                                                 db):
    """The old lower-case file was kept and the upper-case one a binding made was merged into it: the edit form
    sends the code back (folded to upper case), which the retired file holds, and every save was refused."""
    keep = make_enterprise(name="上海离科技有限公司", credit_code=code(26).lower())
    dup = make_enterprise(name="离科技", credit_code=code(26))
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, keep.id, dup.id)
    token = console_login(make_staff(role="staff"))
    form = {"name": "上海离科技有限公司", "credit_code": keep.credit_code, "industry": "软件", "csrf_token": token}
    r = client.post(f"/console/enterprises/{keep.id}/edit", data=form)
    assert r.status_code == 302, r.get_data(as_text=True)
    assert db.scalar(select(Enterprise.industry).where(Enterprise.id == keep.id)) == "软件"
    # A legacy file with no such twin gets its code written the standard way by the same save.
    alone = make_enterprise(name="上海坎科技有限公司", credit_code=code(27).lower())
    r = client.post(f"/console/enterprises/{alone.id}/edit",
                    data={**form, "name": "上海坎科技有限公司", "credit_code": alone.credit_code})
    assert r.status_code == 302
    assert db.scalar(select(Enterprise.credit_code).where(Enterprise.id == alone.id)) == code(27)


def test_an_import_updates_a_kept_legacy_file_after_a_merge(app_ctx, make_enterprise, db):
    """The same pair through the import: the row's code was written onto the kept file, collided with the
    retired one, and the whole import was refused as '有其他人同时修改了相同的档案'."""
    from wxapp_backend.enterprises import importer

    keep = make_enterprise(name="上海震科技有限公司", credit_code=code(28).lower())
    dup = make_enterprise(name="震科技", credit_code=code(28))
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, keep.id, dup.id)
    data = f"企业名称,统一社会信用代码,行业\n上海震科技有限公司,{code(28)},软件\n".encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv", data)
    assert report.ok and report.updated == 1, report
    assert db.scalar(select(Enterprise.industry).where(Enterprise.id == keep.id)) == "软件"


def test_staff_find_a_user_by_a_phone_number_pasted_with_blanks(app_ctx, make_user):
    """The number as people write it (“138 0013 8000”, “138-0013-8000”) found nobody."""
    u = make_user(phone="13800138000", nickname="小王")
    make_user(phone="13900139000")
    with session_scope() as s:
        for q in ("138 0013 8000", "138-0013-8000", "１３８００１３８０００"):
            assert [x.id for x in services.list_users(s, q=q).items] == [u.id], q


def test_search_finds_a_name_typed_with_other_brackets(app_ctx, make_enterprise, make_user):
    e = make_enterprise(name="上海艮（集团）有限公司", credit_code=code(30))
    u = make_user(enterprise_id=e.id, binding_state="pending")
    with session_scope() as s:
        assert [x.id for x in services.search_enterprises(s, q="艮(集团)").items] == [e.id]
        assert [x.id for x in services.list_users(s, q="艮(集团)").items] == [u.id]


def test_emptying_a_required_field_in_an_edit_is_refused_not_ignored(client, make_enterprise, make_building,
                                                                      make_staff, console_login, db):
    """The name box emptied in the edit form came as null, which the edit skipped (the API's rule: a required
    field is never cleared by null): the page said 企业档案已保存 with the old name still there."""
    e = make_enterprise(name="上海乾元科技有限公司", credit_code=code(31))
    token = console_login(make_staff(role="staff"))
    r = client.post(f"/console/enterprises/{e.id}/edit", data={"name": "", "credit_code": code(31),
                                                              "industry": "软件", "csrf_token": token})
    assert r.status_code == 422 and "请填写企业名称" in r.get_data(as_text=True)
    assert db.scalar(select(Enterprise.industry).where(Enterprise.id == e.id)) == ""
    b = make_building(name="乾元大厦")
    r = client.post(f"/console/buildings/{b.id}/edit", data={"name": " ", "address": "新华路1号", "csrf_token": token})
    assert r.status_code == 422 and "请填写楼宇名称" in r.get_data(as_text=True)


def test_retiring_a_kept_file_by_a_merge_re_points_its_duplicates(app_ctx, make_enterprise, make_user, db):
    """The other half of deleting a kept file: merged into a third file, its duplicates follow it there."""
    final = make_enterprise(name="上海巳午科技有限公司", credit_code=code(32))
    kept = make_enterprise(name="巳午科技", credit_code=code(32).lower())
    dup = make_enterprise(name="巳午", credit_code=INVALID)
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, kept.id, dup.id)
    u = make_user(enterprise_id=dup.id, binding_state="pending", role="enterprise_contact")  # a lost race
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, final.id, kept.id)
    assert db.scalar(select(Enterprise.merged_into_id).where(Enterprise.id == dup.id)) == final.id
    with session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=True, enterprise_id=dup.id)
    assert (_user(db, u.id).enterprise_id, _user(db, u.id).binding_state) == (final.id, "verified")
    row = db.scalar(select(AuditLog).where(AuditLog.action == "enterprise.merged", AuditLog.target_id == str(final.id)))
    assert row.data["moved"]["retired_files"] == [dup.id]


@pytest.mark.postgres
def test_a_binding_request_racing_a_deletion_gets_a_fresh_file(app, app_ctx, make_enterprise, make_user, db):
    """An admin deleted the file while a user's request for its code was being written: the request failed on
    the foreign key (a 500 for the user). Now it waits for the deletion and makes a fresh file to check."""
    from wxapp_backend.auth.services import request_enterprise_binding

    gone = make_enterprise(name="上海丙丁科技有限公司", credit_code=code(34))
    u = make_user()
    deleting, errors = threading.Event(), []

    def admin():
        try:
            with app.app_context(), session_scope() as s:
                services.delete_enterprise(s, ADMIN, gone.id)
                deleting.set()
                threading.Event().wait(0.6)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            deleting.set()

    def applicant():
        try:
            deleting.wait(5)
            with app.app_context(), session_scope() as s:
                request_enterprise_binding(s, s.get(User, u.id), name="丙丁科技", credit_code=code(34))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=admin), threading.Thread(target=applicant)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, errors
    row = _user(db, u.id)
    fresh = db.scalar(select(Enterprise).where(Enterprise.credit_code == code(34)))
    assert fresh is not None and fresh.id != gone.id and fresh.note.startswith("由企业联系人")
    assert (row.enterprise_id, row.binding_state) == (fresh.id, "pending")
