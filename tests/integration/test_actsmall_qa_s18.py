"""White-collar activities, small fixes from the activities QA pass (session 18, actsmall): subscriptions sent with
repeats, a registration retried after the activity was cancelled, and check-ins at a cancelled activity in the
attendance statistics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

SUBS = "/api/v1/me/subscriptions"


# --- 1. category subscriptions with repeats -----------------------------------------------------------------------

def test_repeated_categories_count_once_before_the_eleven_limit(client, make_user, user_token, db):
    """A page that appended the ticked category to what it had read (twice, after a double tap) sent 12 entries for
    10 categories and was refused “最多 11 项”. Repeats, also those written with blanks or full-width letters, are one
    category: they are removed before the list's size is judged, and each is saved once."""
    from wxapp_backend.activities.models import CATEGORIES, CategorySubscription

    user = make_user()
    headers = user_token(user)
    cats = list(CATEGORIES)
    sent = [*cats[:10], "concert", " concert ", "ｃｏｎｃｅｒｔ", cats[0]]
    assert len(sent) > len(CATEGORIES)
    resp = client.put(SUBS, headers=headers, json={"categories": sent})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["categories"] == sorted(set(cats[:10]) | {"concert"})
    db.expire_all()
    rows = db.scalars(select(CategorySubscription.category).where(CategorySubscription.user_id == user.id)).all()
    assert sorted(rows) == sorted(set(cats[:10]) | {"concert"})
    # Every category, each twice: still all of them.
    resp = client.put(SUBS, headers=headers, json={"categories": cats + cats})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["categories"] == sorted(cats)


def test_an_unknown_category_is_still_refused_and_nothing_changes(client, make_user, user_token):
    headers = user_token(make_user())
    assert client.put(SUBS, headers=headers, json={"categories": ["concert"]}).status_code == 200
    resp = client.put(SUBS, headers=headers, json={"categories": ["concert", "concert", "yoga"]})
    assert resp.status_code == 422 and "活动类别" in resp.get_json()["message"]
    resp = client.put(SUBS, headers=headers, json={"categories": ["concert", 3]})
    assert resp.status_code == 422
    assert client.get(SUBS, headers=headers).get_json()["categories"] == ["concert"]


# --- 2. a retried registration after the activity was cancelled ---------------------------------------------------

def test_a_retry_after_the_activity_was_cancelled_says_so(client, make_user, user_token, new_activity, staff,
                                                          staff_headers):
    """The page retried a registration (same Idempotency-Key) after staff had cancelled the activity: the answer was
    “您之前这次提交的报名已取消……如需再次报名，请重新打开活动页面后点“报名””, which sent the worker to a page that
    refuses them. It now says the activity was cancelled (with staff's reason) and invites no new registration."""
    activity_id = new_activity()
    h = {**user_token(make_user()), "Idempotency-Key": "tap-1"}
    url = f"/api/v1/activities/{activity_id}/registrations"
    first = client.post(url, json={"answers": {}}, headers=h)
    assert first.status_code == 201, first.get_json()
    resp = client.patch(f"/api/v1/staff/activities/{activity_id}", headers=staff_headers(staff),
                        json={"status": "cancelled", "cancel_reason": "场地临时维修"})
    assert resp.status_code == 200, resp.get_json()
    again = client.post(url, json={"answers": {}}, headers=h)
    body = again.get_json()
    assert again.status_code == 409, body
    assert body["error"] == "idempotency_key_reused"
    assert body["fields"]["registration_id"] == str(first.get_json()["id"])
    assert "楼宇音乐会”已取消（场地临时维修）" in body["message"]
    assert "重新打开" not in body["message"] and "再次报名" not in body["message"]
    # A new key is told the same as anyone: the activity is cancelled.
    fresh = client.post(url, json={"answers": {}}, headers={**h, "Idempotency-Key": "tap-2"})
    assert fresh.status_code == 409 and fresh.get_json()["error"] == "activity_cancelled"


def test_a_retry_after_the_user_cancelled_still_invites_a_new_registration(client, make_user, user_token,
                                                                           new_activity):
    """The registration cancelled by its user while the activity goes on: the old words stand."""
    activity_id = new_activity()
    h = {**user_token(make_user()), "Idempotency-Key": "tap-1"}
    url = f"/api/v1/activities/{activity_id}/registrations"
    reg_id = client.post(url, json={"answers": {}}, headers=h).get_json()["id"]
    assert client.post(f"/api/v1/registrations/{reg_id}/cancel", headers=h).status_code == 200
    again = client.post(url, json={"answers": {}}, headers=h)
    assert again.status_code == 409 and "重新打开活动页面" in again.get_json()["message"]


