"""Who gets what (session 9 QA): notice and activity audiences, subscriptions and reminders, checked with several
users in different situations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _reg(client, aid, headers, answers=None):
    return client.post(f"/api/v1/activities/{aid}/registrations", json={"answers": answers or {}}, headers=headers)


def _changes(client, headers) -> list[str]:
    items = client.get("/api/v1/me/inbox", headers=headers).get_json()["items"]
    return [i["body"] for i in items if i["title"].startswith("活动调整")]


# --- activity changes ------------------------------------------------------------------------------------

def test_an_activity_moved_to_a_time_told_before_is_told_again(client, new_activity, make_user, user_token,
                                                                staff, staff_headers):
    """Moved to next week, back, and to next week again: the registrant last heard "this week", so the third
    move must be told too (the notice was keyed by the new time and place only, and that one was told before)."""
    start = datetime.now(UTC) + timedelta(days=2)
    aid = new_activity(start=start)
    u = make_user()
    assert _reg(client, aid, user_token(u)).status_code == 201
    h = staff_headers(staff)

    def move(to):
        body = {"starts_at": to.isoformat(), "ends_at": (to + timedelta(hours=2)).isoformat()}
        assert client.patch(f"/api/v1/staff/activities/{aid}", json=body, headers=h).status_code == 200

    later = start + timedelta(days=7)
    move(later)
    move(start)
    told = _changes(client, user_token(u))
    assert len(told) == 2, told
    assert start.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M") in told[0]  # the newest first
    move(later)
    assert len(_changes(client, user_token(u))) == 3
