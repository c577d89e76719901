"""Inputs the fuzzers do not make: JSON that parses but is no text (lone surrogates), nesting beyond the parser,
and the like. Each must be a 4xx with a Chinese message and leave the stored data as it was."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope

_HAN = re.compile(r"[\u4e00-\u9fff]")


def _post_raw(client, method: str, path: str, body: str, headers: dict) -> object:
    return client.open(path, method=method, data=body.encode("utf-8"),
                       headers={**headers, "Content-Type": "application/json"})


@contextmanager
def _nul_spy() -> Iterator[list[str]]:
    """The statements sent with a NUL in a parameter, which PostgreSQL refuses (SQLite takes it)."""
    sent: list[str] = []

    def spy(conn, cursor, statement, parameters, context, executemany):
        if "\\x00" in repr(parameters):
            sent.append(statement)

    event.listen(Engine, "before_cursor_execute", spy)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", spy)


def _assert_clean_4xx(resp, status: int = 400) -> None:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    data = resp.get_json()
    assert {"error", "message", "fields"} <= set(data) and _HAN.search(data["message"]), data


def test_lone_surrogate_in_json_is_400_and_changes_nothing(client, make_user, user_token):
    """"\\ud800" is legal JSON but no UTF-8 text: it reached the database (UnicodeEncodeError, a 500) and
    WeChat's jscode2session call (a 500)."""
    user = make_user(openid="surrogate-user", nickname="小王")
    headers = user_token(user)
    _assert_clean_4xx(_post_raw(client, "PATCH", "/api/v1/me", '{"nickname": "\\ud800"}', headers))
    _assert_clean_4xx(_post_raw(client, "POST", "/api/v1/auth/login", '{"code": "a\\udc00b"}', {}))
    # in a key, nested, or in a list: the same
    _assert_clean_4xx(_post_raw(client, "PATCH", "/api/v1/me", '{"nickname": "小李", "\\ud800": 1}', headers))
    _assert_clean_4xx(_post_raw(client, "PATCH", "/api/v1/me", '{"nickname": "小李", "x": [{"y": "\\udfff"}]}',
                                headers))
    with session_scope() as s:
        assert s.scalars(select(User.nickname).where(User.id == user.id)).one() == "小王"
    # a proper pair is one emoji, and welcome
    resp = _post_raw(client, "PATCH", "/api/v1/me", '{"nickname": "小王\\ud83d\\ude00"}', headers)
    assert resp.status_code == 200 and resp.get_json()["nickname"] == "小王\U0001f600"


def test_json_nested_beyond_the_parser_is_400(client, make_user, user_token):
    """200 000 "[" fit well within the body limit but are deeper than the parser recurses: it was a 500."""
    headers = user_token(make_user(openid="deep-user"))
    deep = "[" * 200_000 + "]" * 200_000
    _assert_clean_4xx(_post_raw(client, "POST", "/api/v1/chat", deep, headers))
    _assert_clean_4xx(_post_raw(client, "PATCH", "/api/v1/me", '{"nickname": ' + deep + "}", headers))


def _appeal(client, make_user, user_token) -> dict:
    user = make_user(openid="appeal-owner", nickname="张三")
    resp = client.post("/api/v1/appeals", json={"content": "我们公司的增值税发票开不出来，税控盘坏了，请帮忙",
                                                "contact_name": "张三", "contact_phone": "13800138000"},
                       headers=user_token(user))
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def test_console_appeal_action_texts_are_validated_like_the_api(client, make_user, user_token, make_staff,
                                                                console_login):
    """The console's action form took its texts raw, cut at 2000: a 65-character department went into the
    String(64) column (PostgreSQL refuses it: a 500) and NUL characters into the notes (the same)."""
    from wxapp_backend.appeals.models import Appeal, AppealEvent

    a = _appeal(client, make_user, user_token)
    csrf = console_login(make_staff(role="admin"))
    url = f"/console/appeals/{a['id']}/action"
    with session_scope() as s:
        department = s.get(Appeal, a["id"]).department
    resp = client.post(url, data={"csrf_token": csrf, "action": "assign", "department": "部" * 65},
                       follow_redirects=True)
    assert resp.status_code == 422 and "部门不能超过 64 个字" in resp.get_data(as_text=True)
    resp = client.post(url, data={"csrf_token": csrf, "action": "note", "note": "已电话\x00联系"})
    assert resp.status_code == 302
    resp = client.post(url, data={"csrf_token": csrf, "action": "merge", "master": "XH\x00" + "9" * 30},
                       follow_redirects=True)
    assert resp.status_code == 422 and "主诉求编号不能超过 20 个字" in resp.get_data(as_text=True)
    with session_scope() as s:
        appeal = s.get(Appeal, a["id"])
        assert appeal.department == department and appeal.status != "duplicate"
        notes = s.scalars(select(AppealEvent.note).where(AppealEvent.appeal_id == a["id"])).all()
    assert "已电话联系" in notes and not any("\x00" in n for n in notes)


