"""The mini-program API under /api/v1, QA session 13: a registration key sent again after a cancel, whole-number
questions, optional login in the OpenAPI document, paging, other users' rows, emoji answers."""

from __future__ import annotations

import pytest

from wxapp_backend.activities.models import Registration


def _register(client, aid, headers, answers=None, key=None):
    h = {**headers, "Idempotency-Key": key} if key else dict(headers)
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=h)


def _cancel(client, rid, headers):
    return client.post(f"/api/v1/registrations/{rid}/cancel", json={}, headers=headers)


# --- 1. the registration's key, sent again after a cancel ----------------------------------------------------

def test_a_key_sent_again_after_a_cancel_does_not_replay_the_cancelled_registration(client, make_activity,
                                                                                     make_user, user_token, db):
    """报名 (key K), 取消, then 报名 again from a page that kept K: answered 200 with the cancelled registration, the
    page read a 2xx as 报名成功 while the user held no seat. A key names one request: the new registration is
    another, so K is refused (409 idempotency_key_reused) with words that say the earlier one was cancelled and
    what to do; nothing is registered, and a fresh key registers again."""
    a = make_activity()
    h = user_token(make_user())
    first = _register(client, a.id, h, key="reg-k1")
    assert first.status_code == 201, first.get_json()
    assert _cancel(client, first.get_json()["id"], h).status_code == 200
    again = _register(client, a.id, h, key="reg-k1")
    assert again.status_code == 409, again.get_json()
    body = again.get_json()
    assert body["error"] == "idempotency_key_reused", body
    assert "已取消" in body["message"] and "重新" in body["message"], body["message"]
    assert "Idempotency-Key" not in body["message"]
    assert body["fields"].get("registration_id") == str(first.get_json()["id"]), body
    db.expire_all()
    assert [r.status for r in db.query(Registration).filter_by(activity_id=a.id)] == ["cancelled"]
    fresh = _register(client, a.id, h, key="reg-k2")
    assert fresh.status_code == 201 and fresh.get_json()["status"] == "confirmed", fresh.get_json()
    # the new key replays the new registration as before
    replay = _register(client, a.id, h, key="reg-k2")
    assert replay.status_code == 200 and replay.get_json()["id"] == fresh.get_json()["id"]


def test_a_key_of_a_registration_staff_cancelled_is_refused_too(client, make_activity, make_user, user_token,
                                                                 make_staff, staff_headers):
    a = make_activity()
    h = user_token(make_user())
    first = _register(client, a.id, h, key="reg-s1")
    rid = first.get_json()["id"]
    staff = staff_headers(make_staff(role="staff"))
    assert client.post(f"/api/v1/staff/registrations/{rid}/cancel", json={}, headers=staff).status_code == 200
    again = _register(client, a.id, h, key="reg-s1")
    assert again.status_code == 409 and again.get_json()["error"] == "idempotency_key_reused", again.get_json()


# --- 2. whole-number questions ------------------------------------------------------------------------------

PEOPLE = {"key": "people", "label": "参加人数", "type": "number", "integer": True, "min": 1, "max": 10}


def test_a_whole_number_question_refuses_fractions_and_exponents(client, new_activity, make_user, user_token):
    """参加人数 took 2.5 and "1e3": the roster showed 2.5 people, and 1000 read from “1e3” was a number nobody typed.
    A question with "integer": true now refuses both with a Chinese message naming the answer; a plain whole number,
    as a number or as text (full-width digits from a Chinese keyboard too), is stored as an int."""
    aid = new_activity(capacity=10, questions=[PEOPLE, {"key": "temp", "label": "体温", "type": "number",
                                                        "min": 35, "max": 42}])
    for value in (2.5, "2.5", "1e3", 1.5e0, "3.", "1_0", "٣"):
        resp = _register(client, aid, user_token(make_user()), {"people": value})
        assert resp.status_code == 422, (value, resp.get_json())
        says = resp.get_json()["fields"]["answers.people"]
        assert says.startswith("参加人数应为整数"), (value, says)
    for value, stored in ((3, 3), ("4", 4), (" 5 ", 5), ("６", 6), (7.0, 7)):
        resp = _register(client, aid, user_token(make_user()), {"people": value, "temp": "36.6"})
        assert resp.status_code == 201, (value, resp.get_json())
        assert resp.get_json()["answers"] == {"people": stored, "temp": 36.6}, resp.get_json()
        assert type(resp.get_json()["answers"]["people"]) is int
    # A question that allows decimals keeps them, and text in exponent notation is no number anybody typed there
    resp = _register(client, aid, user_token(make_user()), {"people": 1, "temp": "3.6e1"})
    assert resp.status_code == 422 and resp.get_json()["fields"]["answers.temp"].startswith("体温应为数字")
    detail = client.get(f"/api/v1/activities/{aid}").get_json()
    assert detail["questions"][0]["integer"] is True  # the page can offer a digits-only keyboard


