"""Activities: defects found in session 9, each test failing without its fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select

from wxapp_backend.activities import jobs
from wxapp_backend.activities.models import Registration
from wxapp_backend.db import session_scope
from wxapp_backend.notices.models import InboxItem

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_a_late_one_hour_reminder_says_how_many_minutes_are_left(app_ctx, make_activity, make_user, db):
    """The 1-hour reminder always said "1 小时后", also when the sweep or a last-minute registration sent it 25
    minutes before the start."""
    start = datetime(2030, 1, 10, 12, 0, tzinfo=SHANGHAI)
    a = make_activity(starts_at=start.astimezone(UTC))
    on_time, late = make_user(), make_user()
    with session_scope() as s:
        s.add(Registration(activity_id=a.id, user_id=on_time.id, status="confirmed", active_key=f"{a.id}:{on_time.id}"))
    assert jobs.send_reminders(a.id, "1h", now=(start - timedelta(minutes=60)).astimezone(UTC)) == 1
    with session_scope() as s:
        s.add(Registration(activity_id=a.id, user_id=late.id, status="confirmed", active_key=f"{a.id}:{late.id}"))
    assert jobs.send_reminders(a.id, "1h", now=(start - timedelta(minutes=25, seconds=30)).astimezone(UTC)) == 1
    bodies = {i.user_id: i.body for i in db.scalars(select(InboxItem)).all()}
    assert "1 小时后（2030-01-10 12:00）" in bodies[on_time.id], bodies
    assert "25 分钟后（2030-01-10 12:00）" in bodies[late.id], bodies


def test_the_registration_export_writes_yes_no_answers_in_words(client, make_staff, console_login, make_activity,
                                                                make_user):
    """The registrations page shows a yes/no answer as 是 / 否; the Excel export wrote TRUE / FALSE."""
    import io

    from openpyxl import load_workbook

    from wxapp_backend.activities import services

    activity = make_activity(questions=[{"key": "veg", "label": "是否素食", "type": "bool"},
                                        {"key": "topics", "label": "感兴趣的", "type": "multi",
                                         "options": ["财税", "法务"]}])
    for veg in (True, False):
        with session_scope() as s:
            services.register(s, activity_id=activity.id, user_id=make_user().id,
                              answers={"veg": veg, "topics": ["财税", "法务"]})
    console_login(make_staff(role="staff"))
    ws = load_workbook(io.BytesIO(client.get(f"/console/activities/{activity.id}/registrations.xlsx").data)).active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0][-2:] == ("是否素食", "感兴趣的")
    assert sorted(r[-2] for r in rows[1:]) == ["否", "是"] and {r[-1] for r in rows[1:]} == {"财税、法务"}