def test_coordination_task_texts_lose_nul_and_are_not_cut(client, make_user, user_token, make_staff, staff_headers):
    """A task's department and description are a dict inside a list, which the fields do not look into: NUL went
    into the rows (a 500 on PostgreSQL) and a long department was cut to 64 characters without a word."""
    from wxapp_backend.appeals.models import AppealTask

    a = _appeal(client, make_user, user_token)
    headers = staff_headers(make_staff(role="admin"))
    url = f"/api/v1/staff/appeals/{a['id']}/actions"
    assert client.post(url, json={"action": "accept", "category": "tax"}, headers=headers).status_code == 200
    resp = client.post(url, json={"action": "coordinate", "tasks": [{"department": "部" * 65}]}, headers=headers)
    _assert_clean_4xx(resp, 422)
    assert "64" in resp.get_json()["message"]
    resp = client.post(url, json={"action": "coordinate",
                                  "tasks": [{"department": "城运\x00中心", "description": "现场\x00核查"}]},
                       headers=headers)
    assert resp.status_code == 200, resp.get_json()
    with session_scope() as s:
        tasks = s.scalars(select(AppealTask).where(AppealTask.appeal_id == a["id"])).all()
        assert [(t.department, t.description) for t in tasks] == [("城运中心", "现场核查")]


def test_console_registration_note_is_validated_like_the_api(client, make_user, user_token, make_activity,
                                                             make_staff, console_login):
    """The console passed the approve/reject note raw (cut at 200): NUL characters reached the event row and
    the message to the user (a 500 on PostgreSQL)."""
    from wxapp_backend.activities.models import Registration, RegistrationEvent

    activity = make_activity(requires_approval=True)
    user = make_user(openid="reg-user", nickname="小赵")
    resp = client.post(f"/api/v1/activities/{activity.id}/registrations", json={}, headers=user_token(user))
    assert resp.status_code == 201 and resp.get_json()["status"] == "pending_approval", resp.get_json()
    reg_id = resp.get_json()["id"]
    csrf = console_login(make_staff(role="admin"))
    url = f"/console/registrations/{reg_id}/reject"
    resp = client.post(url, data={"csrf_token": csrf, "note": "长" * 201}, follow_redirects=True)
    assert "说明不能超过 200 个字" in resp.get_data(as_text=True)
    with session_scope() as s:
        assert s.get(Registration, reg_id).status == "pending_approval"
    assert client.post(url, data={"csrf_token": csrf, "note": "名额\x00已满"}).status_code == 302
    with session_scope() as s:
        assert s.get(Registration, reg_id).status == "rejected"
        notes = s.scalars(select(RegistrationEvent.note).where(RegistrationEvent.registration_id == reg_id)).all()
    assert "名额已满" in notes and not any("\x00" in n for n in notes)


def test_knowledge_entry_ids_that_cannot_exist_are_not_looked_up(client, app_ctx, make_staff, console_login):
    """Entry ids from the URL were cut to 128 characters and sent to the database as they came: one character
    more than an entry's 128-character id showed (and retired) that entry, and a NUL reached the query,
    which PostgreSQL refuses (a 500, on a public page too)."""
    from wxapp_backend.knowledge_store.models import KBEntry

    long_id = "k" * 128
    with session_scope() as s:
        s.add(KBEntry(id=long_id, question="外籍人才工作许可怎么办", answer="到一网通办申请。"))
    assert client.get(f"/api/v1/kb/entries/{long_id}").status_code == 200
    csrf = console_login(make_staff(role="admin"))
    with _nul_spy() as sent_nul:
        _assert_clean_4xx(client.get(f"/api/v1/kb/entries/{long_id}x"), 404)
        _assert_clean_4xx(client.get("/api/v1/kb/entries/kb%00x"), 404)
        assert client.get("/console/kb/kb%00x/edit").status_code == 404
        assert client.post("/console/kb/kb%00x/retire", data={"csrf_token": csrf}).status_code == 404
        assert client.post(f"/console/kb/{long_id}x/retire", data={"csrf_token": csrf}).status_code == 404
    assert not sent_nul
    with session_scope() as s:
        assert s.get(KBEntry, long_id).retired is False


