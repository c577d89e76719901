"""Small polish, QA session 13 (polish 5): misspelt keys in an activity's registration questions, role codes in
the staff account messages, the audit log's 对象类型 filter, and the caching header on the public OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from wxapp_backend.db import session_scope

# --- 1. an unknown key in a registration question -----------------------------------------------------------

def _activity_body(**kw):
    start = datetime.now(UTC) + timedelta(days=2)
    return {"category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂", "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=2)).isoformat(), "capacity": 2, **kw}


@pytest.mark.parametrize("question, bad", [
    ({"key": "size", "label": "尺码", "type": "text", "requried": True}, "requried"),
    ({"key": "size", "label": "尺码", "type": "choice", "options": ["S"], "opitons": ["S", "M"]}, "opitons"),
    ({"key": "guests", "label": "随行人数", "type": "number", "maxx": 3}, "maxx"),
])
def test_a_misspelt_key_in_a_question_is_refused_on_create_and_edit(client, staff, staff_headers, question, bad):
    """{"requried": true} was dropped without a word: the question was saved optional, the limit staff meant was
    never applied. An unknown key is now a 422 naming it and the question, listing the keys there are."""
    from wxapp_backend.activities.models import Activity

    h = staff_headers(staff)
    resp = client.post("/api/v1/staff/activities", json=_activity_body(questions=[question]), headers=h)
    assert resp.status_code == 422, resp.get_json()
    says = resp.get_json()["fields"]["questions"]
    assert bad in says and question["label"] in says and "required" in says and "options" in says, says
    assert bad in resp.get_json()["message"]
    with session_scope() as s:
        assert s.scalars(select(Activity)).all() == []

    created = client.post("/api/v1/staff/activities", json=_activity_body(), headers=h)
    assert created.status_code == 201
    aid = created.get_json()["id"]
    resp = client.patch(f"/api/v1/staff/activities/{aid}", json={"questions": [question]}, headers=h)
    assert resp.status_code == 422 and bad in resp.get_json()["fields"]["questions"], resp.get_json()
    assert client.get(f"/api/v1/staff/activities/{aid}", headers=h).get_json()["questions"] == []


def test_the_console_editor_refuses_a_misspelt_question_key(client, make_staff, console_login):
    from wxapp_backend.activities.models import Activity

    csrf = console_login(make_staff(role="admin"))
    base = {"csrf_token": csrf, "category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂",
            "starts_at": "2030-01-05T19:00", "ends_at": "2030-01-05T21:00", "capacity": "2"}
    resp = client.post("/console/activities/new", data={
        **base, "questions": '[{"key": "size", "label": "尺码", "type": "text", "requried": true}]'})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422 and "requried" in page and "尺码" in page, page[-2000:]
    with session_scope() as s:
        assert s.scalars(select(Activity)).all() == []
    # every key that means something is still welcome
    ok = client.post("/console/activities/new", data={
        **base, "questions": '[{"key": "n", "label": "随行人数", "type": "number", "required": true, "min": 0, '
                             '"max": 3, "integer": true}, {"key": "size", "label": "尺码", "type": "choice", '
                             '"options": ["S", "M"], "required": false}]'})
    assert ok.status_code == 302, ok.get_data(as_text=True)[-2000:]


# --- 2. the role message in Chinese ---------------------------------------------------------------------------

def test_a_role_that_does_not_exist_is_explained_with_the_chinese_role_names(client, make_staff, console_login):
    """"角色只能是 admin、staff 或 dept" showed staff the internal codes only; the names the console shows for the
    roles now come with them."""
    from wxapp_backend.auth.services import create_staff
    from wxapp_backend.errors import ValidationError

    csrf = console_login(make_staff(role="admin"))
    resp = client.post("/console/staff/new", data={"csrf_token": csrf, "username": "newbie", "password": "Passw0rd!x",
                                                   "role": "boss", "department": "", "display_name": ""})
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422, page[-2000:]
    for said in ("管理员（admin）", "工作人员（staff）", "部门（dept）"):
        assert said in page, page[-2000:]
    with session_scope() as s, pytest.raises(ValidationError) as caught:
        create_staff(s, username="newbie2", password="Passw0rd!x", role="boss")
    assert "工作人员（staff）" in caught.value.fields["role"]


# --- 3. the audit log's 对象类型 filter ------------------------------------------------------------------------

def _audit_row(action: str, target_type: str, target_id: str) -> int:
    from wxapp_backend.audit import SYSTEM, audit

    with session_scope() as s:
        row = audit(s, SYSTEM, action, None)
        row.target_type, row.target_id = target_type, target_id
        s.flush()
        return row.id


def test_the_audit_target_type_filter_is_a_select_of_chinese_names(client, make_staff, console_login):
    """对象类型 was a text box that wanted table names (appeals, staff_users): staff had to know the database. It is a
    select of the names the table already shows, sending the same codes, so the links from other pages work."""
    import re

    console_login(make_staff(role="admin"))
    appeal = _audit_row("appeal.assigned", "appeals", "7")
    account = _audit_row("staff.updated", "staff_users", "7")
    page = client.get("/console/audit").get_data(as_text=True)
    select_box = re.search(r'<select name="target_type"[^>]*>(.*?)</select>', page, re.S)
    assert select_box, page[-3000:]
    options = dict((v, label.strip()) for v, label in
                   re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', select_box.group(1)))
    assert options[""] == "（全部）" and options["appeals"] == "诉求" and options["staff_users"] == "工作人员账号"
    chosen = client.get("/console/audit?target_type=staff_users&target_id=7").get_data(as_text=True)
    assert re.search(r'<option value="staff_users" selected>', chosen)
    assert f'id="audit-{account}"' in chosen and f'id="audit-{appeal}"' not in chosen


def test_an_unknown_audit_target_type_is_left_out_with_a_note(client, make_staff, console_login):
    """An old or edited link with a type the select does not have: as on the other list pages, that filter is left
    out with a note saying so, and the others still apply."""
    console_login(make_staff(role="admin"))
    appeal = _audit_row("appeal.assigned", "appeals", "8")
    other = _audit_row("appeal.assigned", "appeals", "9")
    resp = client.get("/console/audit?target_type=appealz&target_id=8")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 422, page[-2000:]
    assert 'id="filter-error"' in page and "对象类型" in page and "没有用上" in page, page[-3000:]
    assert f'id="audit-{appeal}"' in page and f'id="audit-{other}"' not in page


# --- 4. the OpenAPI document's caching header -------------------------------------------------------------------

@pytest.mark.parametrize("with_token", [False, True], ids=["anonymous", "with_token"])
def test_the_openapi_document_may_be_cached_and_revalidated(client, make_staff, staff_headers, with_token):
    """/api/v1/openapi.json went out "private, no-store" like a person's data: every look at the docs fetched it
    whole, though it is the same for everyone (a token changes nothing in it). It is now no-cache with an ETag,
    so a client revalidates and gets a 304 while it has not changed."""
    h = staff_headers(make_staff(role="admin")) if with_token else {}
    resp = client.get("/api/v1/openapi.json", headers=h)
    assert resp.status_code == 200 and resp.get_json()["openapi"]
    assert resp.headers["Cache-Control"] == "no-cache", resp.headers
    assert "Authorization" not in resp.headers.get("Vary", "")
    again = client.get("/api/v1/openapi.json", headers={**h, "If-None-Match": resp.headers["ETag"]})
    assert again.status_code == 304
    # the rest of /api keeps its rule
    me = client.get("/api/v1/me", headers=h)
    assert me.headers["Cache-Control"] == "private, no-store"
