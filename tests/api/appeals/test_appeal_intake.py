"""Intake: POST /api/v1/appeals, idempotency, photos, validation, routing and the catalogue."""

from __future__ import annotations

import base64
import re

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
WEBP = b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 64


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_submit_returns_number_status_and_due(world):
    body = world.submit()
    assert re.fullmatch(r"SQ\d{8}-\d{4}", body["number"])
    assert body["status"] == "submitted" and body["due_at"] and body["id"]
    assert body["category"] == "税务"
    second = world.submit(content="另一台税控盘也坏了，增值税发票还是开不出来")  # the same words again: a retry
    assert int(second["number"][-4:]) == int(body["number"][-4:]) + 1


def test_routing_by_rules_grid_and_enterprise(world):
    body = world.submit()
    d = world.detail(body["id"])
    assert d["department"] == "税务所"
    assert d["enterprise_id"] == world.enterprise.id and d["building_id"] == world.building.id
    assert d["grid_id"] == world.grid.id and d["specialist_staff_id"] == world.specialist.id
    assert d["needs_triage"] is False and d["confidence"] >= 0.5


def test_low_confidence_goes_to_triage(world):
    body = world.submit(content="你好，有件事情想找人聊一聊，麻烦联系我")
    d = world.detail(body["id"])
    assert d["needs_triage"] is True and d["category_id"] is None


def test_triage_queue_and_set_category(client, world):
    body = world.submit(content="你好，有件事情想找人聊一聊，麻烦联系我")
    q = client.get("/api/v1/staff/appeals?triage=true", headers=world.ah).get_json()
    assert [a["id"] for a in q["items"]] == [body["id"]]
    d = world.act(body["id"], "set_category", category="楼宇物业")
    assert d["needs_triage"] is False and d["department"] == "楼宇服务站"


def test_user_chosen_category_and_unknown_category(client, world):
    body = world.submit(category="交通停车", content="园区门口的车位总被外来车辆占用")
    assert body["category"] == "交通停车"
    resp = client.post("/api/v1/appeals", json={"content": "随便说点什么内容", "contact_name": "张三",
                                                "contact_phone": "13800138000", "category": "不存在的类别"},
                       headers=world.uh)
    assert resp.status_code == 422 and "category" in resp.get_json()["fields"]


def test_missing_oversized_and_bad_phone(client, world):
    resp = client.post("/api/v1/appeals", json={}, headers=world.uh)
    assert resp.status_code == 422
    assert set(resp.get_json()["fields"]) >= {"content", "contact_name", "contact_phone"}
    resp = client.post("/api/v1/appeals", json={"content": "长" * 2001, "contact_name": "张三",
                                                "contact_phone": "13800138000"}, headers=world.uh)
    assert resp.status_code == 422 and "content" in resp.get_json()["fields"]
    resp = client.post("/api/v1/appeals", json={"content": "电梯坏了三天了", "contact_name": "张三",
                                                "contact_phone": "12345"}, headers=world.uh)
    assert resp.status_code == 422 and "contact_phone" in resp.get_json()["fields"]


def test_requires_login(client):
    assert client.post("/api/v1/appeals", json={}).status_code == 401


def test_idempotency_key_returns_same_appeal(client, world):
    h = {**world.uh, "Idempotency-Key": "abc-123"}
    first = world.submit(headers=h)
    again = world.submit(headers=h, expect=200)
    assert again["id"] == first["id"] and again["number"] == first["number"]
    other = world.submit(headers={**world.oh, "Idempotency-Key": "abc-123"}, content="楼下油烟很大，影响办公")
    assert other["id"] != first["id"]
    listed = client.get("/api/v1/appeals", headers=world.uh).get_json()
    assert listed["total"] == 1


