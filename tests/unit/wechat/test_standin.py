"""The loopback WeChat API stand-in: every endpoint, WeChat error bodies, error injection, latency, concurrency."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from wxapp_backend.wechat.standin import ERRMSG, Call, WeChatStandIn

APPID, SECRET = "wxa0000000000demo", "secret-1"
OPENID = "o9AgO5Kd5ggOC-bXrbNODIiE3bGY"
ROOT = Path(__file__).resolve().parents[3]


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def server(clock: FakeClock) -> Iterator[WeChatStandIn]:
    with WeChatStandIn(appid_secrets={APPID: SECRET, "wxother": "s2"}, clock=clock) as s:
        yield s


@pytest.fixture
def s(server: WeChatStandIn, clock: FakeClock) -> WeChatStandIn:
    server.reset()
    server.set_latency(0.0)
    clock.now = 1_700_000_000.0
    return server


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def stable(s: WeChatStandIn, http: requests.Session, **kw: object) -> dict:
    body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": False, **kw}
    return http.post(f"{s.base_url}/cgi-bin/stable_token", json=body, timeout=5).json()


def token(s: WeChatStandIn, http: requests.Session) -> str:
    return stable(s, http)["access_token"]


def post(s: WeChatStandIn, http: requests.Session, path: str, body: object, access_token: str | None) -> dict:
    params = {} if access_token is None else {"access_token": access_token}
    return http.post(f"{s.base_url}{path}", params=params, json=body, timeout=5).json()


def subscribe_body(**kw: object) -> dict:
    body = {
        "touser": OPENID,
        "template_id": "TPL_activity_reminder",
        "page": "pages/activity/detail?id=1",
        "miniprogram_state": "formal",
        "lang": "zh_CN",
        "data": {"thing1": {"value": "午间一小时·书法课"}, "time2": {"value": "2024-05-01 12:00"}},
    }
    body.update(kw)
    return body


def assert_error(doc: dict, errcode: int) -> None:
    assert doc["errcode"] == errcode
    assert doc["errmsg"].startswith(ERRMSG[errcode])
    assert " rid: " in doc["errmsg"]


# ------------------------------------------------------------------------------------------- tokens


def test_base_url_and_lifecycle() -> None:
    standin = WeChatStandIn()
    with pytest.raises(RuntimeError):
        _ = standin.base_url
    standin.start()
    url = standin.base_url
    assert url.startswith("http://127.0.0.1:")
    assert requests.get(f"{url}/nope", timeout=5).status_code == 404
    standin.stop()
    standin.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/cgi-bin/token", timeout=2)


def test_stop_closes_keep_alive_connections() -> None:
    standin = WeChatStandIn().start()
    session = requests.Session()
    assert session.get(f"{standin.base_url}/nope", timeout=5).status_code == 404
    url = standin.base_url
    standin.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(f"{url}/nope", timeout=2)


def test_cgi_bin_token(s: WeChatStandIn, http: requests.Session) -> None:
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    doc = http.get(f"{s.base_url}/cgi-bin/token", params=params, timeout=5).json()
    assert doc["expires_in"] == 7200 and len(doc["access_token"]) > 64
    again = http.get(f"{s.base_url}/cgi-bin/token", params=params, timeout=5).json()
    assert again["access_token"] != doc["access_token"]  # plain token: every call issues a new one
    assert s.current_token(APPID, stable=False) == again["access_token"]


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"grant_type": "client_credential", "appid": APPID, "secret": "wrong"}, 40125),
        ({"grant_type": "client_credential", "appid": "wxunknown", "secret": SECRET}, 40013),
        ({"grant_type": "password", "appid": APPID, "secret": SECRET}, 40002),
        ({"grant_type": "client_credential", "secret": SECRET}, 41002),
        ({"grant_type": "client_credential", "appid": APPID}, 41004),
    ],
)
def test_cgi_bin_token_errors(s: WeChatStandIn, http: requests.Session, params: dict, errcode: int) -> None:
    assert_error(http.get(f"{s.base_url}/cgi-bin/token", params=params, timeout=5).json(), errcode)


def test_old_plain_token_has_a_grace_period(
    s: WeChatStandIn, http: requests.Session, clock: FakeClock
) -> None:
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    old = http.get(f"{s.base_url}/cgi-bin/token", params=params, timeout=5).json()["access_token"]
    new = http.get(f"{s.base_url}/cgi-bin/token", params=params, timeout=5).json()["access_token"]
    send = {"touser": OPENID, "msgtype": "text", "text": {"content": "hi"}}
    assert post(s, http, "/cgi-bin/message/custom/send", send, old)["errcode"] == 0
    clock.now += 301
    assert_error(post(s, http, "/cgi-bin/message/custom/send", send, old), 40001)
    assert post(s, http, "/cgi-bin/message/custom/send", send, new)["errcode"] == 0


def test_stable_token_is_stable(s: WeChatStandIn, http: requests.Session, clock: FakeClock) -> None:
    first = stable(s, http)
    assert first["expires_in"] == 7200
    clock.now += 100
    second = stable(s, http)
    assert second["access_token"] == first["access_token"]
    assert second["expires_in"] == 7100
    assert s.current_token(APPID) == first["access_token"]
    assert stable(s, http, appid="wxother", secret="s2")["access_token"] != first["access_token"]


def test_stable_token_force_refresh_invalidates_previous(s: WeChatStandIn, http: requests.Session) -> None:
    old = token(s, http)
    new = stable(s, http, force_refresh=True)["access_token"]
    assert new != old
    assert token(s, http) == new
    body = {"touser": OPENID, "msgtype": "text", "text": {"content": "hi"}}
    assert_error(post(s, http, "/cgi-bin/message/custom/send", body, old), 40001)
    assert post(s, http, "/cgi-bin/message/custom/send", body, new)["errcode"] == 0


def test_stable_token_after_expiry(s: WeChatStandIn, http: requests.Session, clock: FakeClock) -> None:
    old = token(s, http)
    clock.now += 7200
    body = {"touser": OPENID, "msgtype": "text", "text": {"content": "hi"}}
    assert_error(post(s, http, "/cgi-bin/message/custom/send", body, old), 42001)
    new = token(s, http)
    assert new != old
    assert post(s, http, "/cgi-bin/message/custom/send", body, new)["errcode"] == 0


@pytest.mark.parametrize(
    ("override", "errcode"),
    [
        ({"secret": "nope"}, 40125),
        ({"appid": "wxnope"}, 40013),
        ({"grant_type": "x"}, 40002),
        ({"appid": ""}, 41002),
    ],
)
def test_stable_token_errors(s: WeChatStandIn, http: requests.Session, override: dict, errcode: int) -> None:
    assert_error(stable(s, http, **override), errcode)


def test_stable_token_needs_a_json_body(s: WeChatStandIn, http: requests.Session) -> None:
    assert_error(http.post(f"{s.base_url}/cgi-bin/stable_token", timeout=5).json(), 44002)
    assert_error(http.post(f"{s.base_url}/cgi-bin/stable_token", data=b"{not json", timeout=5).json(), 47001)


def test_any_credentials_accepted_by_default() -> None:
    with WeChatStandIn() as open_standin:
        body = {"grant_type": "client_credential", "appid": "wxanything", "secret": "whatever"}
        doc = requests.post(f"{open_standin.base_url}/cgi-bin/stable_token", json=body, timeout=5).json()
        assert "access_token" in doc


def test_expire_tokens(s: WeChatStandIn, http: requests.Session) -> None:
    old = token(s, http)
    s.expire_tokens()
    assert_error(post(s, http, "/cgi-bin/message/subscribe/send", subscribe_body(), old), 42001)
    new = token(s, http)
    assert new != old
    assert post(s, http, "/cgi-bin/message/subscribe/send", subscribe_body(), new)["errcode"] == 0


# ------------------------------------------------------------------------------------------- login


def login(s: WeChatStandIn, http: requests.Session, code: str, **kw: str) -> dict:
    params = {"appid": APPID, "secret": SECRET, "js_code": code, "grant_type": "authorization_code", **kw}
    return http.get(f"{s.base_url}/sns/jscode2session", params=params, timeout=5).json()


def test_jscode2session(s: WeChatStandIn, http: requests.Session) -> None:
    doc = login(s, http, "081abcDEF")
    assert set(doc) == {"openid", "session_key", "unionid"}
    assert doc["openid"] == WeChatStandIn.openid_for("081abcDEF")
    assert doc["openid"] == "o" + hashlib.sha1(b"081abcDEF").hexdigest()[:27]
    assert len(doc["openid"]) == 28
    assert len(base64.b64decode(doc["session_key"])) == 16
    assert s.calls_to("/sns/jscode2session")[0].query["js_code"] == "081abcDEF"


def test_same_user_with_new_codes(s: WeChatStandIn, http: requests.Session) -> None:
    a, b = login(s, http, "alice~1"), login(s, http, "alice~2")
    assert a["openid"] == b["openid"] == WeChatStandIn.openid_for("alice")
    assert a["unionid"] == b["unionid"]
    assert login(s, http, "bob~1")["openid"] != a["openid"]


def test_jscode2session_errors(s: WeChatStandIn, http: requests.Session) -> None:
    login(s, http, "code-1")
    assert_error(login(s, http, "code-1"), 40163)
    assert_error(login(s, http, "invalid-code"), 40029)
    assert_error(login(s, http, "bad code!"), 40029)
    assert_error(login(s, http, ""), 41008)
    assert_error(login(s, http, "code-2", grant_type="client_credential"), 40002)
    assert_error(login(s, http, "code-3", secret="wrong"), 40125)
    assert "access_token" not in json.dumps([c.query for c in s.calls_to("/sns/jscode2session")])


# ------------------------------------------------------------------------------------------- sends


def test_custom_send(s: WeChatStandIn, http: requests.Session) -> None:
    body = {"touser": OPENID, "msgtype": "text", "text": {"content": "您好，您的诉求已受理 😀"}}
    assert post(s, http, "/cgi-bin/message/custom/send", body, token(s, http)) == {
        "errcode": 0,
        "errmsg": "ok",
    }
    call = s.calls_to("/cgi-bin/message/custom/send")[0]
    assert isinstance(call, Call)
    assert (call.method, call.body) == ("POST", body)
    assert call.query["access_token"] == s.current_token(APPID)


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"touser": "", "msgtype": "text", "text": {"content": "x"}}, 40003),
        ({"touser": "bad openid!", "msgtype": "text", "text": {"content": "x"}}, 40003),
        ({"msgtype": "text", "text": {"content": "x"}}, 40003),
        ({"touser": OPENID, "msgtype": "telegram", "text": {"content": "x"}}, 40008),
        ({"touser": OPENID, "msgtype": "text", "text": "x"}, 47001),
        ({"touser": OPENID, "msgtype": "text", "text": {"content": ""}}, 47001),
        ({"touser": OPENID, "msgtype": "image", "image": {}}, 40007),
        ([1, 2], 47001),
    ],
)
def test_custom_send_validation(s: WeChatStandIn, http: requests.Session, body: object, errcode: int) -> None:
    assert_error(post(s, http, "/cgi-bin/message/custom/send", body, token(s, http)), errcode)


def test_sends_need_a_valid_token(s: WeChatStandIn, http: requests.Session) -> None:
    body = {"touser": OPENID, "msgtype": "text", "text": {"content": "x"}}
    for path in ["/cgi-bin/message/custom/send", "/cgi-bin/message/subscribe/send"]:
        assert_error(post(s, http, path, body, None), 41001)
        assert_error(post(s, http, path, body, "made-up-token"), 40001)
    assert_error(
        http.get(f"{s.base_url}/cgi-bin/media/get", params={"media_id": "m"}, timeout=5).json(), 41001
    )


def test_subscribe_send(s: WeChatStandIn, http: requests.Session) -> None:
    t = token(s, http)
    first = post(s, http, "/cgi-bin/message/subscribe/send", subscribe_body(), t)
    second = post(s, http, "/cgi-bin/message/subscribe/send", subscribe_body(), t)
    assert first["errcode"] == 0 and first["errmsg"] == "ok"
    assert isinstance(first["msgid"], int) and second["msgid"] != first["msgid"]
    minimal = {"touser": OPENID, "template_id": "T", "data": {"number01": {"value": 12}}}
    assert post(s, http, "/cgi-bin/message/subscribe/send", minimal, t)["errcode"] == 0


@pytest.mark.parametrize(
    ("override", "errcode"),
    [
        ({"touser": "x y"}, 40003),
        ({"template_id": ""}, 40037),
        ({"template_id": None}, 40037),
        ({"page": "https://example.org"}, 41030),
        ({"page": 5}, 41030),
        ({"data": {}}, 47003),
        ({"data": {"thing1": "plain"}}, 47003),
        ({"data": {"thing1": {"value": "一" * 21}}}, 47003),
        ({"data": {"thing1": {"value": ""}}}, 47003),
        ({"data": {"phrase3": {"value": "已经报名成功"}}}, 47003),
        ({"data": {"phrase3": {"value": "ok"}}}, 47003),
        ({"data": {"number4": {"value": "12a"}}}, 47003),
        ({"data": {"character_string5": {"value": "编号123"}}}, 47003),
        ({"data": {"name6": {"value": "张" * 11}}}, 47003),
        ({"data": {"phone_number7": {"value": "1" * 18}}}, 47003),
        ({"data": {"time2": {"value": "12:00 PM"}}}, 47003),
        ({"miniprogram_state": "prod"}, 47003),
        ({"lang": "fr_FR"}, 47003),
    ],
)
def test_subscribe_send_validation(
    s: WeChatStandIn, http: requests.Session, override: dict, errcode: int
) -> None:
    doc = post(s, http, "/cgi-bin/message/subscribe/send", subscribe_body(**override), token(s, http))
    assert_error(doc, errcode)


def test_subscribe_send_field_limits_accept_the_maximum(s: WeChatStandIn, http: requests.Session) -> None:
    data = {
        "thing1": {"value": "一" * 20},
        "phrase2": {"value": "报名成功"},
        "character_string3": {"value": "A" * 32},
        "number4": {"value": "9" * 32},
        "name5": {"value": "张" * 10},
        "name6": {"value": "a" * 20},
        "phone_number7": {"value": "+86-021-12345678"},
        "date8": {"value": "2024年5月1日"},
    }
    assert (
        post(s, http, "/cgi-bin/message/subscribe/send", subscribe_body(data=data), token(s, http))["errcode"]
        == 0
    )


def test_template_send(s: WeChatStandIn, http: requests.Session) -> None:
    body = {"touser": OPENID, "template_id": "T", "url": "https://x", "data": {"keyword1": {"value": "v"}}}
    doc = post(s, http, "/cgi-bin/message/template/send", body, token(s, http))
    assert doc["errcode"] == 0 and isinstance(doc["msgid"], int)
    assert_error(
        post(s, http, "/cgi-bin/message/template/send", {**body, "data": {"k": 1}}, token(s, http)), 47003
    )


def test_media_get(s: WeChatStandIn, http: requests.Session) -> None:
    t = token(s, http)
    r = http.get(
        f"{s.base_url}/cgi-bin/media/get", params={"access_token": t, "media_id": "MEDIA_1"}, timeout=5
    )
    assert r.status_code == 200 and r.headers["Content-Type"] == "image/jpeg"
    assert r.content.startswith(b"\xff\xd8") and 'filename="MEDIA_1.jpg"' in r.headers["Content-disposition"]
    again = http.get(
        f"{s.base_url}/cgi-bin/media/get", params={"access_token": t, "media_id": "MEDIA_1"}, timeout=5
    )
    assert again.content == r.content
    s.add_media("PNG_1", b"\x89PNG-data", "image/png")
    r = http.get(
        f"{s.base_url}/cgi-bin/media/get", params={"access_token": t, "media_id": "PNG_1"}, timeout=5
    )
    assert (r.content, r.headers["Content-Type"]) == (b"\x89PNG-data", "image/png")
    for media_id in ["", "invalid-1"]:
        r = http.get(
            f"{s.base_url}/cgi-bin/media/get", params={"access_token": t, "media_id": media_id}, timeout=5
        )
        assert r.headers["Content-Type"].startswith("application/json")
        assert_error(r.json(), 40007)


# ------------------------------------------------------------------------------------------- injection


@pytest.mark.parametrize(
    "errcode", [40001, 42001, 45009, -1, 43101, 47003, 45015, 45047, 40003, 40037, 41030]
)
def test_fail_next_real_error_codes(s: WeChatStandIn, http: requests.Session, errcode: int) -> None:
    t = token(s, http)
    s.fail_next("/cgi-bin/message/subscribe/send", errcode=errcode)
    assert_error(post(s, http, "/cgi-bin/message/subscribe/send", subscribe_body(), t), errcode)
    assert post(s, http, "/cgi-bin/message/subscribe/send", subscribe_body(), t)["errcode"] == 0


def test_fail_next_times_and_queue(s: WeChatStandIn, http: requests.Session) -> None:
    t = token(s, http)
    path = "/cgi-bin/message/custom/send"
    body = {"touser": OPENID, "msgtype": "text", "text": {"content": "x"}}
    s.fail_next(path, errcode=-1, times=2)
    s.fail_next(path, errcode=45047)
    codes = [post(s, http, path, body, t)["errcode"] for _ in range(4)]
    assert codes == [-1, -1, 45047, 0]
    assert s.count(path) == 4


def test_fail_next_only_affects_its_path(s: WeChatStandIn, http: requests.Session) -> None:
    s.fail_next("/cgi-bin/message/subscribe/send", errcode=43101)
    body = {"touser": OPENID, "msgtype": "text", "text": {"content": "x"}}
    assert post(s, http, "/cgi-bin/message/custom/send", body, token(s, http))["errcode"] == 0
    assert_error(post(s, http, "/cgi-bin/message/subscribe/send", subscribe_body(), token(s, http)), 43101)


def test_fail_next_token_endpoints_and_custom_message(s: WeChatStandIn, http: requests.Session) -> None:
    s.fail_next("/cgi-bin/stable_token", errcode=45009, errmsg="reach max api daily quota limit, custom")
    doc = stable(s, http)
    assert doc["errcode"] == 45009 and doc["errmsg"].startswith(
        "reach max api daily quota limit, custom rid: "
    )
    assert "access_token" in stable(s, http)


def test_fail_next_http_status(s: WeChatStandIn, http: requests.Session) -> None:
    s.fail_next("/cgi-bin/stable_token", http_status=502)
    body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    assert http.post(f"{s.base_url}/cgi-bin/stable_token", json=body, timeout=5).status_code == 502
    assert "access_token" in stable(s, http)


def test_latency_global_and_per_path(s: WeChatStandIn, http: requests.Session) -> None:
    t = token(s, http)
    s.set_latency(0.2, "/cgi-bin/message/subscribe/send")
    started = time.perf_counter()
    post(s, http, "/cgi-bin/message/subscribe/send", subscribe_body(), t)
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    token(s, http)
    assert time.perf_counter() - started < 0.15
    s.set_latency(0.1)
    started = time.perf_counter()
    token(s, http)
    assert time.perf_counter() - started >= 0.1


def test_latency_does_not_serialise_requests(s: WeChatStandIn) -> None:
    s.set_latency(0.3)
    url = f"{s.base_url}/cgi-bin/stable_token"
    body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    started = time.perf_counter()
    with ThreadPoolExecutor(20) as pool:
        docs = list(pool.map(lambda _: requests.post(url, json=body, timeout=5).json(), range(20)))
    assert time.perf_counter() - started < 2.0  # 20 x 0.3 s would be 6 s if serialised
    assert len({d["access_token"] for d in docs}) == 1


# ------------------------------------------------------------------------------------------- recording


def test_calls_recorded_and_reset(s: WeChatStandIn, http: requests.Session, clock: FakeClock) -> None:
    token(s, http)
    calls = s.calls_to("/cgi-bin/stable_token")
    assert len(calls) == 1
    assert calls[0].body is not None and calls[0].body["appid"] == APPID
    assert calls[0].at == clock.now and calls[0].query == {}
    assert s.count("/cgi-bin/stable_token") == 1 and s.count() == 1
    s.reset()
    assert s.calls == [] and s.count() == 0
    assert s.current_token(APPID) is None


def test_record_false_keeps_counters_only() -> None:
    with WeChatStandIn(record=False) as quiet:
        body = {"grant_type": "client_credential", "appid": "wx1", "secret": "s"}
        for _ in range(3):
            requests.post(f"{quiet.base_url}/cgi-bin/stable_token", json=body, timeout=5)
        assert quiet.calls == [] and quiet.calls_to("/cgi-bin/stable_token") == []
        assert quiet.count("/cgi-bin/stable_token") == 3


def test_hundreds_of_concurrent_requests(s: WeChatStandIn, http: requests.Session) -> None:
    t = token(s, http)
    url = f"{s.base_url}/cgi-bin/message/subscribe/send"
    local = threading.local()

    def send(_: int) -> int:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session.post(url, params={"access_token": t}, json=subscribe_body(), timeout=10).json()[
            "errcode"
        ]

    with ThreadPoolExecutor(200) as pool:
        results = list(pool.map(send, range(1000)))
    assert results == [0] * 1000
    assert s.count("/cgi-bin/message/subscribe/send") == 1000
    assert len(s.calls_to("/cgi-bin/message/subscribe/send")) == 1000


def test_many_fresh_connections_at_once(s: WeChatStandIn) -> None:
    # No connection reuse: every request opens a socket, like a cold benchmark start.
    def hit(_: int) -> int:
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
            sock.sendall(
                b"GET /cgi-bin/token?grant_type=client_credential&appid=wxother&secret=s2 HTTP/1.1\r\n"
                b"Host: x\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return int(data.split(b" ", 2)[1])

    with ThreadPoolExecutor(300) as pool:
        assert set(pool.map(hit, range(300))) == {200}


# ------------------------------------------------------------------------------------------- command line


def test_runs_as_a_module() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wxapp_backend.wechat.standin",
            "--port",
            str(port),
            "--app",
            f"{APPID}:{SECRET}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        body = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
        doc = requests.post(f"http://127.0.0.1:{port}/cgi-bin/stable_token", json=body, timeout=5).json()
        assert "access_token" in doc
        assert_error(
            requests.post(
                f"http://127.0.0.1:{port}/cgi-bin/stable_token", json={**body, "secret": "x"}, timeout=5
            ).json(),
            40125,
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_internal_error_is_a_500_with_the_traceback(s: WeChatStandIn, http: requests.Session) -> None:
    def boom(*_: object) -> dict:
        raise ZeroDivisionError("stand-in bug")

    s._routes["/boom"] = boom
    try:
        r = http.get(f"{s.base_url}/boom", timeout=5)
        assert r.status_code == 500 and "ZeroDivisionError" in r.text
        assert http.get(f"{s.base_url}/nope", timeout=5).status_code == 404  # still serving
    finally:
        del s._routes["/boom"]
