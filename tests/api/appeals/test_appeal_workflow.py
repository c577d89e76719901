"""The workflow through the staff actions API and the enterprise's side: states, 409s, 退单, 会办, ratings."""

from __future__ import annotations

from sqlalchemy import select

from wxapp_backend.appeals.models import AppealEvent, AppealTask
from wxapp_backend.appeals.states import TRANSITIONS, AppealStatus
from wxapp_backend.audit import AuditLog
from wxapp_backend.notices.models import Notification


def _walk_to_resolved(world, appeal_id):
    world.act(appeal_id, "accept")
    world.act(appeal_id, "assign", department="税务所")
    world.act(appeal_id, "start", headers=world.th)
    return world.act(appeal_id, "resolve", headers=world.th, resolution="已协调税务所更换税控盘")


def test_state_enum_and_table_cover_every_state():
    assert {s.value for s in AppealStatus} == {"submitted", "accepted", "assigned", "in_progress",
                                              "pending_enterprise", "coordinating", "resolved", "closed",
                                              "rejected", "duplicate", "withdrawn"}
    assert set(TRANSITIONS) == set(AppealStatus)
    assert not TRANSITIONS[AppealStatus.CLOSED] and not TRANSITIONS[AppealStatus.WITHDRAWN]


def test_full_loop_events_audit_and_notifications(client, world, db):
    a = world.submit()
    d = world.act(a["id"], "accept", headers=world.sh)
    assert d["status"] == "accepted" and d["first_responder_id"] == world.specialist.id
    assert d["handler_id"] == world.specialist.id and d["first_response_at"]
    d = world.act(a["id"], "assign", department="税务所", handler_id=world.tax_dept.id)
    assert d["status"] == "assigned" and d["handler_id"] == world.tax_dept.id
    assert d["first_responder_id"] == world.specialist.id  # 首问负责 never changes
    d = world.act(a["id"], "start", headers=world.th)
    d = world.act(a["id"], "resolve", headers=world.th, resolution="已更换税控盘")
    assert d["status"] == "resolved" and d["resolved_on_time"] is True
    events = db.scalars(select(AppealEvent).where(AppealEvent.appeal_id == a["id"]).order_by(AppealEvent.id)).all()
    moves = [(e.from_status, e.to_status) for e in events if e.to_status]
    assert moves == [("", "submitted"), ("submitted", "accepted"), ("accepted", "assigned"),
                     ("assigned", "in_progress"), ("in_progress", "resolved")]
    assert all(e.actor_type and e.created_at for e in events)
    assert db.scalar(select(AuditLog).where(AuditLog.action == "appeal.resolved")) is not None
    kinds = {n.kind for n in db.scalars(select(Notification))}
    assert kinds == {"appeal_accepted", "appeal_resolved"}
    # the enterprise sees a public timeline without internal notes
    mine = client.get(f"/api/v1/appeals/{a['id']}", headers=world.uh).get_json()
    assert mine["status"] == "resolved" and mine["can_rate"] is True
    assert any(t["status"] == "resolved" for t in mine["timeline"])
    assert "handler_id" not in mine and "department" not in mine


def test_illegal_move_is_409_and_changes_nothing(world, db):
    a = world.submit()
    before = world.detail(a["id"])
    resp = world.act(a["id"], "resolve", resolution="x", expect=409)
    assert resp["error"] == "illegal_transition"
    after = world.detail(a["id"])
    assert after["status"] == "submitted" and after["version"] == before["version"]
    assert len(after["timeline"]) == len(before["timeline"])
    world.act(a["id"], "start", expect=409)
    world.act(a["id"], "close", expect=409)


def test_stale_version_is_409(world):
    a = world.submit()
    v = world.detail(a["id"])["version"]
    world.act(a["id"], "accept", version=v)
    world.act(a["id"], "note", note="再看看", version=v, expect=409)


def test_unknown_action_and_missing_reason(world):
    a = world.submit()
    world.act(a["id"], "fly", expect=422)
    world.act(a["id"], "reject", expect=422)
    world.act(a["id"], "reject", reason="不属于本中心受理范围")
    assert world.detail(a["id"])["status"] == "rejected"


