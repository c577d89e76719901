"""Enterprises, buildings, grids and bindings (second pass of session 12): each test fails without its fix."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import importer, services
from wxapp_backend.enterprises.models import Building, Enterprise

ACTOR = Actor("staff", 3, role="staff")
ADMIN = Actor("staff", 1, role="admin")
INVALID = "91310106MA0000002X"  # an old file's code, from before the check digit was validated
ZW = "\u200b"  # zero-width space, the commonest of the invisible characters pasted from web pages and Word


def code(n: int) -> str:
    return demo_credit_code("91310113", n)


def _set(enterprise_id: int, **values) -> None:
    """Write columns as old data left them, past every service check."""
    with session_scope() as s:
        s.execute(Enterprise.__table__.update().where(Enterprise.id == enterprise_id).values(**values))


# --- 1. invisible characters in names and codes ------------------------------------------------------

@pytest.mark.parametrize("mark", ["\u200b", "\u200c", "\u200d", "\ufeff", "\u2060", "\u202e", "\u00ad"])
def test_a_binding_request_with_invisible_characters_files_the_clean_name(client, make_user, user_token, db,
                                                                           mark):
    """A name pasted from a web page carried a zero-width space: the file was made under a name that no exact
    comparison (the chat's enterprise match, staff's duplicate check) ever found again."""
    u = make_user()
    r = client.post("/api/v1/me/enterprise",
                    json={"name": f"上海甲{mark}科技有限公司{mark}", "credit_code": mark + code(1) + mark},
                    headers=user_token(u))
    assert r.status_code == 200, r.get_json()
    e = db.scalar(select(Enterprise))
    assert (e.name, e.credit_code) == ("上海甲科技有限公司", code(1))
    asked = db.scalar(select(AuditLog).where(AuditLog.action == "binding.requested"))
    assert asked.data["name_given"] == "上海甲科技有限公司"


def test_a_name_of_invisible_characters_only_is_refused_in_chinese(client, make_user, user_token, db):
    r = client.post("/api/v1/me/enterprise", json={"name": f"甲{ZW}{ZW}\u2060", "credit_code": code(2)},
                    headers=user_token(make_user()))
    assert r.status_code == 422 and "企业名称" in r.get_json()["fields"]["name"], r.get_json()
    assert db.scalar(select(Enterprise.id)) is None


def test_staff_forms_store_names_without_invisible_characters(client, make_staff, staff_headers, db):
    headers = staff_headers(make_staff(role="staff"))
    r = client.post("/api/v1/staff/buildings", json={"name": f"新华{ZW}大厦", "address": "新华路\ufeff1号"},
                    headers=headers)
    assert r.status_code == 201, r.get_json()
    r = client.post("/api/v1/staff/enterprises",
                    json={"name": f"上海乙{ZW}科技有限公司", "credit_code": code(3), "contact_name": "王\u200d五",
                          "building_id": r.get_json()["id"], "tags": [f"{ZW}软件"]}, headers=headers)
    assert r.status_code == 201, r.get_json()
    e = db.scalar(select(Enterprise))
    assert (e.name, e.contact_name, e.tags, e.building.name) == ("上海乙科技有限公司", "王五", ["软件"], "新华大厦")
    # ... so the same name typed clean is a duplicate, not a second building.
    r = client.post("/api/v1/staff/buildings", json={"name": "新华大厦"}, headers=headers)
    assert r.status_code == 409, r.get_json()


def test_an_import_with_invisible_characters_matches_the_files_and_buildings(app_ctx, make_enterprise,
                                                                              make_building, db):
    b = make_building(name="新华大厦")
    e = make_enterprise(name="上海丙科技有限公司", credit_code=code(4))
    data = ("企业名称,统一社会信用代码,楼宇,联系人\n"
            f"上海丙{ZW}科技有限公司,{code(4)}{ZW},新华\u2060大厦,李\ufeff四\n"
            f"\ufeff上海丁科技有限公司,{ZW}{code(5)},\u200c新华大厦,\n").encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv", data)
    assert report.ok and (report.created, report.updated) == (1, 1), report
    rows = {x.credit_code: x for x in db.scalars(select(Enterprise))}
    assert (rows[code(4)].id, rows[code(4)].name, rows[code(4)].building_id, rows[code(4)].contact_name) == \
        (e.id, "上海丙科技有限公司", b.id, "李四")
    assert (rows[code(5)].name, rows[code(5)].building_id) == ("上海丁科技有限公司", b.id)
    # Buildings by name the same way.
    data = f"楼宇名称,地址\n新华{ZW}大厦,新华路2号\n".encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "buildings", "b.csv", data)
    assert report.ok and (report.created, report.updated) == (0, 1), report
    assert db.scalar(select(Building.address).where(Building.id == b.id)) == "新华路2号"


def test_an_old_file_with_an_invisible_character_is_still_found(app_ctx, make_enterprise, make_user, db):
    """Files written before the fix keep their invisible characters: search, the chat's name match, the duplicate
    check and a binding by code compare past them."""
    from wxapp_backend.appeals import intake
    from wxapp_backend.auth.services import request_enterprise_binding

    old = make_enterprise(name=f"上海戊{ZW}科技有限公司", credit_code=code(6))
    twin = make_enterprise(name="上海戊科技有限公司", credit_code=INVALID)
    # A 19th, invisible character in the code (PostgreSQL's VARCHAR(18) never held one: the same code there).
    stored = code(7) + "\ufeff" if db.bind.dialect.name == "sqlite" else code(7)
    legacy = make_enterprise(name="上海己科技有限公司", credit_code=stored)
    with session_scope() as s:
        assert [x.id for x in services.search_enterprises(s, q="上海戊科技").items] == [old.id, twin.id]
        assert intake.match_place(s, "上海戊科技有限公司")["enterprise_id"] == twin.id
        assert intake.match_place(s, f"上海{ZW}己科技有限公司")["enterprise_id"] == legacy.id
        assert [d.id for d in services.possible_duplicates(s, s.get(Enterprise, old.id))] == [twin.id]
        assert services.find_enterprise(s, code(7)).id == legacy.id
    u = make_user()
    with session_scope() as s:
        request_enterprise_binding(s, s.get(User, u.id), name="上海己科技有限公司", credit_code=code(7))
        assert s.get(User, u.id).enterprise_id == legacy.id


def test_an_emoji_joined_by_a_zero_width_joiner_in_a_nickname_stays_whole(client, make_user, user_token):
    """The joiner inside 👨‍👩‍👧 is part of the emoji, not an invisible stray: it is kept."""
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    r = client.patch("/api/v1/me", json={"nickname": f"小王{family}"}, headers=user_token(make_user()))
    assert r.status_code == 200 and r.get_json()["nickname"] == f"小王{family}", r.get_json()


# --- 2. a merge's moved users each have their own audit row ----------------------------------------------

def test_each_user_a_merge_moves_has_the_move_in_their_history(client, make_enterprise, make_user, make_staff,
                                                               console_login, db):
    """Only the merge's own row (on the kept file) listed the users: the history of a user (the audit log
    filtered to them) showed a binding requested for one file and verified for another, with nothing between."""
    keep = make_enterprise(name="上海庚科技有限公司", credit_code=code(8))
    dup = make_enterprise(name="庚科技", credit_code=INVALID)
    other = make_enterprise(name="上海辛贸易有限公司", credit_code=code(9))
    verified = make_user(enterprise_id=dup.id, binding_state="verified", role="enterprise_contact")
    pending = make_user(enterprise_id=dup.id, binding_state="pending", role="enterprise_contact")
    switching = make_user(enterprise_id=other.id, binding_state="verified", role="enterprise_contact",
                          pending_enterprise_id=dup.id)
    settled = make_user(enterprise_id=keep.id, binding_state="verified", role="enterprise_contact",
                        pending_enterprise_id=dup.id)
    untouched = make_user(enterprise_id=other.id, binding_state="verified", role="enterprise_contact")
    token = console_login(make_staff(role="admin"))
    r = client.post(f"/console/enterprises/{keep.id}/merge", data={"duplicate": str(dup.id), "csrf_token": token})
    assert r.status_code == 302, r.get_data(as_text=True)

    def history(user):
        return [(row.action, row.data) for row in db.scalars(select(AuditLog).where(
            AuditLog.target_type == "users", AuditLog.target_id == str(user.id)).order_by(AuditLog.id))]

    assert history(verified) == [("binding.merged", {
        "enterprise_id": keep.id, "previous_enterprise_id": dup.id, "binding_state": "verified",
        "moved": "binding", "duplicate_name": "庚科技", "kept_name": "上海庚科技有限公司"})]
    assert history(pending)[0][1]["moved"] == "binding" and history(pending)[0][1]["binding_state"] == "pending"
    assert history(switching) == [("binding.merged", {
        "enterprise_id": keep.id, "previous_enterprise_id": dup.id, "binding_state": "verified",
        "moved": "application", "duplicate_name": "庚科技", "kept_name": "上海庚科技有限公司",
        "verified_enterprise_id": other.id})]
    assert history(settled)[0][1]["moved"] == "application_settled"
    assert history(untouched) == []
    # The console's audit page, filtered to the user, shows it.
    page = client.get(f"/console/audit?target_type=users&target_id={pending.id}").get_data(as_text=True)
    assert "binding.merged" in page and "庚科技" in page


def test_each_user_a_deletion_unbinds_has_it_in_their_history(app_ctx, make_enterprise, make_user, db):
    """The same for a deletion: only the file's deletion row listed the users it unbound."""
    gone = make_enterprise(name="上海子科技有限公司", credit_code=code(12))
    other = make_enterprise(name="上海丑科技有限公司", credit_code=code(13))
    bound = make_user(enterprise_id=gone.id, binding_state="verified", role="enterprise_contact")
    switching = make_user(enterprise_id=gone.id, binding_state="verified", role="enterprise_contact",
                          pending_enterprise_id=other.id)
    applying = make_user(enterprise_id=other.id, binding_state="verified", role="enterprise_contact",
                         pending_enterprise_id=gone.id)
    with session_scope() as s:
        services.delete_enterprise(s, ADMIN, gone.id)

    def rows(user):
        return [(r.action, r.data) for r in db.scalars(select(AuditLog).where(
            AuditLog.target_type == "users", AuditLog.target_id == str(user.id)))]

    assert rows(bound) == [("binding.removed", {"enterprise_id": gone.id, "enterprise_name": "上海子科技有限公司",
                                                "binding_state": "verified", "now": "none"})]
    assert rows(switching) == [("binding.removed", {"enterprise_id": gone.id, "enterprise_name": "上海子科技有限公司",
                                                    "binding_state": "verified", "now": "pending",
                                                    "pending_enterprise_id": other.id})]
    assert rows(applying) == [("binding.removed", {"enterprise_id": gone.id, "enterprise_name": "上海子科技有限公司",
                                                   "binding_state": "verified", "now": "application_dropped",
                                                   "verified_enterprise_id": other.id})]


