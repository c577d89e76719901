"""Abuse resistance: per-user caps and rate limits on the mini-program API, and nothing left behind by refusals."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from handlers.bot import GREETING
from tests.api.test_webhook import build, post, text_push
from wxapp_backend.appeals import services as appeal_services


def _appeal(client, headers, n: int, **kw):
    body = {"content": f"第 {n} 件事：园区门口的路灯坏了，晚上很黑，编号 {n}", "contact_name": "张三",
            "contact_phone": "13800138000", **kw}
    return client.post("/api/v1/appeals", json=body, headers=headers)


def test_appeals_per_user_per_day_are_capped(client, make_user, user_token, monkeypatch):
    monkeypatch.setattr(appeal_services, "MAX_APPEALS_PER_DAY", 3)
    user, other = make_user(), make_user()
    h = user_token(user)
    keyed = {**h, "Idempotency-Key": "k-1"}
    assert client.post("/api/v1/appeals", json={"content": "空调不制冷已经一周了", "contact_name": "张三",
                                                "contact_phone": "13800138000"}, headers=keyed).status_code == 201
    assert [_appeal(client, h, i).status_code for i in range(2)] == [201] * 2
    resp = _appeal(client, h, 3)
    assert resp.status_code == 429, resp.get_json()
    body = resp.get_json()
    assert body["error"] == "appeal_daily_limit" and "24 小时" in body["message"]
    assert 0 < int(resp.headers["Retry-After"]) <= 86400
    # Someone else is not affected, and a replay of an accepted submission still answers.
    assert _appeal(client, user_token(other), 9).status_code == 201
    replay = client.post("/api/v1/appeals", json={"content": "空调不制冷已经一周了", "contact_name": "张三",
                                                  "contact_phone": "13800138000"}, headers=keyed)
    assert replay.status_code == 200


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()


def _uploads(app) -> set[str]:
    d = Path(app.instance_path) / "uploads" / "appeals"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def test_refused_submission_and_supplement_leave_no_photos_on_disk(app, client, make_user, user_token,
                                                                     monkeypatch):
    monkeypatch.setattr(appeal_services, "MAX_APPEALS_PER_DAY", 1)
    h = user_token(make_user())
    before = _uploads(app)
    first = _appeal(client, h, 1, images=[PNG])
    assert first.status_code == 201
    kept = _uploads(app) - before
    assert len(kept) == 1
    # Refused again and again (over the cap; a supplement nobody asked for): each wrote nine files and kept them.
    for _ in range(3):
        assert _appeal(client, h, 2, images=[PNG] * 9).status_code == 429
        resp = client.post(f"/api/v1/appeals/{first.get_json()['id']}/supplement",
                           json={"content": "再补充几张照片", "images": [PNG] * 9}, headers=h)
        assert resp.status_code == 409, resp.get_json()
        resp = _appeal(client, user_token(make_user()), 3, images=[PNG] * 9, category="不存在的类别")
        assert resp.status_code == 422, resp.get_json()
    assert _uploads(app) - before == kept


@pytest.fixture
def limits(app, monkeypatch):
    def set_(**kw):
        for name, value in kw.items():
            monkeypatch.setitem(app.extensions["wxapp"].settings.extra, f"{name}_limit", value)

    return set_


def _limited(resp) -> None:
    assert resp.status_code == 429, resp.get_json()
    body = resp.get_json()
    assert body["error"] == "too_many_requests" and "太频繁" in body["message"]
    assert 0 < int(resp.headers["Retry-After"]) <= 60


def test_mini_program_login_is_rate_limited_per_address(client, standin, limits):
    limits(wxa_login=2)
    assert [client.post("/api/v1/auth/login", json={"code": f"c-{i}"}).status_code for i in range(2)] == [200] * 2
    _limited(client.post("/api/v1/auth/login", json={"code": "c-9"}))
    assert len(standin.calls_to("/sns/jscode2session")) == 2  # WeChat's quota is not spent on the script
    other = client.post("/api/v1/auth/login", json={"code": "c-10"}, environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert other.status_code == 200


def test_logged_in_chat_is_rate_limited_per_user(client, make_user, user_token, limits):
    limits(chat=2)
    h = user_token(make_user())
    for _ in range(2):
        assert client.post("/api/v1/chat", json={"text": "你好"}, headers=h).status_code == 200
    _limited(client.post("/api/v1/chat", json={"text": "你好"}, headers=h))
    assert client.post("/api/v1/chat", json={"text": "你好"}, headers=user_token(make_user())).status_code == 200


def test_kb_search_and_feedback_are_rate_limited(client, make_user, user_token, limits):
    limits(kb_search=2, kb_feedback=2)
    long_q = "企业注册地址变更需要什么材料" * 300  # the 5,000-character query an endpoint allows, again and again
    for _ in range(2):
        assert client.get("/api/v1/kb/search", query_string={"q": long_q[:5000]}).status_code == 200
    _limited(client.get("/api/v1/kb/search", query_string={"q": long_q[:5000]}))
    h = user_token(make_user())
    assert client.get("/api/v1/kb/search", query_string={"q": "开办企业"}, headers=h).status_code == 200
    fb = {"entry_id": "no-such-entry", "useful": True}
    codes = [client.post("/api/v1/kb/feedback", json=fb).status_code for _ in range(2)]
    assert 429 not in codes
    _limited(client.post("/api/v1/kb/feedback", json=fb))


def test_registration_and_subscribe_results_are_rate_limited_per_user(client, make_user, user_token, limits):
    limits(registration=2, subscribe_results=2)
    h = user_token(make_user())
    for _ in range(2):
        assert client.post("/api/v1/activities/999999/registrations", json={}, headers=h).status_code == 404
        assert client.post("/api/v1/me/subscribe-results", json={"results": {"tmpl-unknown": "reject"}}, headers=h).status_code == 200
    _limited(client.post("/api/v1/activities/999999/registrations", json={}, headers=h))
    _limited(client.post("/api/v1/me/subscribe-results", json={"results": {"tmpl-unknown": "reject"}}, headers=h))
    other = user_token(make_user())
    assert client.post("/api/v1/activities/999999/registrations", json={}, headers=other).status_code == 404


def test_webhook_retries_of_one_message_count_once_against_the_rate_limit(app, settings):
    """WeChat sends a message again when the answer is slow (up to three times): that is one message. Counted
    three times, a user with slow answers heard “速度有点快” after a few real messages."""
    a = build(settings, wechat_token="rl-retry", extra={"chat_rate_limit": 3})
    first = text_push(a, "你好", openid="oRetry1", msg_id="9001")
    replies = [post(a, "oa", first).get_data(as_text=True) for _ in range(3)]
    replies += [post(a, "oa", text_push(a, "你好", openid="oRetry1", msg_id=str(9002 + i))).get_data(as_text=True)
                for i in range(2)]
    assert all(GREETING in r for r in replies), replies
    over = post(a, "oa", text_push(a, "你好", openid="oRetry1", msg_id="9009")).get_data(as_text=True)
    assert "速度有点快" in over  # the limit itself still holds


def test_enterprise_binding_requests_per_user_are_capped(client, make_user, user_token, limits, db):
    from wxapp_backend.demo import demo_credit_code
    from wxapp_backend.enterprises.models import Enterprise

    limits(enterprise_binding=3)
    h = user_token(make_user())
    before = db.query(Enterprise).count()
    codes = [client.post("/api/v1/me/enterprise", json={"name": f"脚本公司{i}", "credit_code": demo_credit_code("91310105", 500 + i)},
                         headers=h).status_code for i in range(6)]
    assert codes[:3] == [200] * 3 and codes[3:] == [429] * 3
    # no more invented enterprises in the registry: each application replaced the one before, whose file went
    # with it (test_binding_qa_s17), so only the last one's is left
    assert db.query(Enterprise).count() - before == 1


def test_a_user_has_one_vote_per_entry_without_a_turn(client, make_user, user_token, db):
    from wxapp_backend.knowledge_store.cli import load_default_if_empty
    from wxapp_backend.knowledge_store.models import AnswerFeedback

    load_default_if_empty()
    h, other = user_token(make_user()), user_token(make_user())
    entry = "talent-foreign-work-permit"  # an entry of the default knowledge base
    ids = {client.post("/api/v1/kb/feedback", json={"entry_id": entry, "useful": i % 2 == 0}, headers=h).get_json()["id"]
           for i in range(5)}
    assert len(ids) == 1
    assert client.post("/api/v1/kb/feedback", json={"entry_id": entry, "useful": False}, headers=other).status_code == 200
    votes = db.query(AnswerFeedback).filter_by(entry_id=entry).all()
    assert len(votes) == 2 and sorted(v.useful for v in votes) == [False, True]  # the last vote of each counts


def test_api_limits_are_set_from_the_environment(settings):
    from wxapp_backend.config import ConfigError, Settings

    base = {"APP_ENV": "testing", "INSTANCE_PATH": str(settings.instance_path), "SECRET_KEY": "x" * 24}
    s = Settings.from_env({**base, "CHAT_LIMIT": "50", "ENTERPRISE_BINDING_LIMIT": "3"})
    assert s.extra["chat_limit"] == 50 and s.extra["enterprise_binding_limit"] == 3
    with pytest.raises(ConfigError):
        Settings.from_env({**base, "KB_SEARCH_LIMIT": "0"})


def test_anonymous_chat_limit_recovers_from_a_counter_left_without_expiry(client, redis_client):
    """The process may stop between counting and setting the expiry: the address must not stay refused."""
    from wxapp_backend.knowledge_store.api import ANON_LIMIT_PER_MIN

    ask = {"json": {"text": "你好"}, "environ_base": {"REMOTE_ADDR": "203.0.113.77"}}
    assert all(client.post("/api/v1/chat", **ask).status_code == 200 for _ in range(ANON_LIMIT_PER_MIN))
    counters = [k for k in redis_client.scan_iter("*203.0.113.77*")]
    assert counters
    for key in counters:
        redis_client.persist(key)  # as if EXPIRE never ran
    _limited(client.post("/api/v1/chat", **ask))
    assert all(redis_client.ttl(key) > 0 for key in counters)


def test_wechat_frequency_limit_on_login_is_a_429_with_retry_after(client, standin):
    standin.fail_next("/sns/jscode2session", errcode=45011, errmsg="api minute-quota reach limit")
    _limited(client.post("/api/v1/auth/login", json={"code": "c-45011"}))


def test_the_daily_cap_also_holds_in_the_chat_and_says_why(app, app_ctx, standin, monkeypatch):
    from wxapp_backend.wechat.chat import run_chat

    monkeypatch.setattr(appeal_services, "MAX_APPEALS_PER_DAY", 1)
    out: list[str] = []
    for problem in ("园区停车位太少，外来车辆总是违停", "写字楼门口的路灯坏了一个月，晚上很黑"):
        run_chat(app, "oa", "chat-cap-user", lines=["我要反映", problem, "测试贸易有限公司", "王五 13900139000",
                                                    "跳过", "确认"], echo=out.append, standin=standin)
    text = "\n".join(out)
    assert text.count("诉求已提交，编号 SQ") == 1
    assert "诉求没有提交：您 24 小时内已提交 1 条诉求" in text


def test_an_xlsx_with_too_many_cells_is_refused_before_openpyxl_parses_it(monkeypatch):
    """openpyxl parses a sheet without <dimension> in full just to open the workbook: a 300 KB file with one row
    of six million cells held a web worker for 40 seconds. The cells are counted in the XML first."""
    import io
    import zipfile

    import openpyxl

    from wxapp_backend.enterprises import importer

    good = importer.to_xlsx(["企业名称", "统一社会信用代码"], [["甲公司", "x"]] * 3)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.startswith("xl/worksheets/"):
                row = b'<row r="9">' + b'<c r="A9"><v>1</v></c>' * 500 + b"</row>"
                data = data.replace(b"</sheetData>", row + b"</sheetData>")
            z.writestr(info.filename, data)
    monkeypatch.setattr(importer, "MAX_SHEET_CELLS", 400, raising=False)

    def never(*a, **kw):
        raise AssertionError("openpyxl opened the workbook")

    monkeypatch.setattr(openpyxl, "load_workbook", never)
    with pytest.raises(importer._FileProblem, match="单元格太多"):
        importer.read_table("bomb.xlsx", out.getvalue())
