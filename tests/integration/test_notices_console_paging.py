"""The console's notice list reaches every notice: it showed the latest 100 only, with no way to older ones."""

from __future__ import annotations

from wxapp_backend.db import session_scope
from wxapp_backend.notices.broadcast_models import Notice


def test_the_notice_list_pages_through_every_notice(client, make_staff, console_login):
    with session_scope() as s:
        s.add_all([Notice(title=f"第{i:03d}号通知", summary="", audience={"all": True}) for i in range(1, 121)])
    console_login(make_staff(role="staff"))
    first = client.get("/console/notices").get_data(as_text=True)
    assert "第120号通知" in first and "第071号通知" in first and "第070号通知" not in first
    assert "第 1 / 3 页，共 120 条" in first
    last = client.get("/console/notices?page=3").get_data(as_text=True)
    assert "第001号通知" in last and "第021号通知" not in last
    assert "第001号通知" in client.get("/console/notices?page=99").get_data(as_text=True)  # past the end: the last
    assert client.get("/console/notices?page=abc").status_code == 200