# --- 3. a console decision naming no file -------------------------------------------------------------------

@pytest.mark.parametrize("sent", ["abc", "12a", "-3", "1.5", "０x"])
def test_a_console_decision_with_a_bad_enterprise_id_is_refused_in_chinese(client, make_enterprise, make_user,
                                                                          make_staff, console_login, db, sent):
    """The hidden field altered (or a page from another version): the stale-page check was skipped and the
    decision went through for whatever the user had applied for by then."""
    e = make_enterprise(name="上海壬科技有限公司", credit_code=code(10))
    u = make_user(enterprise_id=e.id, binding_state="pending", role="enterprise_contact")
    token = console_login(make_staff(role="staff"))
    r = client.post(f"/console/users/{u.id}/binding", data={"approve": "1", "enterprise_id": sent,
                                                           "csrf_token": token})
    assert 400 <= r.status_code < 500, r.status_code
    page = r.get_data(as_text=True)
    assert "请刷新页面" in page and "Traceback" not in page
    db.expire_all()
    assert db.scalar(select(User.binding_state).where(User.id == u.id)) == "pending"
    assert db.scalar(select(AuditLog.id).where(AuditLog.action == "binding.verified")) is None


def test_a_console_decision_without_the_field_still_goes_through(client, make_enterprise, make_user, make_staff,
                                                                 console_login, db):
    e = make_enterprise(name="上海癸科技有限公司", credit_code=code(11))
    u = make_user(enterprise_id=e.id, binding_state="pending", role="enterprise_contact")
    token = console_login(make_staff(role="staff"))
    r = client.post(f"/console/users/{u.id}/binding", data={"approve": "1", "enterprise_id": " ",
                                                           "csrf_token": token})
    assert r.status_code == 302
    assert db.scalar(select(User.binding_state).where(User.id == u.id)) == "verified"


