"""notify() and the in-app inbox: every notification lands in the user's inbox, users see only their own."""

from __future__ import annotations

from wxapp_backend.db import session_scope
from wxapp_backend.notices.models import Notification
from wxapp_backend.notices.services import notify


def test_notify_writes_inbox_and_delivers_after_commit(app_ctx, client, make_user, user_token, run_jobs, db):
    user = make_user()
    with session_scope() as s:
        notify(s, user.id, "appeal_accepted", {"thing1": "您的诉求已受理"}, "pages/appeal/detail?id=1",
               title="诉求已受理", body="我们已受理您的诉求。", ref="appeal:1")
    resp = client.get("/api/v1/me/inbox", headers=user_token(user))
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["unread"] == 1 and body["items"][0]["title"] == "诉求已受理"
    assert run_jobs() == 1
    assert db.query(Notification).one().status != "pending"


def test_notify_is_dropped_with_a_rolled_back_transaction(app_ctx, make_user, run_jobs, db):
    user = make_user()
    try:
        with session_scope() as s:
            notify(s, user.id, "appeal_accepted", {}, title="x")
            raise RuntimeError("the caller's work failed")
    except RuntimeError:
        pass
    assert db.query(Notification).count() == 0
    assert run_jobs() == 0


def test_dedup_key_makes_notify_idempotent(app_ctx, make_user, db):
    user = make_user()
    for _ in range(2):
        with session_scope() as s:
            notify(s, user.id, "activity_reminder", {}, title="活动提醒", dedup_key="reminder:1:24h")
    assert db.query(Notification).count() == 1


def test_users_only_see_their_own_inbox(app_ctx, client, make_user, user_token):
    alice, bob = make_user(), make_user()
    with session_scope() as s:
        item_id = notify(s, alice.id, "notice", {}, title="给 Alice").inbox_item_id
    assert client.get("/api/v1/me/inbox", headers=user_token(bob)).get_json()["total"] == 0
    resp = client.post(f"/api/v1/me/inbox/{item_id}/read", headers=user_token(bob), json={})
    assert resp.status_code == 404
    ok = client.post(f"/api/v1/me/inbox/{item_id}/read", headers=user_token(alice), json={})
    assert ok.status_code == 200 and ok.get_json()["read"] is True
