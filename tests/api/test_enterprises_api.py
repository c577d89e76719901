"""Buildings and enterprises JSON API: the public building picker and the staff endpoints with their 4xx."""

from __future__ import annotations

from wxapp_backend.demo import demo_credit_code


def code(n: int) -> str:
    return demo_credit_code("91310105", n)


def test_public_buildings_list_needs_no_login(client, make_building, make_grid):
    g = make_grid()
    make_building(name="乙楼", grid_id=g.id)
    make_building(name="甲楼", address="新华路 2 号")
    resp = client.get("/api/v1/buildings")
    assert resp.status_code == 200
    items = resp.get_json()["items"]
    assert {i["name"] for i in items} == {"甲楼", "乙楼"}
    assert set(items[0]) == {"id", "name", "address"}  # nothing internal for the public picker
    assert [i["name"] for i in client.get("/api/v1/buildings?q=甲").get_json()["items"]] == ["甲楼"]


def test_staff_endpoints_need_a_staff_token(client, make_user, user_token):
    assert client.get("/api/v1/staff/enterprises").status_code == 401
    user = make_user()
    assert client.get("/api/v1/staff/enterprises", headers=user_token(user)).status_code == 401


def test_create_get_patch_enterprise(client, make_staff, staff_headers, make_building):
    h = staff_headers(make_staff(role="staff"))
    b = make_building(name="新华大厦")
    resp = client.post("/api/v1/staff/enterprises", headers=h, json={
        "name": "上海甲有限公司", "credit_code": code(1), "building_id": b.id, "tags": ["高新技术"],
        "contact_phone": "13800000000"})
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["building"]["name"] == "新华大厦" and body["tags"] == ["高新技术"]
    eid = body["id"]
    got = client.get(f"/api/v1/staff/enterprises/{eid}", headers=h).get_json()
    assert got["credit_code"] == code(1) and got["users"] == []
    resp = client.patch(f"/api/v1/staff/enterprises/{eid}", headers=h, json={"industry": "软件", "building_id": None})
    assert resp.status_code == 200
    assert resp.get_json()["industry"] == "软件" and resp.get_json()["building"] is None  # null clears
    resp = client.patch(f"/api/v1/staff/enterprises/{eid}", headers=h, json={"name": None, "tax_bracket": "小微"})
    assert resp.get_json()["name"] == "上海甲有限公司"  # a required field is never cleared
    listing = client.get("/api/v1/staff/enterprises?q=甲&per_page=5", headers=h).get_json()
    assert listing["total"] == 1 and listing["per_page"] == 5 and listing["items"][0]["id"] == eid


def test_enterprise_errors(client, make_staff, staff_headers, make_enterprise):
    h = staff_headers(make_staff(role="staff"))
    make_enterprise(name="已有公司", credit_code=code(2))
    resp = client.post("/api/v1/staff/enterprises", headers=h, json={"name": "新公司", "credit_code": code(2)})
    assert resp.status_code == 409 and "已有公司" in resp.get_json()["message"]
    bad = code(3)[:-1] + ("0" if code(3)[-1] != "0" else "1")
    resp = client.post("/api/v1/staff/enterprises", headers=h, json={"name": "新公司", "credit_code": bad})
    assert resp.status_code == 422 and "校验位" in resp.get_json()["fields"]["credit_code"]
    resp = client.post("/api/v1/staff/enterprises", headers=h, json={"credit_code": code(4),
                                                                      "contact_phone": "12"})
    assert resp.status_code == 422 and set(resp.get_json()["fields"]) == {"name", "contact_phone"}
    assert client.get("/api/v1/staff/enterprises/99999", headers=h).status_code == 404
    assert client.patch("/api/v1/staff/enterprises/99999", headers=h, json={"name": "某某"}).status_code == 404
    assert client.get("/api/v1/staff/enterprises?page=0", headers=h).status_code == 422
    assert client.post("/api/v1/staff/enterprises", headers=h, data="x",
                       content_type="text/plain").status_code == 400


def test_dept_can_read_but_not_write(client, make_staff, staff_headers, make_enterprise, make_user):
    h = staff_headers(make_staff(role="dept"))
    e = make_enterprise()
    u = make_user(enterprise_id=e.id, binding_state="pending")
    assert client.get("/api/v1/staff/enterprises", headers=h).status_code == 200
    assert client.get("/api/v1/staff/grids", headers=h).status_code == 200
    assert client.post("/api/v1/staff/enterprises", headers=h,
                       json={"name": "新公司", "credit_code": code(5)}).status_code == 403
    assert client.patch(f"/api/v1/staff/enterprises/{e.id}", headers=h, json={"name": "改名"}).status_code == 403
    assert client.post("/api/v1/staff/buildings", headers=h, json={"name": "楼"}).status_code == 403
    assert client.post(f"/api/v1/staff/users/{u.id}/binding", headers=h, json={"approve": True}).status_code == 403


def test_buildings_and_grids(client, make_staff, staff_headers, make_grid, make_enterprise):
    h = staff_headers(make_staff(role="staff"))
    g = make_grid(name="一网格", specialist_name="王专员")
    resp = client.post("/api/v1/staff/buildings", headers=h, json={"name": "新华大厦", "grid_id": g.id})
    assert resp.status_code == 201 and resp.get_json()["grid"]["name"] == "一网格"
    bid = resp.get_json()["id"]
    make_enterprise(building_id=bid)
    resp = client.post("/api/v1/staff/buildings", headers=h, json={"name": "新华大厦"})
    assert resp.status_code == 409 and "新华大厦" in resp.get_json()["message"]
    assert client.post("/api/v1/staff/buildings", headers=h, json={"name": "楼", "grid_id": 999}).status_code == 422
    [b] = client.get("/api/v1/staff/buildings", headers=h).get_json()["items"]
    assert b["enterprise_count"] == 1
    [grid] = client.get("/api/v1/staff/grids", headers=h).get_json()["items"]
    assert grid["building_count"] == 1 and grid["specialist_name"] == "王专员"


def test_binding_decision(client, make_staff, staff_headers, make_enterprise, make_user):
    h = staff_headers(make_staff(role="staff"))
    e = make_enterprise()
    u = make_user(enterprise_id=e.id, binding_state="pending", role="enterprise_contact")
    resp = client.post(f"/api/v1/staff/users/{u.id}/binding", headers=h, json={"approve": False})
    assert resp.status_code == 200 and resp.get_json()["binding_state"] == "rejected"
    assert client.post(f"/api/v1/staff/users/{u.id}/binding", headers=h, json={"approve": True}).status_code == 409
    assert client.post("/api/v1/staff/users/999/binding", headers=h, json={"approve": True}).status_code == 404
    assert client.post(f"/api/v1/staff/users/{u.id}/binding", headers=h, json={}).status_code == 422


def test_openapi_documents_these_routes(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert "requestBody" in paths["/api/v1/staff/enterprises/{enterprise_id}"]["patch"]
    assert "requestBody" in paths["/api/v1/staff/users/{user_id}/binding"]["post"]
    assert "get" in paths["/api/v1/buildings"]
