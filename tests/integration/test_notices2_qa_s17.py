"""Notices QA (session 17): 发给自己测试 sends what subscribers will get (the notice's own page, or none, not the
notice kind's default page), a double click sends one test (one credit), and the staff member's own WeChat
binding (“绑定 <code>”) used for the tests."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.integration.test_staff_wechat_link import _linked, _say
from wxapp_backend.audit import AuditLog
from wxapp_backend.db import session_scope
from wxapp_backend.notices import broadcast, credits
from wxapp_backend.notices.kinds import get_kind
from wxapp_backend.notices.models import SubscribeCredit

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


def _create(client, headers, **kw):
    body = {"title": "稳岗补贴开始申报", "summary": "本周五前提交材料", "audience": {"all": True}}
    body.update(kw)
    resp = client.post("/api/v1/staff/notices", json=body, headers=headers)
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


def _with_credit(make_user, n: int = 1, credit: int = 1):
    template = get_kind("notice").template_id
    users = [make_user() for _ in range(n)]
    with session_scope() as s:
        for u in users:
            for _ in range(credit):
                credits.add_credit(s, u.id, template)
    return users


def _credits(db, user) -> int:
    db.expire_all()
    return db.scalar(select(SubscribeCredit.credits).where(SubscribeCredit.user_id == user.id))


@pytest.fixture
def tester(make_staff, staff_headers, make_user, client):
    """A staff member whose test recipient holds 3 credits for the notice template: (staff, headers, that user)."""
    staff = make_staff(role="staff")
    h = staff_headers(staff)
    me = _with_credit(make_user, credit=3)[0]
    assert client.put("/api/v1/staff/me/test-recipient", json={"user_id": me.id}, headers=h).status_code == 200
    return staff, h, me


def _test(client, h, nid, **headers):
    return client.post(f"/api/v1/staff/notices/{nid}/test", json={}, headers={**h, **headers})


# --- 1. the test opens what subscribers will open -----------------------------------------------------------------

@pytest.mark.parametrize("page", ["", "pages/policy/detail?id=7"])
def test_the_test_send_opens_the_page_the_real_send_opens(app_ctx, client, tester, make_user, run_jobs, standin,
                                                          page):
    """A notice with no page went to subscribers with no page (the mini-program's home), while its test opened the
    notice kind's default pages/notice/detail with no id (“没有找到这条通知” on the staff member's phone)."""
    _, h, me = tester
    nid = _create(client, h, page=page)
    assert _test(client, h, nid).get_json()["sent"] is True
    run_jobs()
    (test_call,) = standin.calls_to(SUBSCRIBE)
    _with_credit(make_user)  # one subscriber besides the staff member's own user
    assert client.post(f"/api/v1/staff/notices/{nid}/publish", json={}, headers=h).status_code == 200
    run_jobs()
    real = standin.calls_to(SUBSCRIBE)[1:]
    assert len(real) == 2
    for call in real:
        assert call.body.get("page") == test_call.body.get("page") == (page or None)
        assert call.body["data"].keys() == test_call.body["data"].keys()
        assert call.body["data"]["thing1"] == test_call.body["data"]["thing1"]
        assert call.body["data"]["thing3"] == test_call.body["data"]["thing3"]


# --- 2. a double click sends one test -------------------------------------------------------------------------------

def test_a_double_click_on_the_test_via_the_api_sends_once_and_spends_one_credit(app_ctx, client, tester, run_jobs,
                                                                               standin, db, redis_client):
    staff, h, me = tester
    nid = _create(client, h)
    assert _test(client, h, nid).get_json()["sent"] is True
    again = _test(client, h, nid)
    assert again.status_code == 409
    body = again.get_json()
    assert body["error"] == "test_just_sent" and "刚" in body["message"] and "测试" in body["message"]
    run_jobs()
    assert standin.count(SUBSCRIBE) == 1 and _credits(db, me) == 2
    assert len(db.scalars(select(AuditLog).where(AuditLog.action == "notice.test_sent")).all()) == 1
    # Negative controls: another notice is tested at once; after the window the same notice is tested again.
    other = _create(client, h, title="创业贷款贴息申报")
    assert _test(client, h, other).get_json()["sent"] is True
    key = broadcast.recent_test_key(staff.id, nid)
    assert 0 < redis_client.ttl(key) <= broadcast.TEST_SEND_WINDOW
    redis_client.delete(key)  # the window has passed
    assert _test(client, h, nid).get_json()["sent"] is True
    run_jobs()
    assert standin.count(SUBSCRIBE) == 3 and _credits(db, me) == 0


def test_the_same_idempotency_key_answers_the_first_test_without_sending_again(app_ctx, client, tester, run_jobs,
                                                                              standin, db, redis_client):
    staff, h, me = tester
    nid = _create(client, h)
    first = _test(client, h, nid, **{"Idempotency-Key": "t-1"})
    redis_client.delete(broadcast.recent_test_key(staff.id, nid))  # even after the window: the same key is a retry
    second = _test(client, h, nid, **{"Idempotency-Key": "t-1"})
    assert first.status_code == second.status_code == 200
    assert first.get_json() == second.get_json() and first.get_json()["sent"] is True
    run_jobs()
    assert standin.count(SUBSCRIBE) == 1 and _credits(db, me) == 2
    # The key names that test: used for another notice it is refused, as POST /staff/notices refuses it.
    other = _create(client, h, title="创业贷款贴息申报")
    reused = _test(client, h, other, **{"Idempotency-Key": "t-1"})
    assert reused.status_code == 409 and reused.get_json()["error"] == "idempotency_key_reused"
    # A new key after the window sends (negative control).
    assert _test(client, h, nid, **{"Idempotency-Key": "t-2"}).get_json()["sent"] is True
    run_jobs()
    assert standin.count(SUBSCRIBE) == 2


def test_a_double_click_on_the_console_button_sends_once(app_ctx, client, make_staff, make_user, console_login,
                                                         staff_headers, run_jobs, standin, db):
    staff = make_staff(role="staff")
    me = _with_credit(make_user, credit=3)[0]
    csrf = console_login(staff)
    nid = _create(client, staff_headers(staff))
    client.post("/console/notices/test-recipient", data={"csrf_token": csrf, "user_id": str(me.id)})
    first = client.post(f"/console/notices/{nid}/test", data={"csrf_token": csrf}, follow_redirects=True)
    assert "测试消息已发给您的测试接收人" in first.get_data(as_text=True)
    second = client.post(f"/console/notices/{nid}/test", data={"csrf_token": csrf}, follow_redirects=True)
    assert second.status_code == 200
    assert "刚" in second.get_data(as_text=True) and "测试消息已发给您的测试接收人" not in second.get_data(as_text=True)
    run_jobs()
    assert standin.count(SUBSCRIBE) == 1 and _credits(db, me) == 2


def test_a_test_that_sent_nothing_does_not_hold_the_window(app_ctx, client, make_staff, staff_headers, make_user):
    """With no test recipient nothing is sent: setting one and pressing again must send, not say “刚发过”."""
    staff = make_staff(role="staff")
    h = staff_headers(staff)
    nid = _create(client, h)
    skipped = _test(client, h, nid).get_json()
    assert skipped["sent"] is False
    me = _with_credit(make_user)[0]
    assert client.put("/api/v1/staff/me/test-recipient", json={"user_id": me.id}, headers=h).status_code == 200
    assert _test(client, h, nid).get_json()["sent"] is True


# --- 3. the staff member's own WeChat binding used for tests ------------------------------------------------------

def _audits(db, action: str) -> list[AuditLog]:
    db.expire_all()
    return list(db.scalars(select(AuditLog).where(AuditLog.action == action)).all())


def test_binding_codes_expired_used_twice_another_staffs_and_typed_in_full_width(app, standin, db, make_staff,
                                                                                redis_client):
    a, b = make_staff(role="staff"), make_staff(role="staff")
    expired = broadcast.issue_link_code(redis_client, a.id)
    redis_client.delete(f"staff-link:code:{expired}")  # ten minutes have passed
    reply = _say(app, standin, "o-a-phone", f"绑定 {expired}")
    assert "绑定码不对或已过期" in reply and "重新生成" in reply
    assert _linked(db, a) is None and not _audits(db, "notice.test_recipient_set")
    # A code typed with a Chinese keyboard's full-width digits is the same code.
    code = broadcast.issue_link_code(redis_client, a.id)
    wide = code.translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    assert "绑定成功" in _say(app, standin, "o-a-phone", f"绑定 {wide}")
    a_phone = _linked(db, a)
    assert a_phone is not None
    # Used twice: the second time links nobody, from the same phone or another one.
    assert "不对或已过期" in _say(app, standin, "o-someone-else", f"绑定 {code}")
    assert _linked(db, a) == a_phone and len(_audits(db, "notice.test_recipient_set")) == 1
    # Another staff member's code links that staff member (named in the reply), not the one who owns the phone.
    other = broadcast.issue_link_code(redis_client, b.id)
    reply = _say(app, standin, "o-a-phone", f"绑定 {other}")
    assert "绑定成功" in reply and b.username in reply
    assert _linked(db, b) == a_phone and _linked(db, a) == a_phone
    rows = _audits(db, "notice.test_recipient_set")
    assert sorted(r.actor_id for r in rows) == sorted([str(a.id), str(b.id)])


def test_unbinding_and_a_test_with_no_binding(app_ctx, client, make_staff, make_user, console_login, staff_headers,
                                              standin, db, run_jobs):
    staff = make_staff(role="staff")
    csrf = console_login(staff)
    h = staff_headers(staff)
    me = _with_credit(make_user)[0]
    client.post("/console/notices/test-recipient", data={"csrf_token": csrf, "user_id": str(me.id)})
    assert _linked(db, staff) == me.id
    page = client.post("/console/notices/test-recipient", data={"csrf_token": csrf, "user_id": ""},
                       follow_redirects=True).get_data(as_text=True)
    assert "已清除测试接收人" in page and _linked(db, staff) is None
    (cleared,) = _audits(db, "notice.test_recipient_cleared")
    assert cleared.actor_id == str(staff.id) and cleared.data["previous"] == me.id
    nid = _create(client, h)
    skipped = _test(client, h, nid)
    assert skipped.status_code == 200 and skipped.get_json()["sent"] is False
    assert "用我的微信绑定" in skipped.get_json()["reason"]
    page = client.post(f"/console/notices/{nid}/test", data={"csrf_token": csrf},
                       follow_redirects=True).get_data(as_text=True)
    assert "用我的微信绑定" in page
    run_jobs()
    assert standin.count(SUBSCRIBE) == 0 and not _audits(db, "notice.test_sent")
