"""The mini-program API under /api/v1, QA session 16 (5): an address with a doubled slash answered by an English HTML
redirect, an Idempotency-Key or X-Request-Id outside the documented ASCII set taken, and an unknown answer's key echoed
back whole (thousands of characters, bidi overrides and all)."""

from __future__ import annotations

import pytest

from wxapp_backend.activities.models import Registration


def _chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def _json_error(resp, status: int) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.mimetype == "application/json", resp.headers.get("Content-Type")
    body = resp.get_json()
    assert set(body) == {"error", "message", "fields"} and _chinese(body["message"]), body
    return body


# --- 1. a doubled slash in an /api address ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1//me"),
        ("GET", "/api/v1/appeals//1"),
        ("POST", "/api/v1//chat"),
        ("DELETE", "/api/v1/me//enterprise"),
    ],
)
def test_a_doubled_slash_in_an_api_address_is_a_chinese_json_404(client, make_user, user_token, method, path):
    """werkzeug merges the slashes of `/api/v1//me` and answers 308 with an English HTML page (“Redirecting...”),
    text/html, to an absolute http:// address: no JSON for the mini-program to read, and wx.request does not resend a
    POST's body there. It is an address that does not exist, said in Chinese, naming the one meant."""
    h = user_token(make_user())
    resp = client.open(path, method=method, json={"text": "你好"} if method == "POST" else None, headers=h)
    body = _json_error(resp, 404)
    assert body["error"] == "not_found" and "Location" not in resp.headers
    assert "/api/v1/" in body["message"] and "//" not in body["message"], body["message"]


def test_the_console_still_redirects_a_doubled_slash(client):
    resp = client.get("/console//login")
    assert resp.status_code in {301, 308} and resp.headers["Location"].endswith("/console/login")


# --- 2. the documented ASCII headers ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["é", "ªº²", "tap-Àõ1"])
def test_an_idempotency_key_outside_the_documented_characters_is_refused(
    client, make_activity, make_user, user_token, db, key
):
    """The OpenAPI document says ^[A-Za-z0-9_.:-]+$; the check used str.isalnum(), which takes é, À, õ,
    ª, º and ² (a header arrives as Latin-1 text). A key the document refuses was stored with a registration."""
    a = make_activity()
    h = {**user_token(make_user()), "Idempotency-Key": key}
    body = _json_error(client.post(f"/api/v1/activities/{a.id}/registrations", json={}, headers=h), 400)
    assert body["error"] == "bad_idempotency_key"
    assert db.query(Registration).count() == 0
    appeal = {
        "content": "楼下路灯坏了一个星期了，晚上很黑",
        "contact_name": "张三",
        "contact_phone": "13800138000",
    }
    assert (
        _json_error(client.post("/api/v1/appeals", json=appeal, headers=h), 400)["error"]
        == "bad_idempotency_key"
    )


def test_a_plain_ascii_idempotency_key_still_works(client, make_activity, make_user, user_token):
    a = make_activity()
    h = {**user_token(make_user()), "Idempotency-Key": "tap-1:a_b.c"}
    first = client.post(f"/api/v1/activities/{a.id}/registrations", json={}, headers=h)
    again = client.post(f"/api/v1/activities/{a.id}/registrations", json={}, headers=h)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.get_json()["id"] == again.get_json()["id"]


def test_a_request_id_that_is_not_ascii_is_replaced(client):
    """X-Request-Id is echoed in the answer's header, the logs and the 500 message: “éé” (isalnum) was kept."""
    resp = client.get("/api/v1/appeal-categories", headers={"X-Request-Id": "éé-1"})
    rid = resp.headers["X-Request-Id"]
    assert rid != "éé-1" and rid.isascii() and len(rid) == 16, rid
    assert (
        client.get("/api/v1/appeal-categories", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"]
        == "abc-123"
    )


# --- 3. an unknown answer's key echoed back ----------------------------------------------------------------------


def test_an_unknown_answer_key_is_named_briefly_and_without_bidi_overrides(
    client, make_activity, make_user, user_token, db
):
    """{"answers": {"\\u202exxx…(3000)": 1}}: the 422 put the whole key, right-to-left override first, into the message
    and into fields (6 KB of answer to a typo; the override turns the rest of the line around where it is shown)."""
    a = make_activity(questions=[{"key": "note", "label": "备注", "type": "text"}])
    h = user_token(make_user())
    key = "\u202e" + "x" * 3000
    body = _json_error(
        client.post(f"/api/v1/activities/{a.id}/registrations", json={"answers": {key: "1"}}, headers=h), 422
    )
    assert "没有这个报名问题" in body["message"], body["message"]
    assert len(body["message"]) < 120 and "\u202e" not in body["message"], body["message"][:200]
    assert all(len(k) <= 60 and "\u202e" not in k for k in body["fields"]), list(body["fields"])[:1]
    assert db.query(Registration).count() == 0
    # a short key is still named as sent
    body = _json_error(
        client.post(f"/api/v1/activities/{a.id}/registrations", json={"answers": {"nots": "1"}}, headers=h),
        422,
    )
    assert "nots" in body["message"] and "answers.nots" in body["fields"], body