# --- further defects -------------------------------------------------------------------------------------

def test_a_building_named_with_other_blanks_or_brackets_is_the_same_building(client, make_building, make_staff,
                                                                            staff_headers, db):
    """“新华 大厦” (or “SOHO(东海)广场”) was filed as a second building beside “新华大厦”: enterprises and users then
    split between the two, and the chat's building match picked one of them."""
    make_building(name="新华大厦")
    make_building(name="SOHO（东海）广场")
    headers = staff_headers(make_staff(role="staff"))
    for name in ("新华 大厦", "新华\u3000大厦", "soho(东海)广场"):
        r = client.post("/api/v1/staff/buildings", json={"name": name}, headers=headers)
        assert r.status_code == 409, (name, r.get_json())
        assert "已有名为「" in r.get_json()["message"]
    assert db.scalar(select(Building.id).where(Building.name == "新华 大厦")) is None


def test_a_building_import_with_the_same_building_twice_is_refused(app_ctx, make_building, db):
    data = "楼宇名称,地址\n新华大厦,新华路1号\n新华 大厦,新华路2号\n".encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "buildings", "b.csv", data)
    assert not report.ok and "与第 2 行重复" in str(report.errors[0]) and report.errors[0].row == 3, report
    assert db.scalar(select(Building.id)) is None


