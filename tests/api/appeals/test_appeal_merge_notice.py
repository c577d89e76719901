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


def test_a_split_appeals_enterprise_is_told_it_is_handled_on_its_own(world, db):
    a = world.submit(content="新华大厦电梯坏了三天了一直没人修", category="楼宇物业")
    b = world.submit(headers=world.oh, content="新华大厦的电梯坏了好几天没人修理", category="楼宇物业",
                     building_id=world.building.id)
    world.act(a["id"], "accept")
    world.act(b["id"], "merge", master_id=a["id"])
    world.act(b["id"], "split")
    told = db.scalars(select(Notification).where(Notification.kind == "appeal_split")).all()
    assert [n.user_id for n in told] == [world.other.id]
    inbox = db.scalar(select(InboxItem).where(InboxItem.user_id == world.other.id, InboxItem.kind == "appeal_split"))
    assert b["number"] in inbox.body and "单独办理" in inbox.body
    # Merged and split again: told again (each split is its own news).
    world.act(b["id"], "merge", master_id=a["id"])
    world.act(b["id"], "split")
    assert len(db.scalars(select(Notification).where(Notification.kind == "appeal_split")).all()) == 2


def test_an_approved_extension_is_told_with_the_new_date(world, db):
    a = world.submit()
    world.act(a["id"], "accept")
    world.act(a["id"], "assign", department="税务所")
    d = world.act(a["id"], "request_extension", headers=world.th, working_days=3, reason="需等待上级批复")
    d = world.act(a["id"], "decide_extension", extension_id=d["extensions"][0]["id"], accept=True)
    told = db.scalars(select(Notification).where(Notification.kind == "appeal_extended")).all()
    assert [n.user_id for n in told] == [world.user.id]
    inbox = db.scalar(select(InboxItem).where(InboxItem.user_id == world.user.id, InboxItem.kind == "appeal_extended"))
    assert a["number"] in inbox.body and "3 个工作日" in inbox.body
    from datetime import datetime

    from wxapp_backend.appeals.calendar import TZ

    due = datetime.fromisoformat(d["due_at"]).astimezone(TZ)
    assert f"{due.month}月{due.day}日" in inbox.body
    # A refused extension changes nothing for the enterprise: no notice.
    d = world.act(a["id"], "request_extension", headers=world.th, working_days=2, reason="还要等")
    world.act(a["id"], "decide_extension", extension_id=d["extensions"][-1]["id"], accept=False)
    assert len(db.scalars(select(Notification).where(Notification.kind == "appeal_extended")).all()) == 1
