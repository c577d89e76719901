"""Chat intake: the multi-turn 我要反映 flow on the router, with real Redis state and the database."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from handlers.appeal_intake import CANCELLED, JUST_SUBMITTED, LOST, install
from handlers.replies import Transfer
from handlers.router import Context, Router
from wxapp_backend.appeals.models import Appeal
from wxapp_backend.db import session_scope
from wxapp_backend.wechat.messages import normalise


@pytest.fixture
def chat(redis_client, make_user, make_building, make_enterprise, app_ctx):
    building = make_building(name="新华大厦")
    enterprise = make_enterprise(name="上海测试科技有限公司", building_id=building.id)
    user = make_user(enterprise_id=enterprise.id, binding_state="verified")
    router = install(Router())

    def say(content=None, *, msg_type="text", event=None, key=None, media_id=None, user_id=user.id):
        raw = {"ToUserName": "gh_x", "FromUserName": user.openid, "CreateTime": "1700000000", "MsgType": msg_type}
        if content is not None:
            raw["Content"] = content
        if event:
            raw["Event"], raw["EventKey"] = event, key or ""
        if media_id:
            raw["MediaId"], raw["PicUrl"] = media_id, "http://example.invalid/p.jpg"
        ctx = Context(msg=normalise(raw, "oa"), redis=redis_client, user_id=user_id)
        reply = router.dispatch(ctx)
        return getattr(reply, "text", reply)  # a Transfer (人工) has no text

    say.user, say.building, say.enterprise = user, building, enterprise
    return say


def _count() -> int:
    with session_scope() as s:
        return s.scalar(select(func.count(Appeal.id))) or 0


def test_full_intake_writes_the_appeal_only_on_confirm(chat):
    assert "共 5 步" in chat("我要反映")
    assert "至少 5 个字" in chat("电梯")  # too short
    assert "上海测试科技有限公司" in chat("新华大厦 12 楼电梯坏了三天没人修")
    assert "联系人" in chat("是")
    assert "没有认出手机号" in chat("张三 123")
    assert "照片" in chat("张三 13800138000")
    assert "第 1 张" in chat(msg_type="image", media_id="MEDIA1")
    summary = chat("好了")
    assert "请核对" in summary and "电梯坏了" in summary and "新华大厦" in summary and "照片：1 张" in summary
    assert _count() == 0  # nothing is saved before the confirmation
    done = chat("确认")
    assert "诉求已提交，编号 SQ" in done
    with session_scope() as s:
        appeal = s.scalars(select(Appeal)).unique().one()
        assert appeal.channel == "chat" and appeal.contact_phone == "13800138000"
        assert appeal.enterprise_id == chat.enterprise.id and appeal.building_id == chat.building.id
    # the state is gone: a repeated 确认 (a WeChat retry after the reply) is told, nothing is added
    assert chat("确认") == JUST_SUBMITTED.format(number=appeal.number)
    assert _count() == 1


def test_menu_click_starts_and_cancel_drops_the_draft(chat):
    assert "共 5 步" in chat(msg_type="event", event="CLICK", key="MENU_APPEAL")
    chat("园区门口总有车辆乱停乱放，影响出入")
    assert chat("取消") == CANCELLED
    assert _count() == 0
    assert chat("继续") == LOST  # nothing left to continue


def test_resume_and_restart(chat):
    chat("我要反映")
    chat("楼里的空调一直不制冷，物业不处理")
    pending = chat("我要反映")
    assert "第 2/5 步" in pending
    assert "企业名称" in chat("继续") or "名下" in chat("继续")
    assert "共 5 步" in chat("重新开始")
    assert "至少 5 个字" in chat("好")


def test_free_text_place_matches_known_building(chat):
    assert "共 5 步" in chat("我要反映")
    chat("办公室的网络经常断，影响办公")
    chat("另一家咨询有限公司，新华大厦")
    chat("李四，021-12345678")
    chat("跳过")
    summary = chat("随便说点")
    assert "另一家咨询有限公司" in summary and "新华大厦" in summary and "李四" in summary
    chat("确认")
    with session_scope() as s:
        appeal = s.scalars(select(Appeal)).unique().one()
        assert appeal.enterprise_id is None and appeal.enterprise_name == "另一家咨询有限公司"
        assert appeal.building_id == chat.building.id and appeal.contact_phone == "021-12345678"


def test_redis_restart_mid_intake_tells_the_user(chat, redis_client):
    chat("我要反映")
    chat("增值税发票开不出来，税控盘坏了")
    chat("是")
    redis_client.flushdb()  # the restart: conversation state gone
    assert chat("张三 13800138000") == LOST
    assert _count() == 0
    assert "共 5 步" in chat("我要反映")


def test_unrelated_messages_are_left_to_other_handlers(chat):
    assert chat("你好") is None
    chat("我要反映")
    handed = chat("人工")  # a person can always be reached, the draft stays (put aside, and the note says so)
    assert isinstance(handed, Transfer) and "第 1/5 步" in handed.note, handed
    assert "第 1/5 步" in chat("我要反映")


def test_photos_are_fetched_after_confirm(chat, run_jobs, standin, app):
    chat("我要反映")
    chat("楼道里堆满了垃圾，已经一周了")
    chat("是")
    chat("张三 13800138000")
    chat(msg_type="image", media_id="MEDIA-A")
    chat("好了")
    chat("确认")
    run_jobs()
    from wxapp_backend.appeals.jobs import fetch_chat_images
    from wxapp_backend.appeals.models import AppealEvent

    with session_scope() as s:
        appeal = s.scalars(select(Appeal)).unique().one()
        appeal_id = appeal.id
        assert [i["media_id"] for i in appeal.images] == ["MEDIA-A"]
    assert fetch_chat_images(appeal_id, "oa", ["MEDIA-A"]) == 0  # the job ran twice: nothing new
    with session_scope() as s:
        assert len(s.get(Appeal, appeal_id).images) == 1
        events = s.scalars(select(AppealEvent).where(AppealEvent.action == "photos_attached")).all()
        assert len(events) == 1


def test_intake_is_plugged_into_the_bot():
    import handlers

    assert "handlers.appeal_intake" in handlers.PLUGINS
    bot = handlers.build_router()
    names = [r.name for r in bot.rules]
    assert names.index("text:" + "|".join(["我要反映", "反映问题", "投诉", "诉求", "我要投诉", "我有诉求"])) < \
        names.index("text:我要反映|反映问题|投诉|诉求")


def test_small_talk_inside_a_draft_is_not_taken_as_an_answer(chat):
    """人工 leaves the draft in place; the “你好” / “谢谢” of the talk with a person is no enterprise name."""
    chat("我要反映")
    chat("楼里的空调一直不制冷，物业不处理")
    for word in ("你好", "谢谢", "Hello"):
        assert "第 2/5 步" in chat(word)
    assert "联系人" in chat("是")  # the place step still takes its real answer
