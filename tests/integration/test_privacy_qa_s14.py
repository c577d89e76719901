"""QA round 14 on privacy (who can see what): each test shows a defect that was found and fixed."""

from __future__ import annotations

from sqlalchemy import select

from wxapp_backend.audit import AuditLog


def _changes(db, action: str) -> list[dict]:
    db.expire_all()
    return [r.data["changes"] for r in db.scalars(select(AuditLog).where(AuditLog.action == action)
                                                   .order_by(AuditLog.id))]


def test_audit_rows_do_not_keep_contact_phone_numbers_in_full(client, make_staff, staff_headers, make_enterprise,
                                                             make_grid, db):
    """A user's own phone change is audited as ***5678, but an enterprise contact's or a grid specialist's number
    changed by staff went into the audit log in full, old and new: every admin reading 操作日志 (and every copy of
    the table) had other people's mobile numbers. The changes now keep the last four digits only, as for users."""
    hs = staff_headers(make_staff(role="staff"))
    ent = make_enterprise(contact_phone="13900001234")
    resp = client.patch(f"/api/v1/staff/enterprises/{ent.id}", json={"contact_phone": "13700005678"}, headers=hs)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["contact_phone"] == "13700005678"  # the file itself keeps the number
    [changes] = _changes(db, "enterprise.updated")
    assert changes["contact_phone"] == ["***1234", "***5678"]
    assert "13900001234" not in repr(changes) and "13700005678" not in repr(changes)

    from wxapp_backend.audit import Actor
    from wxapp_backend.db import session_scope
    from wxapp_backend.enterprises import services

    grid = make_grid(specialist_phone="")
    with session_scope() as s:
        services.update_grid(s, Actor("staff", 1, role="admin"), grid.id, {"specialist_phone": "13611112222"})
    [changes] = _changes(db, "grid.updated")
    assert changes["specialist_phone"] == ["", "***2222"]


def test_enterprise_page_counts_only_the_appeals_a_department_may_see(client, app, make_enterprise, make_user,
                                                                      user_token, make_staff, db):
    """A department account's 一企一档 page said “共 3 件，在办 3 件” of the enterprise's appeals, counting those given
    to other departments, while its queue and the 导出本企业问题清单 link beside the figure hold only its own: the
    page told it how many appeals other departments have with the enterprise. It now counts what that export lists;
    staff still see every appeal."""
    import re

    from wxapp_backend.appeals.models import Appeal
    from wxapp_backend.auth.models import User

    ent = make_enterprise()
    contact = make_user()
    row = db.get(User, contact.id)
    row.enterprise_id, row.binding_state = ent.id, "verified"
    db.commit()
    ids = []
    for i in range(3):
        resp = client.post("/api/v1/appeals", headers=user_token(contact), json={
            "content": f"园区门口的路灯坏了第{i}盏", "contact_name": "王五", "contact_phone": "13912345678",
            "enterprise_id": ent.id})
        assert resp.status_code == 201, resp.get_json()
        ids.append(resp.get_json()["id"])
    for appeal_id, department in zip(ids, ("税务所", "城运中心", "城运中心"), strict=True):
        appeal = db.get(Appeal, appeal_id)
        appeal.department = appeal.given_to = department
    db.commit()

    def counts(staff) -> str:
        c = app.test_client()
        page = c.get("/console/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        c.post("/console/login", data={"username": staff.username, "password": staff.plain_password,
                                       "csrf_token": token})
        page = c.get(f"/console/enterprises/{ent.id}").get_data(as_text=True)
        return re.sub(r"\s+", " ", re.search(r'id="appeal-counts">(.*?)</td>', page, re.S).group(1))

    assert "共 1 件，在办 1 件" in counts(make_staff(role="dept", department="税务所"))
    assert "没有本部门承办的本企业诉求" in counts(make_staff(role="dept", department="街道办"))
    assert "共 3 件，在办 3 件" in counts(make_staff(role="staff"))


def test_activity_zero_is_not_the_new_activity_form(client, make_staff, console_login, db):
    """/console/activities/0/edit (an id that cannot exist) showed the 新建活动 form, and posting it created a new
    activity, where every other missing id is a 404: a mistyped or forged edit link published an activity."""
    from sqlalchemy import func

    from wxapp_backend.activities.models import Activity

    token = console_login(make_staff(role="staff"))
    assert client.get("/console/activities/0/edit").status_code == 404
    resp = client.post("/console/activities/0/edit", data={
        "csrf_token": token, "category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂",
        "starts_at": "2030-01-02T12:00", "ends_at": "2030-01-02T13:00", "capacity": "5", "status": "published"})
    assert resp.status_code == 404
    assert db.scalar(select(func.count(Activity.id))) == 0


