"""The mini-program's user-facing /api/v1 under a demanding user and a flaky network (QA session 12)."""

from __future__ import annotations

import base64
from pathlib import Path

from wxapp_backend.appeals.models import Appeal
from wxapp_backend.audit import AuditLog

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()


def _appeal_body(**kw) -> dict:
    return {"content": "园区南门的路灯坏了三天，晚上下班很黑😀", "contact_name": "张三", "contact_phone": "13800138000",
            **kw}


def _uploads(app) -> set[str]:
    d = Path(app.instance_path) / "uploads" / "appeals"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def test_an_appeal_sent_again_by_a_network_retry_is_not_filed_twice(app, client, make_user, user_token, db):
    """wx.request gives up on a slow answer and the page sends the same appeal again (no Idempotency-Key: the
    header is optional): the second POST is the first appeal again (200), not a second number for staff to
    merge; photos it carried are not left on disk."""
    h = user_token(make_user())
    first = client.post("/api/v1/appeals", json=_appeal_body(images=[PNG]), headers=h)
    assert first.status_code == 201, first.get_json()
    kept = _uploads(app)
    again = client.post("/api/v1/appeals", json=_appeal_body(images=[PNG]), headers=h)
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.get_json()["number"] == first.get_json()["number"]
    assert db.query(Appeal).count() == 1
    assert _uploads(app) == kept
    # Another problem, or the same words from someone else, is a new appeal.
    other = client.post("/api/v1/appeals", json=_appeal_body(content="停车场入口的道闸一直抬不起来"), headers=h)
    assert other.status_code == 201
    assert client.post("/api/v1/appeals", json=_appeal_body(), headers=user_token(make_user())).status_code == 201
    assert db.query(Appeal).count() == 3


def test_the_retry_of_the_days_last_appeal_is_not_refused_by_the_cap(client, make_user, user_token, monkeypatch):
    from wxapp_backend.appeals import services

    monkeypatch.setattr(services, "MAX_APPEALS_PER_DAY", 1)
    h = user_token(make_user())
    first = client.post("/api/v1/appeals", json=_appeal_body(), headers=h)
    assert first.status_code == 201
    again = client.post("/api/v1/appeals", json=_appeal_body(), headers=h)
    assert again.status_code == 200 and again.get_json()["id"] == first.get_json()["id"]
    assert client.post("/api/v1/appeals", json=_appeal_body(content="停车场入口的道闸一直抬不起来"),
                       headers=h).status_code == 429


def test_an_appeal_withdrawn_and_sent_again_is_a_new_one(client, make_user, user_token, db):
    h = user_token(make_user())
    first = client.post("/api/v1/appeals", json=_appeal_body(), headers=h).get_json()
    assert client.post(f"/api/v1/appeals/{first['id']}/withdraw", json={}, headers=h).status_code == 200
    again = client.post("/api/v1/appeals", json=_appeal_body(), headers=h)
    assert again.status_code == 201 and again.get_json()["id"] != first["id"]


def test_a_badly_written_date_is_named_once_not_twice(client, make_user, user_token):
    """“日期日期格式不对”: the word was added to a label that already ends with it (日期, 开始时间 ...)."""
    from wxapp_backend.errors import ValidationError
    from wxapp_backend.validation import Field, validate

    body = client.get("/api/v1/activities?date=2025-13-01", headers=user_token(make_user())).get_json()
    assert body["fields"]["date"] == "日期格式不对，请用 2025-01-31 这样的格式"
    for field, word in ((Field("starts_at", "datetime", "开始时间"), "开始时间格式不对"),
                        (Field("day", "date", "到场日期"), "到场日期格式不对"),
                        (Field("birthday", "date", "生日"), "生日日期格式不对"),
                        (Field("at", "datetime", "预约"), "预约时间格式不对")):
        try:
            validate({field.name: "不是日期"}, [field])
        except ValidationError as exc:
            assert exc.fields[field.name].startswith(word), exc.fields
        else:
            raise AssertionError("accepted")


def test_a_huge_page_number_is_out_of_range_not_not_a_number(client, make_user, user_token):
    """?page=99999999999999 is a whole number: “页码应为整数” sent the user looking for a typo."""
    h = user_token(make_user())
    for url in ("/api/v1/me/inbox", "/api/v1/appeals", "/api/v1/activities"):
        resp = client.get(url + "?page=99999999999999", headers=h)
        assert resp.status_code == 422
        assert resp.get_json()["fields"]["page"] == "页码不能大于 100000", resp.get_json()
        resp = client.get(url + "?per_page=-99999999999999999999", headers=h)
        assert resp.get_json()["fields"]["per_page"] == "每页条数不能小于 1", resp.get_json()
    resp = client.get("/api/v1/me/inbox?page=" + "9" * 5000, headers=h)
    assert resp.status_code == 422 and resp.get_json()["fields"]["page"] == "页码不能大于 100000"


def test_saving_the_same_activity_subscriptions_again_writes_no_audit_row(client, make_user, user_token, db):
    """Each PUT /me/subscriptions wrote an audit row, changed or not: the page saves on every visit."""
    h = user_token(make_user())
    for _ in range(3):
        resp = client.put("/api/v1/me/subscriptions", json={"categories": ["concert", "fitness"]}, headers=h)
        assert resp.status_code == 200 and resp.get_json()["categories"] == ["concert", "fitness"]
    assert client.put("/api/v1/me/subscriptions", json={"categories": ["fitness", "concert"]},
                      headers=h).status_code == 200
    assert db.query(AuditLog).filter_by(action="subscriptions.set").count() == 1
    assert client.put("/api/v1/me/subscriptions", json={"categories": []}, headers=h).status_code == 200
    assert db.query(AuditLog).filter_by(action="subscriptions.set").count() == 2