def test_a_building_import_updates_the_building_written_another_way(app_ctx, make_building, db):
    b = make_building(name="SOHO东海广场", address="")
    data = "楼宇名称,地址\nsoho 东海广场,延安西路1号\n".encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "buildings", "b.csv", data)
    assert report.ok and (report.created, report.updated) == (0, 1), report
    assert db.scalar(select(Building.name).where(Building.id == b.id)) == "SOHO东海广场"  # the name on file stays
    assert db.scalar(select(Building.address).where(Building.id == b.id)) == "延安西路1号"
    assert db.scalar(select(Building.id).where(Building.id != b.id)) is None


def test_an_enterprise_import_finds_its_building_written_another_way(app_ctx, make_building, db):
    """A register's “新华（一期）大厦” for the building filed as “新华(一期)大厦”: every row was refused as
    “楼宇不存在”, though the building was right there."""
    b = make_building(name="新华(一期)大厦")
    data = f"企业名称,统一社会信用代码,楼宇\n上海午未科技有限公司,{code(20)},新华（一期）大厦\n".encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv", data)
    assert report.ok and report.created == 1, report
    assert db.scalar(select(Enterprise.building_id)) == b.id
    # Two old near-twins: the exact spelling still finds its own; a third spelling is not guessed.
    exact = make_building(name="新华（一期） 大厦")
    data = (f"企业名称,统一社会信用代码,楼宇\n上海申酉科技有限公司,{code(21)},新华（一期） 大厦\n"
            f"上海戌亥科技有限公司,{code(22)},新华 (一期) 大厦\n").encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv", data)
    assert [str(p) for p in report.errors] == [
        "第 3 行「楼宇」: 「新华 (一期) 大厦」和已有的「新华(一期)大厦」、「新华（一期） 大厦」写法相近，请写出其中准确的一个"]
    data = f"企业名称,统一社会信用代码,楼宇\n上海申酉科技有限公司,{code(21)},新华（一期） 大厦\n".encode()
    with session_scope() as s:
        assert importer.import_file(s, ADMIN, "enterprises", "e.csv", data).ok
    assert db.scalar(select(Enterprise.building_id).where(Enterprise.credit_code == code(21))) == exact.id


def test_deleting_a_building_lists_the_retired_files_it_clears(app_ctx, make_building, make_enterprise, db):
    """A retired duplicate filed in the building (it counts nowhere, so it does not stop the deletion) lost its
    building silently: the deletion's row named users, appeals and activities cleared, not these files."""
    b = make_building(name="戌亥大厦")
    keep = make_enterprise(name="上海戌亥科技有限公司", credit_code=code(23))
    dup = make_enterprise(name="戌亥科技", credit_code=INVALID, building_id=b.id)
    with session_scope() as s:
        services.merge_enterprises(s, ADMIN, keep.id, dup.id)
        s.execute(Enterprise.__table__.update().where(Enterprise.id == keep.id).values(building_id=None))
    with session_scope() as s:
        services.delete_building(s, ADMIN, b.id)
    row = db.scalar(select(AuditLog).where(AuditLog.action == "building.deleted"))
    assert row.data["cleared_enterprises"] == [dup.id]


def test_a_bad_binding_state_filter_names_the_states_in_chinese(client, make_staff, console_login, staff_headers):
    staff = make_staff(role="staff")
    r = client.get("/api/v1/staff/users?state=waiting", headers=staff_headers(staff))
    assert r.status_code in (400, 422) and "待核实" in r.get_json()["message"], r.get_json()
    console_login(staff)
    r = client.get("/console/users?state=waiting")
    assert 400 <= r.status_code < 500 and "待核实" in r.get_data(as_text=True)


