"""Fixtures for the appeal API tests: a building in a grid, an enterprise, a user, staff and helpers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.fixture
def world(client, make_user, make_staff, make_building, make_grid, make_enterprise, user_token, staff_headers):
    admin = make_staff(role="admin")
    specialist = make_staff(role="staff")
    grid = make_grid(name="新华一网格", specialist_name="王专员", specialist_staff_id=specialist.id)
    building = make_building(name="新华大厦", grid_id=grid.id)
    other_building = make_building(name="幸福大楼")
    enterprise = make_enterprise(name="上海测试科技有限公司", building_id=building.id)
    user = make_user(nickname="张三", enterprise_id=enterprise.id, binding_state="verified", building_id=building.id)
    other = make_user(nickname="李四")
    tax_dept = make_staff(role="dept", department="税务所")
    env_dept = make_staff(role="dept", department="城运中心")
    ns = SimpleNamespace(admin=admin, specialist=specialist, grid=grid, building=building,
                         other_building=other_building, enterprise=enterprise, user=user, other=other,
                         tax_dept=tax_dept, env_dept=env_dept, uh=user_token(user), oh=user_token(other),
                         ah=staff_headers(admin), sh=staff_headers(specialist), th=staff_headers(tax_dept),
                         eh=staff_headers(env_dept))

    return api_helpers(client, ns)


def api_helpers(client, ns: SimpleNamespace) -> SimpleNamespace:
    """The appeal API as the tests call it, on `ns`'s people (uh: the user's headers, ah: the admin's):
    submit, act, detail (staff), mine and user_post (the enterprise user); each asserts the expected status."""

    def submit(headers=None, expect=201, **kw):
        body = {"content": "我们公司的增值税发票开不出来，税控盘坏了，请帮忙", "contact_name": "张三",
                "contact_phone": "13800138000"}
        body.update(kw)
        resp = client.post("/api/v1/appeals", json=body, headers=headers or ns.uh)
        assert resp.status_code == expect, resp.get_json()
        return resp.get_json()

    def act(appeal_id, action, headers=None, expect=200, **kw):
        resp = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", json={"action": action, **kw},
                           headers=headers or ns.ah)
        assert resp.status_code == expect, resp.get_json()
        return resp.get_json()

    def detail(appeal_id, headers=None):
        resp = client.get(f"/api/v1/staff/appeals/{appeal_id}", headers=headers or ns.ah)
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()

    def mine(appeal_id, headers=None):
        resp = client.get(f"/api/v1/appeals/{appeal_id}", headers=headers or ns.uh)
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()

    def user_post(appeal_id, what, headers=None, expect=200, **kw):
        resp = client.post(f"/api/v1/appeals/{appeal_id}/{what}", json=kw, headers=headers or ns.uh)
        assert resp.status_code == expect, resp.get_json()
        return resp.get_json()

    ns.submit, ns.act, ns.detail, ns.mine, ns.user_post = submit, act, detail, mine, user_post
    return ns