def _activity_body(question):
    from datetime import UTC, datetime, timedelta

    start = datetime.now(UTC) + timedelta(days=2)
    return {"category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂", "starts_at": start.isoformat(),
            "ends_at": (start + timedelta(hours=2)).isoformat(), "capacity": 2, "questions": [question]}


@pytest.mark.parametrize("question, says", [
    ({**PEOPLE, "integer": "yes"}, "integer"),
    ({"key": "size", "label": "尺码", "type": "text", "integer": True}, "只有数字题"),
    ({**PEOPLE, "min": 0.5}, "整数"),
    ({**PEOPLE, "max": 9.5}, "整数"),
])
def test_a_bad_whole_number_setting_is_refused_when_staff_save_it(client, staff, staff_headers, question, says):
    resp = client.post("/api/v1/staff/activities", json=_activity_body(question), headers=staff_headers(staff))
    assert resp.status_code == 422, resp.get_json()
    assert says in resp.get_json()["fields"]["questions"], resp.get_json()


def test_the_console_question_editor_sets_a_whole_number_question(client, make_staff, console_login, db,
                                                                   make_user, user_token):
    import json
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities.models import Activity

    csrf = console_login(make_staff(role="staff"))
    page = client.get("/console/activities/new").get_data(as_text=True)
    assert '"integer":true' in page.replace("&#34;", '"') and "整数" in page  # the editor says how
    start = datetime.now(UTC) + timedelta(days=2, hours=8)
    form = {"csrf_token": csrf, "category": "cfo_salon", "title": "财务经理沙龙", "address": "服务中心 2 楼",
            "starts_at": start.strftime("%Y-%m-%dT%H:%M"),
            "ends_at": (start + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"), "capacity": "5",
            "waitlist_enabled": "on", "status": "published", "questions": json.dumps([PEOPLE], ensure_ascii=False)}
    assert client.post("/console/activities/new", data=form).status_code == 302
    a = db.query(Activity).one()
    assert a.questions[0]["integer"] is True
    resp = _register(client, a.id, user_token(make_user()), {"people": 2.5})
    assert resp.status_code == 422 and "answers.people" in resp.get_json()["fields"]


# --- 3. optional login in the OpenAPI document ----------------------------------------------------------------

OPTIONAL = [{}, {"bearer": []}]


def test_the_openapi_document_says_which_operations_take_a_login_optionally(client, make_activity, make_staff):
    """The activity list and detail, the KB search, the chat and 有用/没用 work without a login, give more with one
    (已报名, 候补第几位, the user's own vote), and answer a bad token with 401 invalid_token; the document described
    them as needing no login at all (no security), so a generated client sent no token and never showed 已报名.
    Checked against what each operation really does: every operation the document opens to anonymous callers is
    called without a token, with a forged one and with a real login; one that refuses the forged token must be
    documented with optional bearer auth ([{}, {bearer}]), one that ignores it must not be."""
    from wxapp_backend.knowledge_store.cli import load_default_if_empty
    from wxapp_backend.knowledge_store.services import get_runtime

    load_default_if_empty()
    get_runtime().check_interval = 0
    activity = make_activity()
    make_staff(username="qa13_openapi")
    codes = iter(f"qa13-code-{i}" for i in range(100))
    login = client.post("/api/v1/auth/login", json={"code": next(codes)})
    assert login.status_code == 200, login.get_json()
    user = {"Authorization": f"Bearer {login.get_json()['token']}"}
    turn = client.post("/api/v1/chat", json={"text": "外籍人才工作许可怎么办"}).get_json()
    assert turn["entry_id"] and turn["vote_token"], turn

    samples = {  # a request each operation answers without a login
        ("GET", "/api/v1/activities"): lambda: ("/api/v1/activities", {}),
        ("GET", "/api/v1/activities/{activity_id}"): lambda: (f"/api/v1/activities/{activity.id}", {}),
        ("GET", "/api/v1/appeal-categories"): lambda: ("/api/v1/appeal-categories", {}),
        ("POST", "/api/v1/auth/login"): lambda: ("/api/v1/auth/login", {"json": {"code": next(codes)}}),
        ("GET", "/api/v1/buildings"): lambda: ("/api/v1/buildings", {}),
        ("POST", "/api/v1/chat"): lambda: ("/api/v1/chat", {"json": {"text": "你好"}}),
        ("GET", "/api/v1/kb/entries/{entry_id}"): lambda: (f"/api/v1/kb/entries/{turn['entry_id']}", {}),
        ("POST", "/api/v1/kb/feedback"): lambda: ("/api/v1/kb/feedback", {"json": {
            "entry_id": turn["entry_id"], "useful": True, "turn_id": turn["turn_id"],
            "vote_token": turn["vote_token"]}}),
        ("GET", "/api/v1/kb/search"): lambda: ("/api/v1/kb/search", {"query_string": {"q": "社保"}}),
        ("POST", "/api/v1/staff/login"): lambda: ("/api/v1/staff/login", {"json": {
            "username": "qa13_openapi", "password": "Passw0rd!x"}}),
    }
    spec = client.get("/api/v1/openapi.json").get_json()
    assert "bearer" in spec["components"]["securitySchemes"]
    open_ops = {(m.upper(), p): op.get("security") for p, ops in spec["paths"].items() for m, op in ops.items()
                if not op.get("security") or {} in op["security"]}
    assert set(open_ops) == set(samples), "an operation open to anonymous callers needs a sample here: " \
        f"{sorted(set(open_ops) ^ set(samples))}"
    forged = {"Authorization": "Bearer qa13-not-a-token"}
    problems, optional = [], set()
    for (method, path), security in sorted(open_ops.items()):
        documented = security == OPTIONAL
        if security not in (None, OPTIONAL):
            problems.append(f"{method} {path}: security {security}, want none or {OPTIONAL}")
        url, kw = samples[(method, path)]()
        anon = client.open(url, method=method, **kw)
        if anon.status_code >= 400:
            problems.append(f"{method} {path} without a token: {anon.status_code} {anon.get_json()}")
        url, kw = samples[(method, path)]()
        bad = client.open(url, method=method, headers=forged, **kw)
        reads_token = bad.status_code == 401
        if reads_token:
            optional.add((method, path))
            if bad.get_json()["error"] != "invalid_token":
                problems.append(f"{method} {path} with a forged token: {bad.get_json()}")
        if reads_token != documented:
            problems.append(f"{method} {path}: forged token gives {bad.status_code}, documented "
                            f"{'optional' if documented else 'without'} login")
        if documented:
            url, kw = samples[(method, path)]()
            good = client.open(url, method=method, headers=user, **kw)
            if good.status_code == 401:
                problems.append(f"{method} {path} with a real login: 401")
            if "401" not in spec["paths"][path][method.lower()]["responses"]:
                problems.append(f"{method} {path}: 401 not documented")
    assert not problems, "\n".join(problems)
    assert optional >= {("GET", "/api/v1/activities"), ("GET", "/api/v1/activities/{activity_id}"),
                        ("POST", "/api/v1/chat"), ("GET", "/api/v1/kb/search"), ("POST", "/api/v1/kb/feedback")}
    # “gives more with a login”: the detail says whether the caller registered only to a logged-in caller
    assert "my_registration" not in client.get(f"/api/v1/activities/{activity.id}").get_json()
    assert client.get(f"/api/v1/activities/{activity.id}", headers=user).get_json()["my_registration"] is None


# --- 4. paging parameters on every list of the mini-program ---------------------------------------------------

PAGED = ("/api/v1/activities", "/api/v1/me/registrations", "/api/v1/appeals", "/api/v1/me/inbox")


@pytest.mark.parametrize("url", PAGED)
@pytest.mark.parametrize("query, field", [
    ("page=-1", "page"), ("page=0", "page"), ("page=abc", "page"), ("page=1.5", "page"), ("page=1e3", "page"),
    ("page=" + "9" * 5000, "page"), ("page=100001", "page"), ("per_page=0", "per_page"),
    ("per_page=-20", "per_page"), ("per_page=1000000", "per_page"), ("per_page=ten", "per_page"),
    ("page=%00", "page"), ("page=NaN", "page"), ("per_page=%EF%BC%8D1", "per_page"),
])
def test_bad_paging_is_a_chinese_422_naming_the_parameter(client, make_user, user_token, url, query, field):
    resp = client.get(f"{url}?{query}", headers=user_token(make_user()))
    assert resp.status_code == 422, (query, resp.status_code, resp.get_data(as_text=True)[:300])
    body = resp.get_json()
    assert list(body["fields"]) == [field], body
    says = body["fields"][field]
    assert says.startswith("页码" if field == "page" else "每页条数") and len(says) < 60, says


@pytest.mark.parametrize("url", PAGED)
def test_the_last_allowed_page_is_an_empty_page_not_an_error(client, make_user, user_token, url):
    resp = client.get(f"{url}?page=100000&per_page=100", headers=user_token(make_user()))
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["items"] == [] and (body["page"], body["per_page"]) == (100000, 100)


# --- 5. one user never sees another's rows ----------------------------------------------------------------------

def test_lists_and_keys_never_cross_users(client, make_activity, make_user, user_token, db):
    """Alice's registration (made with key K), appeal (key K too) and inbox item; Bob lists his own pages, reads the
    activity, and sends the same key K for the same activity and the same appeal words: he gets his own new rows,
    never hers (a key is the user's own: a shared key must not hand back another user's registration or appeal)."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices.services import notify

    alice, bob = make_user(nickname="Alice"), make_user(nickname="Bob")
    ah, bh = user_token(alice), user_token(bob)
    a = make_activity(questions=[{"key": "note", "label": "备注", "type": "text"}])
    mine = _register(client, a.id, ah, {"note": "Alice 的电话 13800138000"}, key="shared-key-1")
    assert mine.status_code == 201, mine.get_json()
    appeal_body = {"content": "我们楼下的路灯坏了一个星期了，晚上很黑", "contact_name": "Alice",
                   "contact_phone": "13800138000"}
    appeal = client.post("/api/v1/appeals", json=appeal_body, headers={**ah, "Idempotency-Key": "shared-key-1"})
    assert appeal.status_code == 201, appeal.get_json()
    with session_scope() as s:
        notify(s, alice.id, "notice", {}, title="给 Alice 的消息")

    for url in ("/api/v1/me/registrations", "/api/v1/appeals", "/api/v1/me/inbox", "/api/v1/me/inbox?unread=1"):
        body = client.get(url, headers=bh).get_json()
        assert body["items"] == [] and body["total"] == 0, (url, body)
    assert client.get("/api/v1/me/inbox", headers=bh).get_json()["unread"] == 0
    assert client.get(f"/api/v1/activities/{a.id}", headers=bh).get_json()["my_registration"] is None
    listed = client.get("/api/v1/activities", headers=bh).get_json()["items"]
    assert [i["ineligible_reason"] for i in listed if i["id"] == a.id] == [None]
    # Bob cannot mark Alice's messages read through read-all
    assert client.post("/api/v1/me/inbox/read-all", json={}, headers=bh).get_json() == {"marked": 0}
    assert client.get("/api/v1/me/inbox", headers=ah).get_json()["unread"] == 1

    his = _register(client, a.id, bh, {"note": "Bob"}, key="shared-key-1")
    assert his.status_code == 201, his.get_json()
    assert his.get_json()["id"] != mine.get_json()["id"] and his.get_json()["answers"] == {"note": "Bob"}
    his_appeal = client.post("/api/v1/appeals", json={**appeal_body, "contact_name": "Bob"},
                             headers={**bh, "Idempotency-Key": "shared-key-1"})
    assert his_appeal.status_code == 201, his_appeal.get_json()
    assert his_appeal.get_json()["id"] != appeal.get_json()["id"]
    text = str(client.get("/api/v1/me/registrations", headers=bh).get_json())
    assert "Alice" not in text and "13800138000" not in text
    # and Alice still sees exactly hers
    regs = client.get("/api/v1/me/registrations", headers=ah).get_json()["items"]
    assert [r["id"] for r in regs] == [mine.get_json()["id"]]


# --- 6. emoji and other Unicode in the answers --------------------------------------------------------------------

EMOJI_QUESTIONS = [
    {"key": "note", "label": "备注 📝", "type": "text"},
    {"key": "fruit", "label": "水果", "type": "choice", "options": ["🍎 苹果", "❤️‍🔥 火龙果", "👨‍👩‍👧 家庭装"]},
    {"key": "tags", "label": "兴趣", "type": "multi", "options": ["🏃 跑步", "🎵 音乐"]},
]


def test_emoji_answers_arrive_whole_everywhere_staff_and_the_user_read_them(client, staff, staff_headers,
                                                                             make_user, user_token, console_login):
    import io
    from datetime import UTC, datetime, timedelta

    from openpyxl import load_workbook

    start = datetime.now(UTC) + timedelta(days=2)
    created = client.post("/api/v1/staff/activities", headers=staff_headers(staff), json={
        "category": "social", "title": "缘来外滩 💕", "address": "外滩 3 号", "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=2)).isoformat(), "capacity": 5, "questions": EMOJI_QUESTIONS})
    assert created.status_code == 201, created.get_json()
    aid = created.get_json()["id"]
    note = "带 2 位朋友🙋‍♀️🙋🏽‍♂️，🏳️‍🌈 𠮷野家见 \u0301é"
    answers = {"note": note, "fruit": "❤️‍🔥 火龙果", "tags": ["🎵 音乐", "🏃 跑步"]}
    h = user_token(make_user(nickname="小🐟"))
    resp = _register(client, aid, h, answers)
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["answers"] == answers
    mine = client.get("/api/v1/me/registrations", headers=h).get_json()["items"][0]
    assert mine["answers"] == answers and mine["activity"]["title"] == "缘来外滩 💕"
    roster = client.get(f"/api/v1/staff/activities/{aid}/registrations", headers=staff_headers(staff)).get_json()
    assert roster["items"][0]["answers"] == answers and roster["items"][0]["name"] == "小🐟"
    console_login(staff)
    page = client.get(f"/console/activities/{aid}/registrations")
    assert page.status_code == 200 and note.replace("\u0301é", "") in page.get_data(as_text=True)
    sheet = client.get(f"/console/activities/{aid}/registrations.xlsx")
    assert sheet.status_code == 200
    rows = list(load_workbook(io.BytesIO(sheet.data)).active.iter_rows(values_only=True))
    assert rows[0][-3:] == ("备注 📝", "水果", "兴趣")
    assert rows[1][-3:] == (note, "❤️‍🔥 火龙果", "🎵 音乐、🏃 跑步")
    # 500 emoji are 500 characters, not 2000 bytes' worth; 501 are refused by count
    assert _register(client, aid, user_token(make_user()), {"note": "😀" * 500}).status_code == 201
    too_long = _register(client, aid, user_token(make_user()), {"note": "😀" * 501})
    assert too_long.status_code == 422 and "501" in too_long.get_json()["fields"]["answers.note"]


def test_a_broken_emoji_half_is_a_400_not_a_500(client, make_activity, make_user, user_token):
    a = make_activity(questions=[{"key": "note", "label": "备注", "type": "text"}])
    resp = client.post(f"/api/v1/activities/{a.id}/registrations", headers={
        **user_token(make_user()), "Content-Type": "application/json"},
        data='{"answers": {"note": "半个表情\\ud83d"}}')
    assert resp.status_code == 400 and resp.get_json()["error"] == "malformed_json", resp.get_json()


# --- 7. a number question left empty ----------------------------------------------------------------------------

def test_an_optional_number_or_yes_no_question_left_empty_is_no_answer(client, new_activity, make_user, user_token):
    """The mini-program's form sends an input left empty as "" (as it does for a text or a date): an optional 随行人数
    left empty was refused with “随行人数应为数字”, so the user could not register without making up a number. It
    is now no answer, as for text and dates; a required one says 请填写."""
    aid = new_activity(capacity=10, questions=[
        {"key": "guests", "label": "随行人数", "type": "number"},
        {"key": "people", "label": "参加人数", "type": "number", "integer": True, "required": True, "min": 1},
        {"key": "parking", "label": "是否停车", "type": "bool"}])
    resp = _register(client, aid, user_token(make_user()), {"guests": "", "people": "", "parking": ""})
    assert resp.status_code == 422, resp.get_json()
    assert resp.get_json()["fields"] == {"answers.people": "请填写参加人数"}, resp.get_json()
    resp = _register(client, aid, user_token(make_user()), {"guests": " ", "people": 2, "parking": ""})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["answers"] == {"people": 2}


# --- 8. an appeal's key sent again after the appeal was withdrawn --------------------------------------------------

def test_an_appeal_key_sent_again_after_a_withdrawal_is_refused_not_replayed(client, make_user, user_token, db):
    """As for a cancelled registration: 我要反映 (key K), 撤回, then 提交 again from the page that kept K and its words
    answered 200 with the withdrawn appeal, so the page said 提交成功 and nothing reached staff. It is now 409
    idempotency_key_reused saying the earlier one was withdrawn; a new key files it. (Without a key, the same words
    after a withdrawal were already a new appeal.)"""
    from wxapp_backend.appeals.models import Appeal

    h = user_token(make_user())
    body = {"content": "我们楼下的路灯坏了一个星期了，晚上很黑", "contact_name": "王先生", "contact_phone": "13800138000"}
    first = client.post("/api/v1/appeals", json=body, headers={**h, "Idempotency-Key": "ap-k1"})
    assert first.status_code == 201, first.get_json()
    aid = first.get_json()["id"]
    assert client.post(f"/api/v1/appeals/{aid}/withdraw", json={"reason": "写错了"}, headers=h).status_code == 200
    again = client.post("/api/v1/appeals", json=body, headers={**h, "Idempotency-Key": "ap-k1"})
    assert again.status_code == 409, again.get_json()
    out = again.get_json()
    assert out["error"] == "idempotency_key_reused" and "撤回" in out["message"], out
    assert first.get_json()["number"] in out["message"] and "Idempotency-Key" not in out["message"]
    assert db.query(Appeal).count() == 1
    fresh = client.post("/api/v1/appeals", json=body, headers={**h, "Idempotency-Key": "ap-k2"})
    assert fresh.status_code == 201 and fresh.get_json()["id"] != aid, fresh.get_json()


# --- 9. the Idempotency-Key header in the OpenAPI document ------------------------------------------------------

def test_the_idempotency_key_header_is_documented_as_it_is_checked(client, make_activity, make_user, user_token):
    """Registrations and appeals take an Idempotency-Key header (and refuse a malformed one with 400), but the
    document did not mention it: a client generated from it could not send one. Now it is a header parameter with
    its limits, and the limits are the ones the server applies."""
    import re

    spec = client.get("/api/v1/openapi.json").get_json()["paths"]
    a = make_activity()
    h = user_token(make_user())
    appeal = {"content": "我们楼下的路灯坏了一个星期了，晚上很黑", "contact_name": "王先生", "contact_phone": "13800138000"}
    for path, url, body in (("/api/v1/activities/{activity_id}/registrations",
                             f"/api/v1/activities/{a.id}/registrations", {"answers": {}}),
                            ("/api/v1/appeals", "/api/v1/appeals", appeal)):
        params = [p for p in spec[path]["post"]["parameters"] if p["in"] == "header"]
        assert [p["name"] for p in params] == ["Idempotency-Key"], (path, params)
        schema = params[0]["schema"]
        assert params[0]["required"] is False and "idempotency_key_reused" in params[0]["description"]
        longest = schema["maxLength"]
        assert re.fullmatch(schema["pattern"], "a" * longest)
        too_long = client.post(url, json=body, headers={**h, "Idempotency-Key": "b" * (longest + 1)})
        assert too_long.status_code == 400 and too_long.get_json()["error"] == "bad_idempotency_key"
        bad_char = client.post(url, json=body, headers={**h, "Idempotency-Key": "a/b"})
        assert bad_char.status_code == 400 and not re.fullmatch(schema["pattern"], "a/b")
        ok = client.post(url, json=body, headers={**h, "Idempotency-Key": "c" * longest})
        assert ok.status_code == 201, (path, ok.get_json())


# --- 10. the last seat, taken at once through the API ------------------------------------------------------------

def test_the_last_seat_tapped_at_once_goes_to_one_and_a_refused_key_stays_usable(app, client, make_activity, make_user,
                                                                                  user_token, db):
    """Eight people tap 报名 on the last seat at once (each page with its key, each tapping twice): one seat taken
    once, its owner's second tap the same registration, everyone else 名额已满 (no waitlist). The refused key made
    nothing, so when the seat frees up the same page's retry with that key registers (a key is used up only by a
    registration it made)."""
    import threading
    from collections import Counter

    a = make_activity(capacity=1, waitlist_enabled=False)
    heads = [user_token(make_user()) for _ in range(8)]
    barrier = threading.Barrier(16)
    out: list = []
    guard = threading.Lock()

    def tap(i):
        with app.app_context():
            c = app.test_client()
            barrier.wait()
            r = _register(c, a.id, heads[i // 2], key=f"last-seat-{i // 2}")
            with guard:
                out.append((i // 2, r.status_code, (r.get_json() or {}).get("error") or r.get_json()["id"]))

    threads = [threading.Thread(target=tap, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == 16
    db.expire_all()
    seats = db.query(Registration).filter_by(activity_id=a.id).all()
    assert len(seats) == 1 and seats[0].status == "confirmed"
    winner = next(who for who, code, _ in out if code == 201)
    assert Counter((who == winner, code) for who, code, _ in out) == Counter(
        {(True, 201): 1, (True, 200): 1, (False, 409): 14}), out
    assert {err for who, code, err in out if who != winner} == {"activity_full"}
    assert _cancel(client, seats[0].id, heads[winner]).status_code == 200
    loser = (winner + 1) % 8
    retry = _register(client, a.id, heads[loser], key=f"last-seat-{loser}")
    assert retry.status_code == 201 and retry.get_json()["status"] == "confirmed", retry.get_json()


# --- 11. a page that has not logged in yet -----------------------------------------------------------------------

def test_a_page_before_login_is_told_to_log_in_not_that_its_login_expired(client):
    """Before wx.login finishes, a page sends “Bearer undefined” (or null, or nothing after Bearer) from its empty
    storage. The open pages already read that as no login; the pages that need one answered 401 invalid_token
    “登录已过期”, to someone who had never logged in. It is now missing_token “请先登录”, as with no header."""
    for header in ("Bearer undefined", "Bearer null", "Bearer  ", "bearer undefined"):
        for method, url in (("GET", "/api/v1/me/registrations"), ("GET", "/api/v1/me/inbox"),
                            ("POST", "/api/v1/appeals")):
            resp = client.open(url, method=method, headers={"Authorization": header},
                               json={} if method == "POST" else None)
            assert resp.status_code == 401, (header, url, resp.status_code)
            body = resp.get_json()
            assert body["error"] == "missing_token" and "请先登录" in body["message"], (header, url, body)
    forged = client.get("/api/v1/me/registrations", headers={"Authorization": "Bearer qa13-forged"})
    assert forged.status_code == 401 and forged.get_json()["error"] == "invalid_token"