def test_the_building_picker_finds_a_name_typed_with_other_blanks_or_brackets(client, make_building):
    """The mini-program's building search (and staff's) found nothing for “新华 大厦” or “(一期)” though the
    building is filed as “新华大厦（一期）”: the user could not pick their building."""
    b = make_building(name="新华大厦（一期）")
    make_building(name="东海广场")
    for q in ("新华 大厦", "大厦(一期)", "新华\u3000大厦"):
        r = client.get("/api/v1/buildings", query_string={"q": q})
        assert [x["id"] for x in r.get_json()["items"]] == [b.id], q


def test_an_import_naming_one_enterprise_under_two_codes_warns(app_ctx, make_enterprise, db):
    """The same company twice in a register, the second time with another (valid) code: two files of one name
    were made and the report said only “新建 2 个企业”. Names are unique in a region; the report now says which rows
    to check (the files are made: two valid codes may be two enterprises, and the import is not refused)."""
    make_enterprise(name="上海乾坤科技有限公司", credit_code=code(30))
    data = (f"企业名称,统一社会信用代码\n上海未申科技有限公司,{code(31)}\n上海酉戌贸易有限公司,{code(32)}\n"
            f"上海未申科技有限公司 ,{code(33)}\n上海乾坤科技有限公司,{code(34)}\n").encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv", data)
    assert report.ok and report.created == 4, report
    text = " ".join(report.warnings)
    assert "第 4 行的企业名称「上海未申科技有限公司」与第 2 行相同" in text, report.warnings
    assert "第 5 行的企业名称「上海乾坤科技有限公司」已登记" in text and code(30) in text, report.warnings
    assert "上海酉戌贸易有限公司" not in text


def test_staff_find_a_user_by_a_number_pasted_with_the_country_code(app_ctx, make_user):
    """“+86 138 0013 8000” (as a phone's contact card copies it) found nobody."""
    u = make_user(phone="13800138000", nickname="小王")
    make_user(phone="13900139000")
    with session_scope() as s:
        for q in ("+86 138 0013 8000", "+86-13800138000", "008613800138000", "86 13800138000", "＋８６ １３８００１３８０００"):
            assert [x.id for x in services.list_users(s, q=q).items] == [u.id], q
        assert services.list_users(s, q="+86").total == 0  # a country code alone is no number


@pytest.mark.parametrize("typed, stored", [("138-0013-8000", "13800138000"), ("+86 138 0013 8000", "13800138000"),
                                           ("0086-13800138000", "13800138000"), ("(021)62345678", "021-62345678"),
                                           ("（021）6234-5678", "021-62345678")])
def test_a_phone_number_written_the_usual_ways_is_taken(app_ctx, client, make_user, user_token, db, typed, stored):
    """A register's contact phones written “138-0013-8000” or “+86 138…” refused the whole import (“格式不对”), and
    a user could not save their number as their phone copies it."""
    data = f"企业名称,统一社会信用代码,联系电话\n上海坎离科技有限公司,{code(40)},{typed}\n".encode()
    with session_scope() as s:
        report = importer.import_file(s, ADMIN, "enterprises", "e.csv", data)
    assert report.ok, report
    assert db.scalar(select(Enterprise.contact_phone)) == stored
    r = client.patch("/api/v1/me", json={"phone": typed}, headers=user_token(make_user()))
    assert r.status_code == 200 and r.get_json()["phone"] == stored, r.get_json()


def test_a_number_that_is_no_phone_is_still_refused(client, make_user, user_token):
    for typed in ("+1 415 555 0100", "138-0013-800", "86-21-62345678x", "13800l38000"):
        r = client.patch("/api/v1/me", json={"phone": typed}, headers=user_token(make_user()))
        assert r.status_code == 422 and "手机号" in r.get_json()["fields"]["phone"], (typed, r.get_json())


@pytest.mark.parametrize("role", ["admin", "staff"])
def test_an_admin_reaches_a_users_history_from_the_users_list(client, make_user, make_staff, console_login, role):
    """The per-user rows (binding.requested, .merged, .verified …) were only found by typing the filter by hand."""
    u = make_user(nickname="小李")
    console_login(make_staff(role=role))
    page = client.get("/console/users").get_data(as_text=True)
    if role == "admin":
        assert f'/console/audit?target_type=users&amp;target_id={u.id}"' in page
        assert client.get(f"/console/audit?target_type=users&target_id={u.id}").status_code == 200
    else:  # the audit log is for admins: no dead link for the others
        assert "/console/audit?" not in page
