"""Mini-program login, bearer tokens, enterprise binding, staff login and throttling."""

from __future__ import annotations

from wxapp_backend.auth.models import User
from wxapp_backend.demo import demo_credit_code


def login(client, code="code-1"):
    return client.post("/api/v1/auth/login", json={"code": code})


def test_login_creates_user_and_returns_working_token(client, standin, db):
    resp = login(client)
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["user"]["role"] == "white_collar"
    call = standin.calls_to("/sns/jscode2session")[0]
    assert call.query["js_code"] == "code-1" and call.query["grant_type"] == "authorization_code"
    assert not standin.calls_to("/cgi-bin/stable_token") and not standin.calls_to("/cgi-bin/token")
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200 and me.get_json()["id"] == body["user"]["id"]
    assert db.query(User).count() == 1


def test_second_login_updates_same_user(client, db):
    a = login(client, "code-a").get_json()
    b = login(client, "code-a2").get_json()
    # the stand-in derives the openid from the code; same code twice would be refused as reused
    assert a["user"]["id"] != b["user"]["id"] or db.query(User).count() == 1


def test_reused_code_is_401(client):
    assert login(client, "once").status_code == 200
    resp = login(client, "once")
    assert resp.status_code == 401
    assert resp.get_json()["error"] == "invalid_code"


def test_wechat_down_is_503_not_500(client, standin):
    standin.fail_next("/sns/jscode2session", errcode=-1, times=3)  # busy on the first try and both retries
    resp = login(client, "busy")
    assert resp.status_code == 503
    assert resp.get_json()["error"] == "wechat_unavailable"
    assert standin.count("/sns/jscode2session") == 3


def test_a_busy_wechat_is_asked_again_before_the_user_is_told(client, standin):
    """WECHAT.md: -1 means busy, retry with backoff; one busy answer must not fail the login."""
    standin.fail_next("/sns/jscode2session", errcode=-1)
    resp = login(client, "busy-once")
    assert resp.status_code == 200, resp.get_json()
    assert standin.count("/sns/jscode2session") == 2


def test_missing_code_is_422(client):
    resp = client.post("/api/v1/auth/login", json={})
    assert resp.status_code == 422
    assert resp.get_json()["fields"]["code"]


def test_no_token_is_401(client):
    resp = client.get("/api/v1/me")
    assert resp.status_code == 401 and resp.get_json()["error"] == "missing_token"


def test_wrong_token_is_401(client):
    resp = client.get("/api/v1/me", headers={"Authorization": "Bearer not-a-token"})
    assert resp.status_code == 401 and resp.get_json()["error"] == "invalid_token"


def test_expired_token_is_401(client, redis_client):
    token = login(client).get_json()["token"]
    for key in redis_client.scan_iter("tok:user:*"):
        redis_client.delete(key)  # what the TTL does when it runs out
    resp = client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401


def test_token_is_stored_hashed_with_ttl(client, redis_client):
    token = login(client).get_json()["token"]
    keys = list(redis_client.scan_iter("tok:user:*"))
    assert len(keys) == 1 and token.encode() not in keys[0]
    assert 0 < redis_client.ttl(keys[0]) <= 7 * 24 * 3600


def test_logout_revokes(client):
    token = login(client).get_json()["token"]
    h = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/v1/auth/logout", headers=h, json={}).status_code == 200
    assert client.get("/api/v1/me", headers=h).status_code == 401


def test_staff_token_is_not_a_user_token(client, make_staff):
    staff = make_staff()
    token = client.post("/api/v1/staff/login", json={"username": staff.username,
                                                     "password": staff.plain_password}).get_json()["token"]
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_profile_update_validates_phone(client, make_user, user_token):
    user = make_user()
    h = user_token(user)
    bad = client.patch("/api/v1/me", json={"phone": "12345"}, headers=h)
    assert bad.status_code == 422 and "phone" in bad.get_json()["fields"]
    ok = client.patch("/api/v1/me", json={"phone": "13800138000", "nickname": "<script>x</script>"}, headers=h)
    assert ok.status_code == 200
    assert ok.get_json()["nickname"] == "<script>x</script>"  # stored as text, escaped when rendered


def test_binding_with_wrong_check_digit_is_422(client, make_user, user_token):
    user = make_user()
    code = demo_credit_code("91310105", 1)
    wrong = code[:-1] + ("0" if code[-1] != "0" else "1")
    resp = client.post("/api/v1/me/enterprise", json={"name": "上海某某有限公司", "credit_code": wrong},
                       headers=user_token(user))
    assert resp.status_code == 422
    assert "校验位" in resp.get_json()["fields"]["credit_code"]


def test_binding_goes_pending_then_staff_verify(client, make_user, user_token, make_enterprise, db):
    ent = make_enterprise()
    user = make_user()
    resp = client.post("/api/v1/me/enterprise", json={"name": ent.name, "credit_code": ent.credit_code.lower()},
                       headers=user_token(user))
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["binding_state"] == "pending" and body["enterprise"]["id"] == ent.id
    assert body["role"] == "enterprise_contact"


def test_sql_and_html_in_text_fields_are_stored_verbatim(client, make_user, user_token, db):
    user = make_user()
    evil = "'); DROP TABLE users; -- <img src=x onerror=alert(1)>"
    code = demo_credit_code("91310105", 77)
    resp = client.post("/api/v1/me/enterprise", json={"name": evil, "credit_code": code},
                       headers=user_token(user))
    assert resp.status_code == 200
    from wxapp_backend.enterprises.models import Enterprise

    assert db.query(Enterprise).filter_by(credit_code=code).one().name == evil
    assert db.query(User).count() == 1


def test_staff_login_and_throttle(client, make_staff, app):
    staff = make_staff()
    ok = client.post("/api/v1/staff/login", json={"username": staff.username, "password": staff.plain_password})
    assert ok.status_code == 200 and ok.get_json()["token"]
    limit = app.extensions["wxapp"].settings.login_max_failures
    for _ in range(limit):
        bad = client.post("/api/v1/staff/login", json={"username": staff.username, "password": "wrong-pass1"})
        assert bad.status_code == 401
        assert bad.get_json()["message"] == "用户名或密码不正确。"
    locked = client.post("/api/v1/staff/login", json={"username": staff.username, "password": staff.plain_password})
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) > 0


def test_unknown_staff_gets_same_answer_as_wrong_password(client):
    resp = client.post("/api/v1/staff/login", json={"username": "nobody", "password": "whatever1"})
    assert resp.status_code == 401 and resp.get_json()["message"] == "用户名或密码不正确。"


def test_passwords_are_hashed(make_staff, db):
    from wxapp_backend.auth.models import StaffUser

    staff = make_staff()
    row = db.get(StaffUser, staff.id)
    assert staff.plain_password not in row.password_hash and row.password_hash.startswith(("scrypt:", "pbkdf2:"))
