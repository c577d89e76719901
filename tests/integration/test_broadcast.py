"""Notices: compose with WeChat's field limits, audience and reach estimate, test send, idempotent publish."""

from __future__ import annotations

import pytest

from wxapp_backend.db import session_scope
from wxapp_backend.notices import broadcast, credits
from wxapp_backend.notices.broadcast_models import Notice, OutboxRow
from wxapp_backend.notices.kinds import get_kind
from wxapp_backend.notices.models import InboxItem, SubscribeCredit

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


@pytest.fixture
def people(app_ctx, make_user, client, user_token):
    """Three users subscribed to 'fitness' (two with credit for the notice template), one who is not."""
    users = [make_user(nickname=f"u{i}") for i in range(4)]
    for u in users[:3]:
        client.put("/api/v1/me/subscriptions", json={"categories": ["fitness"]}, headers=user_token(u))
    template = get_kind("notice").template_id
    with session_scope() as s:
        for u in users[:2]:
            credits.add_credit(s, u.id, template)
    return users


@pytest.fixture
def staff_h(make_staff, staff_headers):
    return staff_headers(make_staff(role="staff"))


def _create(client, headers, **kw):
    body = {"title": "健身季活动报名开启", "summary": "本周五午间开放报名", "page": "pages/activity/list",
            "audience": {"categories": ["fitness"]}}
    body.update(kw)
    return client.post("/api/v1/staff/notices", json=body, headers=headers)


def test_reach_estimate_and_full_publish(client, people, staff_h, run_jobs, standin, db, user_token):
    resp = _create(client, staff_h)
    assert resp.status_code == 201, resp.get_json()
    n = resp.get_json()
    assert n["reach"] == {"recipients": 3, "subscribe": 2, "inbox_only": 1}
    first = client.post(f"/api/v1/staff/notices/{n['id']}/publish", json={}, headers=staff_h)
    assert first.status_code == 200 and first.get_json()["status"] == "expanding"
    again = client.post(f"/api/v1/staff/notices/{n['id']}/publish", json={}, headers=staff_h)
    assert again.status_code == 200
    run_jobs()
    prog = client.get(f"/api/v1/staff/notices/{n['id']}/progress", headers=staff_h).get_json()
    assert prog["finished"] and prog["subscribe"]["sent"] == 2 and prog["inbox"] == 3
    assert standin.count(SUBSCRIBE) == 2
    assert db.query(InboxItem).filter_by(ref=f"notice:{n['id']}").count() == 3
    inbox = client.get("/api/v1/me/inbox", headers=user_token(people[2])).get_json()
    assert inbox["items"][0]["title"] == "健身季活动报名开启"
    assert client.get("/api/v1/me/inbox", headers=user_token(people[3])).get_json()["total"] == 0
    # credits were spent: one send per acceptance
    assert {c.credits for c in db.query(SubscribeCredit).all()} == {0}
    # publishing (or expanding) once more sends nothing and adds nothing
    client.post(f"/api/v1/staff/notices/{n['id']}/publish", json={}, headers=staff_h)
    broadcast.expand_notice(n["id"])
    run_jobs()
    assert standin.count(SUBSCRIBE) == 2 and db.query(OutboxRow).count() == 5


def test_template_values_over_the_limit_are_refused(client, people, staff_h):
    resp = _create(client, staff_h, template_fields={"thing1": "这是一个明显超过二十个字的订阅消息标题内容啊啊啊", "time2": "2025-03-01 09:00"})
    assert resp.status_code == 422
    assert "template_fields.thing1" in resp.get_json()["fields"] and "20" in resp.get_json()["message"]
    resp = _create(client, staff_h, template_fields={"phrase3": "已经开始报名"})
    assert resp.status_code == 422 and "template_fields.phrase3" in resp.get_json()["fields"]
    resp = _create(client, staff_h, template_fields={"time2": "3pm tomorrow"})
    assert resp.status_code == 422
    resp = _create(client, staff_h, page="https://evil.example/")
    assert resp.status_code == 422 and "page" in resp.get_json()["fields"]
    ok = _create(client, staff_h, template_fields={"thing1": "稳岗补贴开始申报", "time2": "2025-03-01 09:00"})
    assert ok.status_code == 201 and ok.get_json()["template_fields"]["thing1"] == "稳岗补贴开始申报"


def test_long_title_is_fitted_when_no_values_are_given(client, people, staff_h):
    resp = _create(client, staff_h, title="关于开展二〇二五年度稳岗补贴和一次性扩岗补助申报工作的通知")
    assert resp.status_code == 201
    assert len(resp.get_json()["template_fields"]["thing1"]) <= 20