def test_images_sniffed_and_stored(client, world, app):
    body = world.submit(images=[b64(PNG), "data:image/jpeg;base64," + b64(JPEG), b64(WEBP)])
    assert len(body["images"]) == 3
    assert [n.rsplit(".", 1)[1] for n in body["images"]] == ["png", "jpg", "webp"]
    name = body["images"][0]
    resp = client.get(f"/api/v1/appeals/{body['id']}/images/{name}", headers=world.uh)
    assert resp.status_code == 200 and resp.data == PNG and resp.mimetype == "image/png"
    assert client.get(f"/api/v1/appeals/{body['id']}/images/{name}", headers=world.oh).status_code == 404
    assert client.get(f"/api/v1/appeals/{body['id']}/images/..%2Fx.png", headers=world.uh).status_code == 404


def test_image_wrong_type_too_large_too_many(client, world):
    base = {"content": "电梯坏了三天了没人修", "contact_name": "张三", "contact_phone": "13800138000"}
    gif = b64(b"GIF89a" + b"\x00" * 30)
    resp = client.post("/api/v1/appeals", json={**base, "images": [b64(PNG), gif]}, headers=world.uh)
    assert resp.status_code == 422 and "第 2 张" in resp.get_json()["fields"]["images"]
    # a PDF declared as a PNG data URL is still refused: the bytes decide
    pdf = "data:image/png;base64," + b64(b"%PDF-1.4 fake")
    assert client.post("/api/v1/appeals", json={**base, "images": [pdf]}, headers=world.uh).status_code == 422
    big = b64(PNG + b"\x00" * (2 * 1024 * 1024))
    resp = client.post("/api/v1/appeals", json={**base, "images": [big]}, headers=world.uh)
    assert resp.status_code in (413, 422) and resp.get_json()["error"] in ("payload_too_large", "validation_error")
    ten = [b64(PNG + bytes([i])) for i in range(10)]  # ten different ones (a repeat is not counted, left10 s16)
    resp = client.post("/api/v1/appeals", json={**base, "images": ten}, headers=world.uh)
    assert resp.status_code == 422
    assert client.post("/api/v1/appeals", json={**base, "images": ["%%%not-base64"]},
                       headers=world.uh).status_code == 422
    assert client.get("/api/v1/appeals", headers=world.uh).get_json()["total"] == 0


def test_required_fields_of_the_category(client, world):
    body = {"content": "物业空调坏了", "contact_name": "李四", "contact_phone": "13800138001",
            "category": "楼宇物业"}
    resp = client.post("/api/v1/appeals", json=body, headers=world.oh)  # no building known for this user
    assert resp.status_code == 422 and "building_id" in resp.get_json()["fields"]
    ok = client.post("/api/v1/appeals", json={**body, "building_id": world.other_building.id}, headers=world.oh)
    assert ok.status_code == 201


def test_unknown_enterprise_and_building(client, world):
    base = {"content": "电梯坏了三天了没人修", "contact_name": "张三", "contact_phone": "13800138000"}
    assert client.post("/api/v1/appeals", json={**base, "enterprise_id": 99999}, headers=world.uh).status_code == 422
    assert client.post("/api/v1/appeals", json={**base, "building_id": 99999}, headers=world.uh).status_code == 422


def test_catalogue_is_public(client, world):
    items = client.get("/api/v1/appeal-categories").get_json()["items"]
    names = {c["name"] for c in items}
    assert {"工商登记", "税务", "人才/落户", "社保/用工", "融资", "政策兑现", "楼宇物业", "市容环境", "交通停车",
            "知识产权", "其他"} <= names
    assert all(c["department"] and c["promised_days"] for c in items)


def test_intake_asks_for_the_appeal_templates_credit(world):
    from wxapp_backend.notices.kinds import get_kind

    body = world.submit()
    hint = body["subscribe"]
    assert hint["kinds"] == ["appeal_accepted", "appeal_needs_info", "appeal_resolved"]
    expected = []
    for kind in hint["kinds"]:
        tid = get_kind(kind).template_id
        if tid not in expected:
            expected.append(tid)
    assert hint["template_ids"] == expected[:3] and hint["template_ids"]