def test_subscription_saves_are_rate_limited_per_user(app, client, make_user, user_token, db, monkeypatch):
    """Switching between two sets of categories wrote an audit row a request, as fast as a script could send."""
    from wxapp_backend.activities.api import SUBSCRIPTIONS_LIMIT_PER_MIN

    h = user_token(make_user())
    sets = (["concert"], ["fitness"])
    codes = [client.put("/api/v1/me/subscriptions", json={"categories": sets[i % 2]}, headers=h).status_code
             for i in range(SUBSCRIPTIONS_LIMIT_PER_MIN + 1)]
    assert codes[:-1] == [200] * SUBSCRIPTIONS_LIMIT_PER_MIN and codes[-1] == 429
    assert db.query(AuditLog).filter_by(action="subscriptions.set").count() == SUBSCRIPTIONS_LIMIT_PER_MIN
    # Someone else is not affected; the knob moves the limit.
    assert client.put("/api/v1/me/subscriptions", json={"categories": ["concert"]},
                      headers=user_token(make_user())).status_code == 200
    monkeypatch.setitem(app.extensions["wxapp"].settings.extra, "subscriptions_limit", 1)
    other = user_token(make_user())
    assert client.put("/api/v1/me/subscriptions", json={"categories": []}, headers=other).status_code == 200
    late = client.put("/api/v1/me/subscriptions", json={"categories": []}, headers=other)
    assert late.status_code == 429 and "太频繁" in late.get_json()["message"]


def test_the_subscriptions_limit_is_set_from_the_environment(settings):
    from wxapp_backend.config import Settings

    base = {"APP_ENV": "testing", "INSTANCE_PATH": str(settings.instance_path), "SECRET_KEY": "x" * 24}
    assert Settings.from_env({**base, "SUBSCRIPTIONS_LIMIT": "5"}).extra["subscriptions_limit"] == 5


def test_a_supplement_sent_again_by_a_network_retry_is_answered_not_refused(app, client, make_user, user_token,
                                                                            make_staff, staff_headers, db):
    """The supplement went through but its answer was lost; the page sent it again and heard 409 “这条诉求目前不需要
    补充材料”, as if the material had never been wanted. The retry now answers with the appeal (200); its photos
    are not kept twice. Different words, after that, are still refused."""
    from wxapp_backend.appeals.models import AppealEvent

    h, sh = user_token(make_user()), staff_headers(make_staff(role="admin"))
    appeal = client.post("/api/v1/appeals", json=_appeal_body(), headers=h).get_json()
    for action, extra in (("accept", {}), ("request_info", {"note": "请拍一张路灯的照片"})):
        resp = client.post(f"/api/v1/staff/appeals/{appeal['id']}/actions", json={"action": action, **extra},
                           headers=sh)
        assert resp.status_code == 200, resp.get_json()
    body = {"content": "照片已拍好，是南门左手第二根路灯", "images": [PNG]}
    first = client.post(f"/api/v1/appeals/{appeal['id']}/supplement", json=body, headers=h)
    assert first.status_code == 200, first.get_json()
    kept = _uploads(app)
    again = client.post(f"/api/v1/appeals/{appeal['id']}/supplement", json=body, headers=h)
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["status"] == first.get_json()["status"]
    assert _uploads(app) == kept
    assert db.query(AppealEvent).filter_by(appeal_id=appeal["id"], action="supplemented").count() == 1
    other = client.post(f"/api/v1/appeals/{appeal['id']}/supplement", json={"content": "还有一件事想补充一下"},
                        headers=h)
    assert other.status_code == 409 and other.get_json()["error"] == "not_pending_enterprise"


def test_a_multiple_choice_answer_keeps_each_option_once(client, make_user, user_token, make_activity, db):
    """["瑜伽", "瑜伽"] was stored as given: the roster and its export read “瑜伽、瑜伽”."""
    from wxapp_backend.activities.models import Registration

    a = make_activity(questions=[{"key": "likes", "label": "感兴趣的项目", "type": "multi",
                                  "options": ["瑜伽", "跑步", "羽毛球"]}])
    resp = client.post(f"/api/v1/activities/{a.id}/registrations", json={"answers": {"likes": ["跑步", "瑜伽", "跑步"]}},
                       headers=user_token(make_user()))
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["answers"] == {"likes": ["跑步", "瑜伽"]}
    assert db.query(Registration).one().answers == {"likes": ["跑步", "瑜伽"]}


def test_no_checkin_code_is_issued_once_checkin_has_closed(client, make_user, user_token, make_activity, db):
    """我的报名 said can_show_code false after the activity (and its hour of grace) ended, but GET .../qr still
    issued a code, which the door then refused with “签到已关闭”."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities.models import Activity

    h = user_token(make_user())
    a = make_activity()
    reg = client.post(f"/api/v1/activities/{a.id}/registrations", json={}, headers=h).get_json()
    assert client.get(f"/api/v1/registrations/{reg['id']}/qr", headers=h).status_code == 200
    row = db.get(Activity, a.id)
    row.starts_at = datetime.now(UTC) - timedelta(hours=6)
    row.ends_at = datetime.now(UTC) - timedelta(hours=3)
    db.commit()
    mine = client.get("/api/v1/me/registrations", headers=h).get_json()["items"][0]
    assert mine["can_show_code"] is False
    resp = client.get(f"/api/v1/registrations/{reg['id']}/qr", headers=h)
    assert resp.status_code == 409, resp.get_json()
    assert resp.get_json()["error"] == "checkin_closed" and "签到已关闭" in resp.get_json()["message"]
