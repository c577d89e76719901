"""The mini-program API under /api/v1, QA session 17: the token of an account that is gone on the open (login-optional)
routes, and the OpenAPI document checked against what each operation really answers."""

from __future__ import annotations

import re

import pytest

from tests.integration.test_miniapi5_qa_s16 import _json_error as _json_error_s16
from wxapp_backend.knowledge_store.cli import load_default_if_empty


def _json_error(resp, status: int) -> dict:
    body = _json_error_s16(resp, status)
    assert isinstance(body["fields"], dict)
    return body


@pytest.fixture
def kb(app_ctx):
    load_default_if_empty()
    from wxapp_backend.knowledge_store.services import get_runtime

    get_runtime().check_interval = 0
    return get_runtime()


def _delete_every_user() -> None:
    from wxapp_backend.auth.models import User
    from wxapp_backend.db import session_scope

    with session_scope() as s:
        for user in s.query(User).all():
            s.delete(user)


# --- 1. the token of an account that is gone, on the routes where a login is optional --------------------------------


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("post", "/api/v1/chat", {"text": "外籍人才工作许可怎么办"}),
        ("post", "/api/v1/kb/feedback", {"entry_id": "talent-foreign-work-permit", "useful": True}),
        ("get", "/api/v1/activities", None),
        ("get", "/api/v1/activities/{activity}", None),
    ],
)
def test_the_token_of_an_account_that_is_gone_is_an_expired_login_on_open_routes(
    client, kb, make_user, user_token, make_activity, method, url, body
):
    """A token outlives its account row (merged away, removed on request, a restored backup). The routes that need a
    login already answer it with 401 invalid_token; those where a login is optional did not: 和数字店小二对话 and
    有用/没用 were a 500 (the chat turn and the vote were written for a user who is not there), and the activity
    list and page were served as to a logged-in user (no ineligible_reason, no my_registration), so the page offered
    报名 and the mini-program never learnt that it must log in again. The OpenAPI document promises a 401 for a
    login that is no longer valid; and the token is ended."""
    activity = make_activity()
    h = user_token(make_user())
    _delete_every_user()
    resp = client.open(url.format(activity=activity.id), method=method.upper(), json=body, headers=h)
    err = _json_error(resp, 401)
    assert err["error"] == "invalid_token" and err["message"] == "登录已过期，请重新进入小程序。"
    # Ended: a route that needs a login says the same, and without a token the open route still answers.
    assert _json_error(client.get("/api/v1/me", headers=h), 401)["error"] == "invalid_token"
    assert client.get("/api/v1/activities").status_code == 200


def test_a_live_token_on_open_routes_still_gives_the_personal_answer(client, kb, make_user, user_token, make_activity):
    activity = make_activity()
    h = user_token(make_user())
    page = client.get(f"/api/v1/activities/{activity.id}", headers=h)
    assert page.status_code == 200 and "my_registration" in page.get_json()
    answer = client.post("/api/v1/chat", json={"text": "外籍人才工作许可怎么办"}, headers=h)
    assert answer.status_code == 200 and answer.get_json()["turn_id"]
    vote = client.post("/api/v1/kb/feedback", headers=h,
                       json={"entry_id": answer.get_json()["entry_id"], "useful": True,
                             "turn_id": answer.get_json()["turn_id"]})
    assert vote.status_code == 200, vote.get_json()


# --- 2. the OpenAPI document against what each operation answers -----------------------------------------------------