def test_dept_sees_only_its_department(client, world):
    a = world.submit()
    world.act(a["id"], "accept")
    world.act(a["id"], "assign", department="税务所")
    env_list = client.get("/api/v1/staff/appeals", headers=world.eh).get_json()
    assert env_list["total"] == 0
    assert client.get(f"/api/v1/staff/appeals/{a['id']}", headers=world.eh).status_code == 404
    world.act(a["id"], "start", headers=world.eh, expect=404)
    assert client.get("/api/v1/staff/appeals", headers=world.th).get_json()["total"] == 1
    world.act(a["id"], "accept", headers=world.th, expect=403)  # dept may not accept


def test_request_info_supplement_pauses_clock(client, world):
    a = world.submit()
    world.act(a["id"], "accept")
    d = world.act(a["id"], "request_info", note="请提供营业执照照片")
    assert d["status"] == "pending_enterprise" and d["sla_minutes_left"] is not None
    mine = client.get(f"/api/v1/appeals/{a['id']}", headers=world.uh).get_json()
    assert mine["info_request"] == "请提供营业执照照片" and mine["can_supplement"]
    resp = client.post(f"/api/v1/appeals/{a['id']}/supplement", json={"content": "已上传"}, headers=world.uh)
    assert resp.status_code == 200 and resp.get_json()["status"] == "accepted"
    resp = client.post(f"/api/v1/appeals/{a['id']}/supplement", json={"content": "再补充"}, headers=world.uh)
    assert resp.status_code == 409


def test_return_and_decide(world, db):
    a = world.submit()
    world.act(a["id"], "accept")
    d = world.act(a["id"], "assign", department="税务所")
    due = d["due_at"]
    world.act(a["id"], "return", headers=world.th, expect=422)  # a reason is required
    d = world.act(a["id"], "return", headers=world.th, reason="属于市场监管所职责")
    ret = d["returns"][0]
    assert ret["status"] == "pending" and ret["department"] == "税务所"
    world.act(a["id"], "return", headers=world.th, reason="再退一次", expect=409)
    world.act(a["id"], "decide_return", headers=world.th, return_id=ret["id"], accept=False, expect=403)
    d = world.act(a["id"], "decide_return", return_id=ret["id"], accept=True, department="市场监管所")
    assert d["department"] == "市场监管所" and d["status"] == "assigned"
    assert d["due_at"] == due  # the SLA clock never restarts
    world.act(a["id"], "decide_return", return_id=ret["id"], accept=True, department="x", expect=409)
    # a rejected return keeps the department
    world.act(a["id"], "return", reason="也不归我们")
    d = world.detail(a["id"])
    r2 = [r for r in d["returns"] if r["status"] == "pending"][0]
    d = world.act(a["id"], "decide_return", return_id=r2["id"], accept=False, note="请继续办理")
    assert d["department"] == "市场监管所" and d["due_at"] == due


def test_coordination_blocks_resolution_until_required_tasks_done(world):
    a = world.submit()
    world.act(a["id"], "accept")
    world.act(a["id"], "assign", department="税务所")
    d = world.act(a["id"], "coordinate", tasks=[
        {"department": "城运中心", "description": "现场核查", "working_days": 2},
        {"department": "市场监管所", "description": "参考意见", "required": False}])
    assert d["status"] == "coordinating" and len(d["tasks"]) == 2
    assert all(t["due_at"] for t in d["tasks"])
    world.act(a["id"], "resolve", resolution="已办结", expect=409)
    task = [t for t in d["tasks"] if t["department"] == "城运中心"][0]
    # the other department sees the appeal through its task and may close only its own task
    other = [t for t in d["tasks"] if t["department"] == "市场监管所"][0]
    world.act(a["id"], "complete_task", headers=world.eh, task_id=other["id"], expect=403)
    d = world.act(a["id"], "complete_task", headers=world.eh, task_id=task["id"], result="已核查")
    assert d["status"] == "in_progress"
    world.act(a["id"], "complete_task", task_id=task["id"], expect=409)
    assert world.act(a["id"], "resolve", resolution="已办结")["status"] == "resolved"


def test_extension_request_and_approval(world):
    a = world.submit()
    world.act(a["id"], "accept")
    d = world.act(a["id"], "assign", department="税务所")
    due = d["due_at"]
    d = world.act(a["id"], "request_extension", headers=world.th, working_days=3, reason="需等待上级批复")
    ext = d["extensions"][0]
    world.act(a["id"], "request_extension", headers=world.th, working_days=3, reason="再来", expect=409)
    world.act(a["id"], "decide_extension", headers=world.th, extension_id=ext["id"], accept=True, expect=403)
    d = world.act(a["id"], "decide_extension", extension_id=ext["id"], accept=True)
    assert d["due_at"] > due and d["extensions"][0]["status"] == "approved"
    extended = d["due_at"]
    # Re-categorising to a category with the same promise keeps the granted extension.
    same = world.detail(a["id"])["category"]
    d = world.act(a["id"], "set_category", category=same if isinstance(same, str) else same["name"])
    assert d["due_at"] == extended


