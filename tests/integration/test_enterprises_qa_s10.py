"""Enterprises, buildings and bindings: defects found in session 10, each test failing without its fix."""

from __future__ import annotations

from sqlalchemy import select

from wxapp_backend.audit import Actor
from wxapp_backend.auth.models import User
from wxapp_backend.db import session_scope
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises import services

ACTOR = Actor("staff", 3, role="staff")


def code(n: int) -> str:
    return demo_credit_code("91310105", n)


def test_approval_message_promises_only_what_a_verified_contact_can_do(app_ctx, make_enterprise, make_user,
                                                                        run_jobs, db):
    from wxapp_backend.notices.models import InboxItem

    ent = make_enterprise(name="上海云帆科技有限公司")
    u = make_user(enterprise_id=ent.id, binding_state="pending")
    with session_scope() as s:
        services.decide_binding(s, ACTOR, u.id, approve=True)
    run_jobs()
    item = db.scalar(select(InboxItem).where(InboxItem.kind == "binding_result"))
    assert "上海云帆科技有限公司" in item.body
    assert "企业的诉求进度" not in item.body, item.body