def test_console_knowledge_list_search_loses_nul(client, app_ctx, make_staff, console_login):
    """The knowledge list put its search text and category into LIKE / = as typed: a NUL reached the query (a 500
    on PostgreSQL). They are validated as the other console filters are."""
    from wxapp_backend.knowledge_store.models import KBEntry

    with session_scope() as s:
        s.add(KBEntry(id="qa-s9-permit", question="外籍人才工作许可怎么办", answer="到一网通办申请。"))
    console_login(make_staff(role="admin"))
    with _nul_spy() as sent_nul:
        page = client.get("/console/kb/", query_string={"q": "外籍\x00人才", "category": "\x00"})
    assert page.status_code == 200 and "qa-s9-permit" in page.get_data(as_text=True)
    assert not sent_nul


def test_nan_infinity_and_overflowing_numbers_are_400(client, make_staff, staff_headers):
    """Python's json reads NaN, Infinity and 1e999 (as inf); where a value is stored as JSON without a field
    looking into it (an extra key of an activity's question, refused by name since) it was saved, and PostgreSQL's
    json refuses it."""
    from wxapp_backend.activities.models import Activity

    headers = staff_headers(make_staff(role="admin"))
    body = ('{"category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂", '
            '"starts_at": "2030-01-05T19:00:00+08:00", "ends_at": "2030-01-05T21:00:00+08:00", "capacity": 2, '
            '"questions": [{"key": "guests", "label": "随行人数", "type": "number", "max": %s}]}')
    for number in ("NaN", "Infinity", "-Infinity", "1e999", "-1e999"):
        resp = _post_raw(client, "POST", "/api/v1/staff/activities", body % number, headers)
        _assert_clean_4xx(resp)
    with session_scope() as s:
        assert s.scalars(select(Activity)).all() == []
    # finite numbers are still welcome
    assert _post_raw(client, "POST", "/api/v1/staff/activities", body % "1.5e3", headers).status_code == 201


def test_console_activity_questions_box_reads_only_storable_json(client, make_staff, console_login):
    """The editor's questions box went through plain json.loads: nesting past the parser was a 500, a lone
    surrogate (no UTF-8 text) and NaN (which PostgreSQL's json refuses) were stored."""
    from wxapp_backend.activities.models import Activity

    csrf = console_login(make_staff(role="admin"))
    base = {"csrf_token": csrf, "category": "concert", "title": "楼宇音乐会", "address": "某大厦大堂",
            "starts_at": "2030-01-05T19:00", "ends_at": "2030-01-05T21:00", "capacity": "2"}
    for questions in ("[" * 100_000, '[{"key": "size", "label": "\\ud800", "type": "text"}]',
                      '[{"key": "size", "label": "尺码", "type": "text", "hint": NaN}]'):
        resp = client.post("/console/activities/new", data={**base, "questions": questions})
        assert resp.status_code == 422 and "报名问题应为 JSON 列表" in resp.get_data(as_text=True)
    with session_scope() as s:
        assert s.scalars(select(Activity)).all() == []
    resp = client.post("/console/activities/new",
                       data={**base, "questions": '[{"key": "size", "label": "尺码\\ud83d\\udc55", "type": "text"}]'})
    assert resp.status_code == 302


def test_console_login_never_sends_a_nul_to_the_query(client, make_staff):
    """The public login form sent the user name to the query as typed: a NUL there is a 500 on PostgreSQL,
    before anyone has logged in."""
    make_staff(username="admin9", role="admin")
    page = client.get("/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    with _nul_spy() as sent_nul:
        resp = client.post("/console/login", data={"username": "admin9\x00", "password": "Passw0rd!x",
                                                   "csrf_token": csrf})
    # Cleaned of control characters as the API's login reads the name: the same account, no NUL in the query.
    assert resp.status_code == 302
    assert not sent_nul


def test_integer_of_more_digits_than_python_converts_is_400(client, make_user, user_token):
    """An integer of 5000 digits is valid JSON, but json.loads raises a plain ValueError for it (Python converts
    at most 4300 digits), which json_body did not catch: a 500."""
    headers = user_token(make_user(openid="digits-user"))
    _assert_clean_4xx(_post_raw(client, "POST", "/api/v1/chat", '{"text": "你好", "n": ' + "7" * 5000 + "}", headers))
    _assert_clean_4xx(_post_raw(client, "PATCH", "/api/v1/me", '{"building_id": ' + "7" * 5000 + "}", headers))