def test_empty_audience(client, people, staff_h, make_building):
    none = _create(client, staff_h, audience={})
    assert none.status_code == 422 and "audience" in none.get_json()["fields"]
    nobody = _create(client, staff_h, audience={"building_ids": [make_building().id]})
    assert nobody.status_code == 201 and nobody.get_json()["reach"]["recipients"] == 0
    resp = client.post(f"/api/v1/staff/notices/{nobody.get_json()['id']}/publish", json={}, headers=staff_h)
    assert resp.status_code == 422 and resp.get_json()["error"] == "empty_audience"


def test_audience_rules(app_ctx, client, staff_h, make_user, make_building, make_enterprise, db):
    b = make_building()
    fin = make_enterprise(industry="金融", tags=["重点企业"], building_id=b.id)
    in_building = make_user(building_id=b.id)
    contact = make_user(enterprise_id=fin.id, binding_state="verified")
    unverified = make_user(enterprise_id=fin.id, binding_state="pending")
    make_user()

    def count(audience):
        resp = _create(client, staff_h, audience=audience)
        assert resp.status_code == 201, resp.get_json()
        return resp.get_json()["reach"]["recipients"]

    assert count({"all": True}) == 4
    assert count({"building_ids": [b.id]}) == 2  # the user in the building and the verified contact
    assert count({"industries": ["金融"]}) == 1
    assert count({"tags": ["重点企业"]}) == 1 and count({"tags": ["别的"]}) == 0
    assert count({"industries": ["金融"], "building_ids": [b.id]}) == 1
    _ = (in_building, contact, unverified)


def test_registrants_of_an_activity(app_ctx, client, staff_h, make_user):
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities import services
    from wxapp_backend.activities.models import Activity

    users = [make_user() for _ in range(3)]
    start = datetime.now(UTC) + timedelta(days=1)
    with session_scope() as s:
        a = Activity(category="company_visit", title="企业参访", address="x", starts_at=start,
                     ends_at=start + timedelta(hours=1), capacity=1)
        s.add(a)
        s.flush()
        aid = a.id
    with session_scope() as s:
        for u in users[:2]:
            services.register(s, activity_id=aid, user_id=u.id)  # one confirmed, one waitlisted
    resp = _create(client, staff_h, kind="activity", activity_id=aid, audience={"registrants_of": aid})
    assert resp.get_json()["reach"]["recipients"] == 2


def test_send_test_to_self(client, people, make_staff, staff_headers, run_jobs, user_token):
    staff = make_staff(role="staff")
    h = staff_headers(staff)
    nid = _create(client, h).get_json()["id"]
    skipped = client.post(f"/api/v1/staff/notices/{nid}/test", json={}, headers=h).get_json()
    assert skipped["sent"] is False and "测试接收人" in skipped["reason"]
    assert client.put("/api/v1/staff/me/test-recipient", json={"user_id": people[3].id}, headers=h).status_code == 200
    assert client.post(f"/api/v1/staff/notices/{nid}/test", json={}, headers=h).get_json()["sent"] is True
    items = client.get("/api/v1/me/inbox", headers=user_token(people[3])).get_json()["items"]
    assert items[0]["title"].startswith("【测试】")
    # the test did not publish anything
    assert client.get(f"/api/v1/staff/notices/{nid}", headers=h).get_json()["status"] == "draft"


def test_published_notice_cannot_be_edited(client, people, staff_h):
    nid = _create(client, staff_h).get_json()["id"]
    client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=staff_h)
    resp = client.patch(f"/api/v1/staff/notices/{nid}", json={"title": "改"}, headers=staff_h)
    assert resp.status_code == 409


def test_console_composer_and_progress(client, people, make_staff, console_login, run_jobs, db):
    csrf = console_login(make_staff(role="staff"))
    assert "通知推送" in client.get("/console/notices").get_data(as_text=True)
    bad = client.post("/console/notices/new", data={"csrf_token": csrf, "title": "x",
                                                    "template_fields": "thing1=" + "长" * 21})
    assert bad.status_code == 422 and "20" in bad.get_data(as_text=True)
    ok = client.post("/console/notices/new", data={"csrf_token": csrf, "title": "午间一小时开课",
                                                   "categories": ["fitness"], "kind": "activity"})
    assert ok.status_code == 302
    nid = db.query(Notice).one().id
    page = client.get(f"/console/notices/{nid}").get_data(as_text=True)
    assert "送达预估" in page and "可收到订阅消息" in page
    client.post(f"/console/notices/{nid}/publish", data={"csrf_token": csrf})
    run_jobs()
    page = client.get(f"/console/notices/{nid}")
    assert "发送进度" in page.get_data(as_text=True) and "activities.js" in page.get_data(as_text=True)
    assert "<script>" not in page.get_data(as_text=True)
    prog = client.get(f"/console/notices/{nid}/progress.json").get_json()
    assert prog["finished"] is True and prog["subscribe"]["sent"] == 2
