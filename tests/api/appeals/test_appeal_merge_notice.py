"""A merged appeal's enterprise is told: it saw its appeal turn 已合并 without a word, and cannot open the
master (often another enterprise's appeal) to follow it."""

from __future__ import annotations

from sqlalchemy import select

from wxapp_backend.notices.models import InboxItem, Notification


def test_the_enterprise_of_a_merged_appeal_is_told_once(world, db):
    a = world.submit(content="新华大厦电梯坏了三天了一直没人修", category="楼宇物业")
    b = world.submit(headers=world.oh, content="新华大厦的电梯坏了好几天没人修理", category="楼宇物业",
                     building_id=world.building.id)
    world.act(a["id"], "accept")
    world.act(b["id"], "merge", master_id=a["id"])
    told = db.scalars(select(Notification).where(Notification.kind == "appeal_merged")).all()
    assert [n.user_id for n in told] == [world.other.id]
    inbox = db.scalar(select(InboxItem).where(InboxItem.user_id == world.other.id, InboxItem.kind == "appeal_merged"))
    assert b["number"] in inbox.body and a["number"] in inbox.body and "办结后会通知您" in inbox.body
    assert any(e["action"] == "notified" for e in world.detail(b["id"])["timeline"])