def test_staff_notes_on_routing_steps_stay_with_staff(client, make_user, user_token, make_staff, staff_headers):
    """受理 / 交办 / 开始办理 / 协调会办 through the staff API take a note (说明), and the enterprise's timeline showed it
    word for word: a scripted “交办给李科长，这家企业反复投诉” reached the enterprise, staff names and all, though the
    enterprise's view holds no internal routing or staff names. It now reads the step's own wording (诉求已受理,
    交办至税务所 ...), as 退单 and 延期 decisions already did; staff still read their note."""
    user = make_user()
    resp = client.post("/api/v1/appeals", headers=user_token(user), json={
        "content": "园区门口的路灯坏了很久没人修", "contact_name": "王五", "contact_phone": "13912345678"})
    appeal_id = resp.get_json()["id"]
    centre = staff_headers(make_staff(role="staff"))
    tax = make_staff(role="dept", department="税务所")
    make_staff(role="dept", department="城运中心")
    steps = ((centre, {"action": "accept", "note": "内部：李科长说这家企业反复投诉"}),
             (centre, {"action": "assign", "department": "税务所", "handler_id": tax.id, "note": "内部：交给李科长"}),
             (staff_headers(tax), {"action": "start", "note": "内部：先放一放"}),
             (staff_headers(tax), {"action": "coordinate", "note": "内部：让城运中心兜底",
                                   "tasks": [{"department": "城运中心", "description": "查看路灯", "working_days": 3}]}))
    for headers, body in steps:
        resp = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", json=body, headers=headers)
        assert resp.status_code == 200, resp.get_json()
    public = client.get(f"/api/v1/appeals/{appeal_id}", headers=user_token(user)).get_json()["timeline"]
    notes = {e["action"]: e["note"] for e in public}
    assert "内部" not in repr(public) and "李科长" not in repr(public)
    assert notes["accepted"] == "诉求已受理" and notes["assigned"] == "交办至税务所"
    assert notes["started"] == "开始办理" and notes["coordinating"] == "启动协调会办：城运中心"
    staff_view = client.get(f"/api/v1/staff/appeals/{appeal_id}", headers=centre).get_json()["timeline"]
    assert {e["note"] for e in staff_view} >= {b["note"] for _, b in steps}


def test_department_reads_only_its_own_similar_appeals_in_the_timeline(client, make_user, user_token, make_staff,
                                                                       staff_headers, make_building, db):
    """The staff detail's 相似诉求 list is limited to what a department account may open, but the timeline's 提交
    event carried the similar appeals found at submission in its data, whoever handled them: a department read the
    ids and numbers of other departments' appeals there. The event now lists only those it may open."""
    from wxapp_backend.appeals.models import Appeal

    building = make_building()
    user = make_user()
    ids = []
    for content in ("园区门口的路灯坏了很久没人修理", "园区门口的路灯坏了很久都没人修理"):
        resp = client.post("/api/v1/appeals", headers=user_token(user), json={
            "content": content, "contact_name": "王五", "contact_phone": "13912345678",
            "building_id": building.id, "category": "talent"})
        assert resp.status_code == 201, resp.get_json()
        ids.append(resp.get_json()["id"])
    for appeal_id, department in zip(ids, ("城运中心", "税务所"), strict=True):
        appeal = db.get(Appeal, appeal_id)
        appeal.department = appeal.given_to = department
    db.commit()
    admin = client.get(f"/api/v1/staff/appeals/{ids[1]}", headers=staff_headers(make_staff(role="admin"))).get_json()
    [submitted] = [e for e in admin["timeline"] if e["action"] == "submitted"]
    assert [s["id"] for s in submitted["data"]["similar"]] == [ids[0]]  # staff see what was found
    tax = staff_headers(make_staff(role="dept", department="税务所"))
    body = client.get(f"/api/v1/staff/appeals/{ids[1]}", headers=tax).get_json()
    [submitted] = [e for e in body["timeline"] if e["action"] == "submitted"]
    assert submitted["data"].get("similar", []) == [] and body["similar"] == []
    number = db.get(Appeal, ids[0]).number
    assert number not in repr(body)
