"""Appeals, QA pass 15: a location sent while supplementing is the supplement; timeline rows carry the service's clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from handlers import appeal_followup as followup
from handlers import appeal_intake as intake
from handlers.router import Context, Router
from wxapp_backend.appeals import jobs, services
from wxapp_backend.appeals.models import Appeal, AppealEvent
from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.db import session_scope
from wxapp_backend.wechat.messages import normalise

NOW = datetime(2025, 10, 20, 2, 0, tzinfo=UTC)  # a Monday, 10:00 in Shanghai; long past: never the real clock


@pytest.fixture
def people(make_user, make_staff, make_building, make_enterprise, app_ctx):
    building = make_building(name="新华大厦")
    enterprise = make_enterprise(name="上海测试科技有限公司", building_id=building.id)
    user = make_user(enterprise_id=enterprise.id, binding_state="verified")
    admin = make_staff(role="admin")
    return user, Actor("staff", admin.id, role="admin", name="管理员")


def _submit(user_id: int, now: datetime | None = None) -> tuple[int, str]:
    with session_scope() as s:
        appeal, _ = services.submit_appeal(s, user_id, services.Intake(
            content="办公楼门口的路灯坏了，晚上很黑", contact_name="张三", contact_phone="13800138000"), now=now)
        return appeal.id, appeal.number


def _act(staff: Actor, appeal_id: int, action: str, now: datetime | None = None, **data) -> None:
    with session_scope() as s:
        services.perform(s, staff, appeal_id, action, data, now=now)


def _events(appeal_id: int) -> list[tuple[str, datetime]]:
    with session_scope() as s:
        return [(e.action, e.created_at) for e in s.scalars(
            select(AppealEvent).where(AppealEvent.appeal_id == appeal_id).order_by(AppealEvent.id))]


def test_a_location_sent_while_supplementing_is_the_supplement(people, redis_client):
    """Staff asked where the broken lamp is; the user, in 补充, sends their location: it was answered with “收到您的
    位置…请用文字告诉小二” and the reminder, the place never reaching staff. It is now the supplement's text, with its
    timeline row and audit row, and the user is told it went in."""
    user, staff = people
    router = followup.install(intake.install(Router()))

    def say(**raw_extra):
        raw = {"ToUserName": "gh_x", "FromUserName": f"o-{user.id}", "CreateTime": "1700000000",
               "MsgId": str(abs(hash(tuple(raw_extra.items())))), **raw_extra}
        reply = router.dispatch(Context(msg=normalise(raw, "oa"), redis=redis_client, user_id=user.id))
        return getattr(reply, "text", reply)

    appeal_id, number = _submit(user.id)
    _act(staff, appeal_id, "accept")
    _act(staff, appeal_id, "request_info", note="请告知路灯的具体位置")
    assert number in say(MsgType="text", Content="补充")
    reply = say(MsgType="location", Location_X="31.2016", Location_Y="121.4287", Scale="15", Label="新华路1号")
    assert reply.startswith("收到您的位置（新华路1号），已作为补充内容提交"), reply
    assert f"已补充，诉求 {number} 恢复办理" in reply, reply
    with session_scope() as s:
        appeal = s.get(Appeal, appeal_id)
        assert appeal.status == "accepted" and appeal.info_request == ""
        ev = s.scalars(select(AppealEvent).where(AppealEvent.appeal_id == appeal_id,
                                                 AppealEvent.action == "supplemented")).one()
        assert ev.note == "企业补充：位置：新华路1号（经纬度 31.2016,121.4287）"
        assert ev.actor_type == "user" and ev.actor_id == str(user.id)
        assert s.scalar(select(AuditLog.id).where(AuditLog.action == "appeal.supplemented")) is not None
    assert say(MsgType="text", Content="补充") == followup.NOTHING_TO_SUPPLEMENT  # the flow is over


def test_a_location_during_a_rating_still_only_reminds(people, redis_client):
    """The rating reads no place: a location there keeps being answered with the reminder, nothing recorded."""
    user, staff = people
    router = followup.install(intake.install(Router()))
    appeal_id, number = _submit(user.id)
    _act(staff, appeal_id, "accept")
    _act(staff, appeal_id, "resolve", resolution="已修好路灯")

    def say(**raw_extra):
        raw = {"ToUserName": "gh_x", "FromUserName": f"o-{user.id}", "CreateTime": "1700000000",
               "MsgId": str(abs(hash(tuple(raw_extra.items())))), **raw_extra}
        return router.dispatch(Context(msg=normalise(raw, "oa"), redis=redis_client, user_id=user.id)).text

    say(MsgType="text", Content="评价")
    reply = say(MsgType="location", Location_X="31.2", Location_Y="121.4", Label="新华路1号")
    assert f"您正在评价诉求 {number}" in reply, reply
    assert "rated" not in [a for a, _ in _events(appeal_id)]


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite hands back naive UTC


def test_timeline_rows_carry_the_clock_the_change_was_made_on(people):
    """Services and jobs run with `now=` (the tick, the tests' travel in time) wrote the appeal's status, deadlines and
    times at `now` but its timeline rows at the real clock: only 催办 was stamped `now`. The change's rows, the
    enterprise's notice (已通知企业) and the staff alert's row (已通知 / 未能提醒) are now."""
    user, staff = people
    appeal_id, _ = _submit(user.id, now=NOW)
    _act(staff, appeal_id, "accept", now=NOW + timedelta(hours=1))
    _act(staff, appeal_id, "note", now=NOW + timedelta(hours=2), note="已联系物业")
    _act(staff, appeal_id, "request_info", now=NOW + timedelta(hours=3), note="请告知具体位置")
    with session_scope() as s:
        services.supplement(s, user.id, appeal_id, "新华路1号门口", now=NOW + timedelta(hours=4))
    with session_scope() as s:
        due = s.get(Appeal, appeal_id).due_at
    late = _utc(due) + timedelta(minutes=5)
    jobs.tick(now=late)  # 已超期: the tick's own rows
    rows = [(action, _utc(at)) for action, at in _events(appeal_id)]
    got = {}
    for action, at in rows:
        got.setdefault(action, at)
    told = [at for action, at in rows if action == "notified"]  # 已通知企业: the notice goes with the change
    assert told[:2] == [NOW + timedelta(hours=1), NOW + timedelta(hours=3)], rows
    assert got["submitted"] == NOW
    assert got["accepted"] == NOW + timedelta(hours=1)
    assert got["noted"] == NOW + timedelta(hours=2)
    assert got["info_requested"] == NOW + timedelta(hours=3)
    assert got["supplemented"] == NOW + timedelta(hours=4)
    assert got["overdue"] == late
    assert got.get("staff_unreachable", got.get("staff_notified")) == late  # the 超期 alert's own row
    assert all(NOW <= at <= late for _, at in rows), rows  # not one row on the real clock
