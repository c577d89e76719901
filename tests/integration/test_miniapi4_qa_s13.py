"""The mini-program API under /api/v1, QA session 13 (4): a body without the field it is about taken as "nothing"
(subscriptions cleared, the test recipient removed, a misspelt profile edit answered 200), and caching headers on
answers that differ per user."""

from __future__ import annotations

import base64

import pytest

from wxapp_backend.activities.models import Registration
from wxapp_backend.audit import AuditLog

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()


# --- 1. PUT /me/subscriptions without `categories` --------------------------------------------------------------

def _subs(client, h) -> list[str]:
    return client.get("/api/v1/me/subscriptions", headers=h).get_json()["categories"]


@pytest.mark.parametrize("body", [{}, {"category": ["fitness"]}, {"Categories": ["concert"]}, {"categories": None}],
                         ids=["empty", "singular", "capitalised", "null"])
def test_a_subscriptions_body_without_categories_is_refused_and_keeps_them(client, make_user, user_token, db, body):
    """PUT /me/subscriptions with {} (a page that lost its state) or the field misspelt answered 200 and removed every
    subscription: the user heard of no activity again. Without `categories` it is now a 422 naming the field
    (in words and in `fields`), and the subscriptions stay."""
    h = user_token(make_user())
    assert client.put("/api/v1/me/subscriptions", json={"categories": ["concert", "fitness"]},
                      headers=h).status_code == 200
    resp = client.put("/api/v1/me/subscriptions", json=body, headers=h)
    assert resp.status_code == 422, resp.get_json()
    out = resp.get_json()
    assert out["error"] == "validation_error" and "categories" in out["fields"], out
    assert "订阅的活动类别" in out["message"] and "categories" in out["message"], out["message"]
    assert sorted(_subs(client, h)) == ["concert", "fitness"]


