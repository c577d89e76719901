"""QA pass 9 on authorization: who may see and change what (users, department accounts, staff sessions)."""

from __future__ import annotations

import pytest


@pytest.fixture
def two_departments(client, make_user, make_staff, make_building, user_token, staff_headers):
    """Two enterprises' alike appeals in one building and category, each assigned to another department."""
    building = make_building(name="新华大厦")
    admin, tax, env = make_staff(role="admin"), make_staff(role="dept", department="税务所"), \
        make_staff(role="dept", department="城运中心")
    ah = staff_headers(admin)
    ids = []
    for name, text, dept in (("张三", "新华大厦电梯坏了三天了一直没人修", "税务所"),
                             ("李四", "新华大厦的电梯坏了好几天没人修理，二楼漏水", "城运中心")):
        uh = user_token(make_user(nickname=name))
        resp = client.post("/api/v1/appeals", headers=uh, json={
            "content": text, "contact_name": name, "contact_phone": "13800138000", "category": "楼宇物业",
            "building_id": building.id})
        assert resp.status_code == 201, resp.get_json()
        appeal_id = resp.get_json()["id"]
        for action in ({"action": "accept"}, {"action": "assign", "department": dept}):
            resp = client.post(f"/api/v1/staff/appeals/{appeal_id}/actions", headers=ah, json=action)
            assert resp.status_code == 200, resp.get_json()
        ids.append(appeal_id)
    return ids, admin, tax, env


def test_a_department_is_not_shown_another_departments_appeal_as_similar(client, two_departments, staff_headers,
                                                                          console_login):
    (own, other), admin, tax, _env = two_departments
    # The centre sees the look-alike (it may merge them) ...
    resp = client.get(f"/api/v1/staff/appeals/{own}", headers=staff_headers(admin))
    assert [s["id"] for s in resp.get_json()["similar"]] == [other]
    # ... a department account opening its own appeal does not read the other department's one.
    resp = client.get(f"/api/v1/staff/appeals/{own}", headers=staff_headers(tax))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["similar"] == []
    assert client.get(f"/api/v1/staff/appeals/{other}", headers=staff_headers(tax)).status_code == 404
    console_login(tax)
    page = client.get(f"/console/appeals/{own}").get_data(as_text=True)
    assert "二楼漏水" not in page


def test_a_refused_registration_action_does_not_send_the_browser_to_another_site(client, make_user, make_staff,
                                                                                 make_activity, user_token,
                                                                                 console_login):
    activity = make_activity(status="published")
    reg = client.post(f"/api/v1/activities/{activity.id}/registrations", headers=user_token(make_user()),
                      json={"answers": {}})
    assert reg.status_code == 201, reg.get_json()
    csrf = console_login(make_staff(role="staff"))
    # Confirmed already: approving it is refused, and the page goes back to where the staff member was ...
    resp = client.post(f"/console/registrations/{reg.get_json()['id']}/approve", data={"csrf_token": csrf},
                       headers={"Referer": "https://evil.example/console/phish"})
    assert resp.status_code == 302
    # ... which is a console page of this site, never the address another site put in the Referer.
    assert resp.headers["Location"].startswith("/console/"), resp.headers["Location"]
    back = "http://localhost/console/activities/1/registrations"
    resp = client.post(f"/console/registrations/{reg.get_json()['id']}/approve", data={"csrf_token": csrf},
                       headers={"Referer": back})
    assert resp.headers["Location"] == back


@pytest.mark.parametrize("target", ["/console/appeals\r\nSet-Cookie: x=1", "/console/\n//evil.example", "/console/\t"])
def test_a_login_next_with_control_characters_lands_on_the_dashboard(client, make_staff, target):
    import re

    staff = make_staff(role="staff")
    page = client.get("/console/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post("/console/login", data={"username": staff.username, "password": staff.plain_password,
                                                "csrf_token": csrf, "next": target})
    assert resp.status_code == 302, resp.status_code
    assert resp.headers["Location"] == "/console/"


def test_an_appeal_action_next_with_control_characters_goes_back_to_the_appeal(client, two_departments,
                                                                               console_login):
    (own, _other), admin, _tax, _env = two_departments
    csrf = console_login(admin)
    resp = client.post(f"/console/appeals/{own}/action", data={
        "csrf_token": csrf, "action": "note", "note": "已电话联系企业", "next": "/console/appeals\r\nX-Evil: 1"})
    assert resp.status_code == 302, resp.status_code
    assert resp.headers["Location"] == f"/console/appeals/{own}"
