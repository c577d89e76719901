"""Enterprises and buildings: defects found in session 9, each test failing without its fix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.enterprises import services
from wxapp_backend.errors import Conflict

ACTOR = Actor("staff", 3, role="staff")


def test_a_building_an_upcoming_activity_is_held_in_is_not_deleted(app_ctx, make_building, make_activity):
    """Deleting the venue of an activity still to come cleared its building (ON DELETE SET NULL) silently: the
    registrants' reminders and the check-in page lost where it is."""
    venue, old_venue = make_building(name="新华大厦"), make_building(name="幸福大楼")
    make_activity(title="楼宇音乐会", building_id=venue.id)
    make_activity(title="去年的音乐会", building_id=old_venue.id, starts_at=datetime.now(UTC) - timedelta(days=300))
    with pytest.raises(Conflict) as info, session_scope() as s:
        services.delete_building(s, ACTOR, venue.id)
    assert "活动「楼宇音乐会」" in info.value.message and "新华大厦" in info.value.message
    with session_scope() as s:  # an activity that is over does not hold its venue
        services.delete_building(s, ACTOR, old_venue.id)


def test_the_user_hears_how_the_binding_check_went(app_ctx, make_enterprise, make_user, run_jobs, db):
    """Staff verified or rejected a pending binding and the user was never told: they kept waiting, or kept
    filing appeals without their enterprise. Each decision now reaches them (inbox, and a subscribe message when
    they have a credit for it)."""
    from wxapp_backend.notices.models import InboxItem, Notification

    ent = make_enterprise(name="上海云帆科技有限公司")
    yes, no = make_user(enterprise_id=ent.id, binding_state="pending"), make_user(enterprise_id=ent.id,
                                                                                 binding_state="pending")
    with session_scope() as s:
        services.decide_binding(s, ACTOR, yes.id, approve=True)
        services.decide_binding(s, ACTOR, no.id, approve=False)
    run_jobs()
    inbox = {i.user_id: i for i in db.query(InboxItem).filter_by(kind="binding_result")}
    assert "核实通过" in inbox[yes.id].title and "上海云帆科技有限公司" in inbox[yes.id].body
    assert "未通过" in inbox[no.id].title and "重新申请" in inbox[no.id].body
    assert {n.status for n in db.query(Notification).filter_by(kind="binding_result")} <= {"inbox_only",
                                                                                           "sent_subscribe",
                                                                                           "sent_custom"}