def test_rating_rules(client, world, db):
    a = world.submit()
    url = f"/api/v1/appeals/{a['id']}/rating"
    good = {"resolved": True, "satisfaction": 5, "comment": "很好"}
    assert client.post(url, json=good, headers=world.uh).status_code == 409  # still open
    _walk_to_resolved(world, a["id"])
    assert client.post(url, json=good, headers=world.oh).status_code == 404  # not theirs
    assert client.post(url, json={"resolved": True, "satisfaction": 6}, headers=world.uh).status_code == 422
    resp = client.post(url, json=good, headers=world.uh)
    assert resp.status_code == 201
    assert client.post(url, json=good, headers=world.uh).status_code == 409  # twice
    assert world.detail(a["id"])["status"] == "closed"


def test_not_resolved_reopens_and_bad_rating_opens_rectification(client, world, db):
    a = world.submit()
    _walk_to_resolved(world, a["id"])
    resp = client.post(f"/api/v1/appeals/{a['id']}/rating", json={"resolved": False, "satisfaction": 1,
                                                                 "comment": "根本没解决"}, headers=world.uh)
    assert resp.status_code == 201
    d = world.detail(a["id"])
    assert d["status"] == "in_progress" and d["round"] == 2 and d["reopen_count"] == 1
    assert [t["kind"] for t in d["tasks"]] == ["rectification"]
    assert d["escalated"] is False
    world.act(a["id"], "resolve", headers=world.th, resolution="第二次处理")
    resp = client.post(f"/api/v1/appeals/{a['id']}/rating", json={"resolved": True, "satisfaction": 2},
                       headers=world.uh)
    assert resp.status_code == 201, resp.get_json()
    d = world.detail(a["id"])
    assert d["escalated"] is True  # second bad rating escalates by itself
    assert d["status"] == "closed"


def test_rating_after_window_cannot_reopen(client, world, db):
    from datetime import timedelta

    from wxapp_backend.appeals.models import Appeal

    a = world.submit()
    _walk_to_resolved(world, a["id"])
    row = db.get(Appeal, a["id"])
    row.resolved_at = row.resolved_at - timedelta(days=30)  # past 7 working days, holidays or not
    db.commit()
    resp = client.post(f"/api/v1/appeals/{a['id']}/rating", json={"resolved": False, "satisfaction": 3},
                       headers=world.uh)
    assert resp.status_code == 409 and resp.get_json()["error"] == "rating_window_over"


def test_withdraw(client, world):
    a = world.submit()
    resp = client.post(f"/api/v1/appeals/{a['id']}/withdraw", json={"reason": "已自行解决"}, headers=world.oh)
    assert resp.status_code == 404
    resp = client.post(f"/api/v1/appeals/{a['id']}/withdraw", json={"reason": "已自行解决"}, headers=world.uh)
    assert resp.status_code == 200 and resp.get_json()["status"] == "withdrawn"
    b = world.submit()
    _walk_to_resolved(world, b["id"])
    resp = client.post(f"/api/v1/appeals/{b['id']}/withdraw", json={}, headers=world.uh)
    assert resp.status_code == 409


def test_other_users_appeal_is_404_without_leak(client, world):
    a = world.submit()
    resp = client.get(f"/api/v1/appeals/{a['id']}", headers=world.oh)
    assert resp.status_code == 404
    assert a["number"] not in resp.get_data(as_text=True)
    assert client.get("/api/v1/appeals/999999", headers=world.oh).get_json() == resp.get_json()
    assert client.get("/api/v1/appeals", headers=world.oh).get_json()["total"] == 0


def test_escalate_is_idempotent_and_notifies_once(client, world, db):
    a = world.submit()
    world.act(a["id"], "accept")
    for _ in range(2):
        resp = client.post(f"/api/v1/appeals/{a['id']}/escalate", json={"reason": "跑了三次都没办成"},
                           headers=world.uh)
        assert resp.status_code == 200 and resp.get_json()["escalated"] is True
        assert resp.get_json()["escalation_due_at"]
    assert db.scalar(select(Notification).where(Notification.kind == "appeal_escalated")) is not None
    assert len(db.scalars(select(Notification).where(Notification.kind == "appeal_escalated")).all()) == 1
    tasks = db.scalars(select(AppealTask).where(AppealTask.kind == "escalation")).all()
    assert len(tasks) == 1
    q = client.get("/api/v1/staff/appeals?escalated=true", headers=world.ah).get_json()
    assert q["total"] == 1