def test_an_empty_categories_list_still_unsubscribes_from_everything(client, make_user, user_token):
    h = user_token(make_user())
    assert client.put("/api/v1/me/subscriptions", json={"categories": ["concert"]}, headers=h).status_code == 200
    resp = client.put("/api/v1/me/subscriptions", json={"categories": []}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["categories"] == [], resp.get_json()
    assert _subs(client, h) == []


def test_the_openapi_document_says_categories_is_required(client):
    op = client.get("/api/v1/openapi.json").get_json()["paths"]["/api/v1/me/subscriptions"]["put"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema.get("required") == ["categories"], schema


# --- 2. caching headers ------------------------------------------------------------------------------------------

def _private(resp) -> None:
    cc = {d.strip() for d in resp.headers.get("Cache-Control", "").split(",")}
    assert "private" in cc and ({"no-store", "no-cache"} & cc), resp.headers.get("Cache-Control")
    assert "public" not in cc
    assert "authorization" in resp.headers.get("Vary", "").lower(), resp.headers.get("Vary")


def test_personal_answers_are_private_and_vary_by_authorization(client, make_user, user_token):
    """/me, /me/subscriptions, /me/inbox carried no Cache-Control or Vary: a proxy or the WebView's cache may keep
    one user's phone number and registrations and hand them to the next request for the same URL."""
    h = user_token(make_user(phone="13800138000"))
    for path in ("/api/v1/me", "/api/v1/me/subscriptions", "/api/v1/me/inbox", "/api/v1/me/registrations"):
        resp = client.get(path, headers=h)
        assert resp.status_code == 200, (path, resp.get_json())
        _private(resp)
    # A refusal for a missing or expired login is an answer about this caller too.
    _private(client.get("/api/v1/me"))
    _private(client.get("/api/v1/me", headers={"Authorization": "Bearer nope"}))


def test_optional_login_answers_vary_by_authorization(client, make_activity, make_user, user_token):
    """GET /activities/<id> has my_registration and ineligible_reason with a token and not without: the same URL,
    two answers, so a cache must key them by Authorization, and the logged-in one is private."""
    a = make_activity()
    h = user_token(make_user())
    with_token = client.get(f"/api/v1/activities/{a.id}", headers=h)
    assert "my_registration" in with_token.get_json()
    _private(with_token)
    _private(client.get("/api/v1/activities", headers=h))
    anon = client.get(f"/api/v1/activities/{a.id}")
    assert "my_registration" not in anon.get_json()
    assert "authorization" in anon.headers.get("Vary", "").lower(), anon.headers
    # Seats left change by the minute: nobody may serve it without asking again.
    cc = anon.headers.get("Cache-Control", "")
    assert "no-cache" in cc or "no-store" in cc, cc


def test_a_login_answer_is_never_stored(client):
    """POST /auth/login carries a token though the request has none: no cache may keep it."""
    resp = client.post("/api/v1/auth/login", json={})
    assert resp.status_code == 422
    assert "no-store" in resp.headers.get("Cache-Control", ""), resp.headers


def test_an_appeals_photo_is_not_left_in_a_cache(client, make_user, user_token):
    """send_file's own "no-cache" lets a cache store the photo of someone's appeal; with a token it is private."""
    h = user_token(make_user())
    body = {"content": "园区南门的路灯坏了三天，晚上下班很黑", "contact_name": "张三", "contact_phone": "13800138000",
            "images": [PNG]}
    created = client.post("/api/v1/appeals", json=body, headers=h)
    assert created.status_code == 201, created.get_json()
    url = f"/api/v1/appeals/{created.get_json()['id']}/images/{created.get_json()['images'][0]}"
    resp = client.get(url, headers=h)
    assert resp.status_code == 200, url
    _private(resp)
    assert "no-store" in resp.headers["Cache-Control"]


def test_the_webhook_and_the_console_keep_their_own_headers(client, console_login, make_staff):
    """The rule is for /api/v1 only: the console keeps its plain no-store, /healthz gets nothing new."""
    assert "Vary" not in client.get("/healthz").headers or "authorization" not in client.get(
        "/healthz").headers["Vary"].lower()
    assert "Cache-Control" not in client.get("/healthz").headers


# --- 3. PUT /staff/me/test-recipient without user_id ---------------------------------------------------------------

def test_a_test_recipient_body_without_user_id_keeps_the_recipient(client, make_staff, staff_headers, make_user, db):
    """{} (or "userId") cleared the staff member's test recipient: the next 发给自己测试 went to nobody. Only an explicit
    null clears it now."""
    staff = make_staff(role="staff")
    h = staff_headers(staff)
    me = make_user()
    assert client.put("/api/v1/staff/me/test-recipient", json={"user_id": me.id}, headers=h).status_code == 200
    for body in ({}, {"userId": me.id}):
        resp = client.put("/api/v1/staff/me/test-recipient", json=body, headers=h)
        assert resp.status_code == 422, resp.get_json()
        assert "user_id" in resp.get_json()["fields"] and "测试接收人" in resp.get_json()["message"]
    assert db.query(AuditLog).filter_by(action="notice.test_recipient_cleared").count() == 0
    resp = client.put("/api/v1/staff/me/test-recipient", json={"user_id": None}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["user_id"] is None
    assert db.query(AuditLog).filter_by(action="notice.test_recipient_cleared").count() == 1


# --- 4. PATCH /me with only misspelt fields ------------------------------------------------------------------------

def test_a_profile_edit_with_only_unknown_fields_is_refused(client, make_user, user_token, db):
    """PATCH /me {"nick_name": "小王"} or {"mobile": ...} answered 200 with nothing changed: the page said 已保存. A body
    that names none of the fields that can be changed is a 422 listing them; {} stays a harmless no-op."""
    user = make_user(nickname="旧名")
    h = user_token(user)
    for body in ({"nick_name": "小王"}, {"mobile": "13800138000"}, {"nickName": "小王", "avatarUrl": "x"}):
        resp = client.patch("/api/v1/me", json=body, headers=h)
        assert resp.status_code == 422, (body, resp.get_json())
        out = resp.get_json()
        assert "nickname" in out["message"] and "昵称" in out["message"], out["message"]
        assert set(body) <= set(out["fields"]), out
    assert client.get("/api/v1/me", headers=h).get_json()["nickname"] == "旧名"
    assert client.patch("/api/v1/me", json={}, headers=h).status_code == 200
    ok = client.patch("/api/v1/me", json={"nickname": "小王"}, headers=h)
    assert ok.status_code == 200 and ok.get_json()["nickname"] == "小王"


# --- 5. the staff PATCHes with only misspelt fields ----------------------------------------------------------------

def test_staff_edits_with_only_unknown_fields_are_refused(client, make_staff, staff_headers, make_activity,
                                                          make_enterprise, db):
    """PATCH /staff/activities/<id> {"titel": ...}, /staff/enterprises/<id> {"nmae": ...}, /staff/appeal-categories/<id>
    and /staff/notices/<id> answered 200 with nothing changed: a script's typo looked like a saved edit. Now a 422
    that lists the fields; {} stays a no-op, a real field still saves."""
    h = staff_headers(make_staff(role="admin"))
    a, e = make_activity(title="垂直马拉松"), make_enterprise()
    notice = client.post("/api/v1/staff/notices", json={"title": "政策通知", "audience": {"all": True}}, headers=h)
    assert notice.status_code == 201, notice.get_json()
    cat = client.get("/api/v1/staff/appeal-categories", headers=h).get_json()["items"][0]
    cases = [(f"/api/v1/staff/activities/{a.id}", {"titel": "新标题"}, "title", {"title": "新标题"}),
             (f"/api/v1/staff/enterprises/{e.id}", {"nmae": "上海新名称有限公司"}, "name", {"note": "备注"}),
             (f"/api/v1/staff/appeal-categories/{cat['id']}", {"nmae": "新类别名"}, "name", {"name": "新类别名"}),
             (f"/api/v1/staff/notices/{notice.get_json()['id']}", {"titel": "新标题"}, "title", {"title": "新标题"})]
    for path, typo, field, good in cases:
        resp = client.patch(path, json=typo, headers=h)
        assert resp.status_code == 422, (path, resp.get_json())
        out = resp.get_json()
        assert field in out["message"] and set(typo) <= set(out["fields"]), (path, out)
        assert client.patch(path, json={}, headers=h).status_code == 200, path
        ok = client.patch(path, json=good, headers=h)
        assert ok.status_code == 200, (path, ok.get_json())


# --- 6. user and staff actions whose only field is misspelt --------------------------------------------------------

def _appeal(client, h) -> int:
    body = {"content": "园区南门的路灯坏了三天，晚上下班很黑", "contact_name": "张三", "contact_phone": "13800138000"}
    resp = client.post("/api/v1/appeals", json=body, headers=h)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def test_a_withdrawal_or_escalation_with_its_reason_misspelt_is_refused(client, make_user, user_token):
    """撤回 {"reson": "已自行解决"} or 办不成事 {"reasons": "..."} went through without the words the user wrote: staff
    read an empty reason. A body naming none of the fields is now a 422, nothing happens; {} still works."""
    h = user_token(make_user())
    aid = _appeal(client, h)
    resp = client.post(f"/api/v1/appeals/{aid}/escalate", json={"reasons": "跑了三次都没办成"}, headers=h)
    assert resp.status_code == 422 and "reason" in resp.get_json()["message"], resp.get_json()
    assert client.get(f"/api/v1/appeals/{aid}", headers=h).get_json().get("escalated") is not True
    resp = client.post(f"/api/v1/appeals/{aid}/withdraw", json={"reson": "已自行解决"}, headers=h)
    assert resp.status_code == 422 and "撤回原因" in resp.get_json()["message"], resp.get_json()
    assert client.get(f"/api/v1/appeals/{aid}", headers=h).get_json()["status"] != "withdrawn"
    ok = client.post(f"/api/v1/appeals/{aid}/withdraw", json={"reason": "已自行解决"}, headers=h)
    assert ok.status_code == 200 and ok.get_json()["status"] == "withdrawn", ok.get_json()


def test_a_registration_with_answers_misspelt_is_refused(client, make_activity, make_user, user_token, db):
    """{"answer": {"company": ...}} registered with no answers at all (the question is optional): the organiser's
    roster lost what the user typed. Now a 422; nobody is registered."""
    a = make_activity(questions=[{"key": "company", "label": "公司名称", "type": "text"}])
    h = user_token(make_user())
    resp = client.post(f"/api/v1/activities/{a.id}/registrations", json={"answer": {"company": "甲公司"}}, headers=h)
    assert resp.status_code == 422 and "answers" in resp.get_json()["message"], resp.get_json()
    assert db.query(Registration).filter_by(activity_id=a.id).count() == 0
    ok = client.post(f"/api/v1/activities/{a.id}/registrations", json={"answers": {"company": "甲公司"}}, headers=h)
    assert ok.status_code == 201, ok.get_json()


def test_a_rejection_with_its_note_misspelt_is_refused(client, make_activity, make_user, user_token, make_staff,
                                                      staff_headers):
    """驳回 {"reason": "名额已满"} rejected the registration and told the user no reason: the field is `note`."""
    a = make_activity(requires_approval=True)
    reg = client.post(f"/api/v1/activities/{a.id}/registrations", json={}, headers=user_token(make_user()))
    assert reg.status_code == 201 and reg.get_json()["status"] == "pending_approval", reg.get_json()
    sh = staff_headers(make_staff(role="staff"))
    rid = reg.get_json()["id"]
    resp = client.post(f"/api/v1/staff/registrations/{rid}/reject", json={"reason": "名额已满"}, headers=sh)
    assert resp.status_code == 422 and "note" in resp.get_json()["message"], resp.get_json()
    ok = client.post(f"/api/v1/staff/registrations/{rid}/reject", json={"note": "名额已满"}, headers=sh)
    assert ok.status_code == 200 and ok.get_json()["status"] == "rejected", ok.get_json()


# --- 7. a notice's audience with a criterion misspelt --------------------------------------------------------------

def test_a_notice_audience_with_a_misspelt_criterion_is_refused(client, make_staff, staff_headers, make_building):
    """Every criterion of an audience must hold, so {"building_ids": [b], "industires": ["软件"]} dropped the misspelt one
    and pushed to everyone in the building instead of its software firms. An unknown criterion is now a 422 naming it,
    on create and on edit; the draft keeps its audience."""
    h = staff_headers(make_staff(role="staff"))
    b = make_building()
    bad = {"building_ids": [b.id], "industires": ["软件"]}
    resp = client.post("/api/v1/staff/notices", json={"title": "软件企业政策", "audience": bad}, headers=h)
    assert resp.status_code == 422, resp.get_json()
    out = resp.get_json()
    assert "industires" in out["message"] and "industries" in out["message"], out["message"]
    assert "audience.industires" in out["fields"], out
    good = {"building_ids": [b.id], "industries": ["软件"]}
    made = client.post("/api/v1/staff/notices", json={"title": "软件企业政策", "audience": good}, headers=h)
    assert made.status_code == 201, made.get_json()
    nid = made.get_json()["id"]
    resp = client.patch(f"/api/v1/staff/notices/{nid}", json={"audience": bad}, headers=h)
    assert resp.status_code == 422, resp.get_json()
    assert client.get(f"/api/v1/staff/notices/{nid}", headers=h).get_json()["audience"]["industries"] == ["软件"]