def _operations(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield path, method.upper(), op


def _url(path: str) -> str:
    # Path parameters: an id nobody has (an integer where the rule takes one, else a plain word).
    return re.sub(r"\{(\w+)\}", lambda m: "987654" if m.group(1).endswith("_id") else "nothing-here", path)


def _check_documented(op: dict, resp, what: str) -> None:
    """`resp` is an answer the document lists for `op`; an error is the Error schema the document names for it."""
    status = str(resp.status_code)
    assert status in op["responses"], (what, op["operationId"], status, sorted(op["responses"]))
    if resp.status_code >= 400:
        _json_error(resp, resp.status_code)
        content = op["responses"][status].get("content", {})
        assert content.get("application/json", {}).get("schema") == {"$ref": "#/components/schemas/Error"}, (
            what, op["operationId"], status, op["responses"][status])


def test_every_documented_error_answer_names_the_error_schema(client):
    """A response the view documents itself (registration 409 activity_full, appeal 413 照片过大, check-in 409
    checkin_closed ...) replaced the generic one and lost its content: the document said that these answers have no
    body, while each is {error, message, fields} like every other error."""
    for _path, _method, op in _operations(client):
        for status, response in op["responses"].items():
            if int(status) >= 400:
                assert response.get("content", {}).get("application/json", {}).get("schema") == {
                    "$ref": "#/components/schemas/Error"}, (op["operationId"], status, response)


def test_every_operation_answers_as_its_document_says(client, make_user, user_token, make_staff, staff_headers):
    """Walks /api/v1/openapi.json: each operation without its login, with a login that is no longer valid, with a
    body that is no JSON object and with one of the wrong Content-Type, without its required query parameters, and
    the list views with a login. Every answer must be one the document lists for that operation, and every error the
    {error, message, fields} it documents, in Chinese."""
    user, staff = make_user(), make_staff(role="admin")
    ended = {"Authorization": "Bearer no-longer-valid-token-0000000000"}
    checked = 0
    for path, method, op in _operations(client):
        url = _url(path)
        security = op.get("security")
        # A fresh login for each operation: the logout operations end theirs.
        login = staff_headers(staff) if "/staff/" in path else user_token(user)
        body = {} if "requestBody" in op else None
        if security == [{"bearer": []}]:
            _check_documented(op, client.open(url, method=method, json=body), "no token")
            _check_documented(op, client.open(url, method=method, json=body, headers=ended), "ended token")
        if security == [{}, {"bearer": []}]:
            _check_documented(op, client.open(url, method=method, json=body, headers=ended), "ended token")
        if "requestBody" in op:
            for what, kw in (("array", {"data": "[1]", "content_type": "application/json"}),
                             ("broken", {"data": '{"a": ', "content_type": "application/json"}),
                             ("text/plain", {"data": "{}", "content_type": "text/plain"})):
                resp = client.open(url, method=method, headers=login, **kw)
                assert resp.status_code < 500, (what, op["operationId"])
                _check_documented(op, resp, what)
        required = [p["name"] for p in op.get("parameters", []) if p["in"] == "query" and p["required"]]
        if required:
            resp = client.open(url, method=method, headers=login)
            _check_documented(op, resp, "no query")
            assert set(required) <= set(resp.get_json()["fields"]), (op["operationId"], resp.get_json())
        if method == "GET" and "{" not in path and not required:
            resp = client.get(url, headers=login)
            assert resp.status_code == 200 and isinstance(resp.get_json(), dict), (op["operationId"], resp.status_code)
            _check_documented(op, resp, "list")
        checked += 1
    assert checked > 60


@pytest.mark.parametrize(
    ("errcode", "times", "status", "code"),
    [
        (40029, 1, 401, "invalid_code"),
        (40163, 1, 401, "invalid_code"),
        (45011, 1, 429, "too_many_requests"),
        (-1, 10, 503, "wechat_unavailable"),
        (40013, 1, 503, "wechat_unavailable"),
    ],
)
def test_each_code2session_refusal_is_a_documented_answer(client, standin, errcode, times, status, code):
    """WECHAT.md's code2session errors: 40029 (bad code) and 40163 (a code used once already) ask for a new wx.login,
    45011 is WeChat's own rate limit (a 429 with Retry-After), -1 is busy (tried again, then given up). The last was
    a 503 wechat_unavailable that the document never listed for the login: a front end generated from it had no
    branch for 微信登录暂时不可用."""
    standin.fail_next("/sns/jscode2session", errcode, times=times)
    resp = client.post("/api/v1/auth/login", json={"code": f"qa17-{abs(errcode)}~1"})
    err = _json_error(resp, status)
    assert err["error"] == code
    if status == 429:
        assert int(resp.headers["Retry-After"]) > 0
    login = next(op for path, method, op in _operations(client) if path == "/api/v1/auth/login")
    _check_documented(login, resp, f"code2session {errcode}")


def test_a_login_code_sent_again_is_refused_and_the_first_token_still_works(client):
    first = client.post("/api/v1/auth/login", json={"code": "qa17-once~1"})
    assert first.status_code == 200
    again = client.post("/api/v1/auth/login", json={"code": "qa17-once~1"})
    assert _json_error(again, 401)["error"] == "invalid_code"
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {first.get_json()['token']}"})
    assert me.status_code == 200 and me.get_json()["id"] == first.get_json()["user"]["id"]


# --- 3. an address that is almost right -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "meant"),
    [
        ("GET", "/api/v1/me/", "/api/v1/me"),
        ("GET", "/api/v1/appeals/1/", "/api/v1/appeals/1"),
        ("POST", "/api/v1/chat/", "/api/v1/chat"),
        ("PUT", "/api/v1/me/subscriptions/", "/api/v1/me/subscriptions"),
        ("GET", "/API/v1/me", "/api/v1/me"),
        ("GET", "/Api/V1/activities", "/api/v1/activities"),
    ],
)
def test_an_address_with_a_trailing_slash_or_in_capitals_names_the_one_meant(
    client, make_user, user_token, method, path, meant
):
    """/api/v1/me/ was a bare 没有找到您要的内容 (a doubled slash already named the right address), and /API/v1/me, not
    under /api, the console's HTML error page: no JSON for wx.request to read. Both are a Chinese JSON 404 naming the
    address meant; nothing is served under the wrong address."""
    resp = client.open(path, method=method, json={"text": "你好"} if method != "GET" else None,
                       headers=user_token(make_user()))
    body = _json_error(resp, 404)
    assert body["error"] == "not_found" and meant in body["message"], body["message"]


def test_an_unknown_api_address_is_still_a_plain_json_404(client):
    body = _json_error(client.get("/api/v1/no-such-thing/"), 404)
    assert body["message"] == "没有找到您要的内容。"
    assert _json_error(client.get("/API/v1/no-such-thing"), 404)["error"] == "not_found"
    assert client.get("/no-such-page").mimetype == "text/html"  # outside /api: the HTML page, as before