# --- 3. check-ins at an activity cancelled after check-in opened --------------------------------------------------

def _checked_in_then_cancelled(client, make_user, user_token, make_activity, staff, staff_headers, *, building_id):
    """A worker checked in (check-in opens 2 hours before the start), then staff cancelled the activity."""
    now = datetime.now(UTC)
    a = make_activity(title="取消了的讲座", starts_at=now + timedelta(hours=1))
    user = make_user(building_id=building_id)
    reg = client.post(f"/api/v1/activities/{a.id}/registrations", json={"answers": {}}, headers=user_token(user))
    assert reg.status_code == 201, reg.get_json()
    reg_id = reg.get_json()["id"]
    h = staff_headers(staff)
    resp = client.post(f"/api/v1/staff/registrations/{reg_id}/attended", json={"note": "现场手工登记"}, headers=h)
    assert resp.status_code == 200 and resp.get_json()["status"] == "attended", resp.get_json()
    resp = client.patch(f"/api/v1/staff/activities/{a.id}", headers=h,
                        json={"status": "cancelled", "cancel_reason": "嘉宾临时有事"})
    assert resp.status_code == 200, resp.get_json()
    return a, reg_id


def test_check_ins_at_a_cancelled_activity_are_not_attendance(app_ctx, client, make_user, user_token, make_activity,
                                                              make_building, staff, staff_headers, db):
    """Someone checked in during the two hours before the start, then the activity was cancelled: the statistics
    counted them 已签到 and their building's rate rose, for an activity that never took place. Such check-ins are
    left out of the attended / no-show counts and the rate, and counted apart (cancelled_checked_in)."""
    from wxapp_backend.activities import services
    from wxapp_backend.activities.jobs import close_attendance

    tower = make_building(name="新华大厦")
    _checked_in_then_cancelled(client, make_user, user_token, make_activity, staff, staff_headers,
                               building_id=tower.id)
    # Another activity in the same building that took place: one came, one did not.
    past = make_activity(title="开过的音乐会", starts_at=datetime.now(UTC) - timedelta(hours=1),
                         ends_at=datetime.now(UTC) - timedelta(minutes=30))
    came, missed = make_user(building_id=tower.id), make_user(building_id=tower.id)
    from wxapp_backend.activities.models import Registration, RegStatus
    from wxapp_backend.db import session_scope

    with session_scope() as s:
        s.add(Registration(activity_id=past.id, user_id=came.id, status=RegStatus.ATTENDED.value))
        s.add(Registration(activity_id=past.id, user_id=missed.id, status=RegStatus.CONFIRMED.value))
    close_attendance(past.id, now=datetime.now(UTC) + timedelta(hours=1))

    stats = services.attendance_stats(db)
    row = next(r for r in stats["buildings"] if r["id"] == tower.id)
    assert (row["attended"], row["no_show"], row["confirmed"]) == (1, 1, 0)
    assert row["rate"] == 50.0
    assert row["cancelled_checked_in"] == 1


def test_the_console_shows_cancelled_check_ins_apart(client, make_user, user_token, make_activity, make_building,
                                                     staff, staff_headers, console_login):
    """The stats page and the cancelled activity's registrations page: no 已签到 / 100% for the cancelled activity,
    its check-ins in their own column."""
    import re

    tower = make_building(name="新华大厦")
    a, _ = _checked_in_then_cancelled(client, make_user, user_token, make_activity, staff, staff_headers,
                                      building_id=tower.id)
    console_login(staff)
    for path in ("/console/activities/stats", f"/console/activities/{a.id}/registrations"):
        page = client.get(path).get_data(as_text=True)
        assert "活动取消前已签到" in page, path
        row = re.search(r"<tr><td>新华大厦</td>(.*?)</tr>", page, re.S)
        assert row is not None, path
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))
        # 已签到, 未到场, 待活动, 到场率, 活动取消前已签到
        assert cells == ["0", "0", "0", "—", "1"], (path, cells)
