"""Abuse resistance: per-user caps and rate limits on the mini-program API, and nothing left behind by refusals."""

from __future__ import annotations

import base64
from pathlib import Path

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

