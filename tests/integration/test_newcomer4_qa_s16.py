"""A newcomer's first hour: seed-demo fills every console page, empty pages say so in Chinese, serve says how
to log in."""

from __future__ import annotations

import re

from wxapp_backend.activities.models import Activity
from wxapp_backend.appeals.models import Appeal
from wxapp_backend.auth.models import User
from wxapp_backend.enterprises.models import Enterprise
from wxapp_backend.notices.broadcast_models import Notice


def _login(client, output: str) -> None:
    password = re.search(r"密码：(\S+)", output).group(1)
    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    resp = client.post(
        "/console/login", data={"username": "admin", "password": password, "csrf_token": token}
    )
    assert resp.status_code == 302


def test_seed_demo_loads_activities_notices_and_appeals_in_several_states_once(app, client, db):
    """seed-demo loaded grids, buildings and five enterprises only: 活动, 通知推送, 诉求, 用户 and the weekly
    report were empty tables for a newcomer looking around."""
    runner = app.test_cli_runner()
    first = runner.invoke(args=["seed-demo"])
    assert first.exit_code == 0, first.output
    assert db.query(Activity).count() >= 3 and db.query(Notice).count() >= 1 and db.query(User).count() >= 3
    states = {a.status for a in db.query(Appeal)}
    assert {"submitted", "accepted", "assigned", "in_progress"} <= states
    assert states & {"resolved", "closed"}
    second = runner.invoke(args=["seed-demo"])
    assert second.exit_code == 0, second.output
    assert db.query(Appeal).count() == 6 and db.query(Activity).count() == 4  # a second run adds nothing
    assert {e.contact_name for e in db.query(Enterprise)} >= {
        "陈经理",
        "刘女士",
    }  # was “联系人” for every one
    _login(client, first.output)
    for path, word in [
        ("/console/activities", "午间一小时"),
        ("/console/notices", "稳岗补贴"),
        ("/console/appeals", "加计扣除"),
        ("/console/users", "陈经理"),
    ]:
        page = client.get(path).get_data(as_text=True)
        assert word in page, path


def test_empty_console_pages_say_what_to_do(client, db, make_staff, console_login):
    """A fresh database: 诉求 and 用户 said “没有符合条件的…” as if a filter were set, and 未答问题 showed a table
    header under its hint."""
    console_login(make_staff(role="admin"))
    appeals = client.get("/console/appeals").get_data(as_text=True)
    assert "还没有诉求" in appeals and "没有符合条件的诉求" not in appeals
    assert "没有符合条件的诉求" in client.get("/console/appeals?status=closed").get_data(as_text=True)
    users = client.get("/console/users").get_data(as_text=True)
    assert "还没有用户" in users
    unanswered = client.get("/console/kb/unanswered").get_data(as_text=True)
    assert "<th>次数</th>" not in unanswered