def test_notification_failure_never_fails_the_change(world, db, monkeypatch):
    from wxapp_backend.notices import services as notices

    def boom(*a, **kw):
        raise RuntimeError("inbox down")

    monkeypatch.setattr(notices, "notify", boom)
    a = world.submit()
    d = world.act(a["id"], "accept")
    assert d["status"] == "accepted"
    notified = [e for e in d["timeline"] if e["action"] == "notified"]
    assert notified and notified[0]["data"]["outcome"] == "failed"


def test_merge_duplicates_and_resolve_children(client, world, db):
    a = world.submit(content="新华大厦电梯坏了三天了一直没人修", category="楼宇物业")
    b = world.submit(headers=world.oh, content="新华大厦的电梯坏了好几天没人修理", category="楼宇物业",
                     building_id=world.building.id)
    d = world.detail(b["id"])
    assert [s["id"] for s in d["similar"]] == [a["id"]]
    world.act(a["id"], "accept")
    world.act(b["id"], "merge", master_id=b["id"], expect=409)
    world.act(b["id"], "merge", master_id=a["id"])
    c = world.submit(content="电梯又坏了", category="楼宇物业")
    world.act(c["id"], "merge", master_id=b["id"], expect=409)  # into a child
    world.act(a["id"], "merge", master_id=c["id"], expect=409)  # a master cannot become a child
    world.act(a["id"], "resolve", resolution="已更换电梯主板")
    child = world.detail(b["id"])
    assert child["status"] == "resolved" and child["master_id"] == a["id"]
    users = {n.user_id for n in db.scalars(select(Notification).where(Notification.kind == "appeal_resolved"))}
    assert users == {world.user.id, world.other.id}
    r1 = client.post(f"/api/v1/appeals/{a['id']}/rating", json={"resolved": True, "satisfaction": 5},
                     headers=world.uh)
    r2 = client.post(f"/api/v1/appeals/{b['id']}/rating", json={"resolved": False, "satisfaction": 2},
                     headers=world.oh)
    assert r1.status_code == r2.status_code == 201
    child = world.detail(b["id"])
    assert child["status"] == "in_progress" and child["master_id"] is None


def test_openapi_documents_every_appeal_route(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    paths = [p for p in spec["paths"] if "appeal" in p or "reports" in p]
    assert "/api/v1/appeals" in paths and "/api/v1/staff/reports/weekly" in paths


def test_escalation_owner_with_a_linked_wechat_user_is_notified_once(client, world, db, make_user, user_token):
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices.broadcast_models import StaffTestRecipient

    owner_phone = make_user()
    with session_scope() as s:
        s.add(StaffTestRecipient(staff_id=world.admin.id, user_id=owner_phone.id))
    a = world.submit()
    world.act(a["id"], "accept")
    for _ in range(2):
        client.post(f"/api/v1/appeals/{a['id']}/escalate", json={"reason": "跑了三次都没办成"}, headers=world.uh)
    to_owner = db.scalars(select(Notification).where(Notification.user_id == owner_phone.id)).all()
    assert len(to_owner) == 1 and to_owner[0].kind == "appeal_escalated"
    # The complaint itself stays on the console: the linked user is whatever id the staff member typed in.
    from wxapp_backend.notices.models import InboxItem

    inbox = db.scalars(select(InboxItem).where(InboxItem.user_id == owner_phone.id)).all()
    assert a["number"] in inbox[0].body
    assert "跑了三次" not in inbox[0].body and "跑了三次" not in str(to_owner[0].fields)
    # The appeal is not the linked user's own: its detail page would answer 诉求不存在 (404) when tapped.
    assert not to_owner[0].page.startswith("pages/appeals/") and not inbox[0].page.startswith("pages/appeals/")
    assert client.get(f"/api/v1/appeals/{a['id']}", headers=user_token(owner_phone)).status_code == 404
    to_enterprise = db.scalars(select(Notification).where(Notification.user_id == world.user.id,
                                                          Notification.kind == "appeal_escalated")).all()
    assert len(to_enterprise) == 1
