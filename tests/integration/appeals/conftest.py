"""Fixtures for appeal service and job tests."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from wxapp_backend.appeals import services
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope


@pytest.fixture
def arrange(make_user, make_staff, make_building, make_grid, make_enterprise):
    grid = make_grid()
    building = make_building(grid_id=grid.id)
    enterprise = make_enterprise(building_id=building.id)
    user = make_user(enterprise_id=enterprise.id, binding_state="verified")
    admin = make_staff(role="admin")
    actor = Actor("staff", admin.id, role="admin", name="管理员")

    def submit(now, content="我们公司的增值税发票开不出来，税控盘坏了", **kw):
        with session_scope() as s:
            appeal, _ = services.submit_appeal(s, user.id, services.Intake(
                content=content, contact_name="张三", contact_phone="13800138000", **kw), now=now)
            return appeal.id

    def act(appeal_id, action, now=None, **data):
        with session_scope() as s:
            return services.perform(s, actor, appeal_id, action, data, now=now).status

    return SimpleNamespace(user=user, admin=admin, actor=actor, submit=submit, act=act, building=building)
