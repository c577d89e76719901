"""响应率 leaves out an appeal nobody has responded to yet while its response deadline has not passed: it counted
as a miss, so the dashboard's rolling 30-day figure dipped with every new appeal and came back a day later."""

from __future__ import annotations

from datetime import datetime, timedelta

from wxapp_backend.appeals import metrics, services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.db import session_scope

MONDAY = datetime(2025, 10, 20, 10, 0, tzinfo=TZ)


def _submit(user_id: int, now: datetime) -> None:
    with session_scope() as s:
        services.submit_appeal(s, user_id, services.Intake(content="园区路灯坏了好几天了，晚上很黑",
                                                           contact_name="张三", contact_phone="13800138000"), now=now)


def test_an_appeal_still_within_its_response_time_is_neither_hit_nor_miss(app_ctx, make_user, monkeypatch):
    user = make_user()
    _submit(user.id, MONDAY)
    start, end = MONDAY - timedelta(days=1), MONDAY + timedelta(days=7)
    with session_scope() as s:  # the dashboard asks as of now
        monkeypatch.setattr(metrics, "utcnow", lambda: MONDAY + timedelta(hours=2), raising=False)
        soon = metrics.compute(s, start, end)
        monkeypatch.setattr(metrics, "utcnow", lambda: MONDAY + timedelta(days=3), raising=False)
        late = metrics.compute(s, start, end)
    assert soon.submitted == 1 and (soon.response.numerator, soon.response.denominator) == (0, 0)
    assert (late.response.numerator, late.response.denominator) == (0, 1)  # the deadline passed: a miss
