"""The WeChat text handler answers from the knowledge base through the same service as POST /api/v1/chat."""

from __future__ import annotations

import pytest

from tests.api.test_webhook import OA_APPID, OA_KEY, OA_TOKEN, build, post, reply_of, text_push
from wxapp_backend.knowledge_store.cli import load_default_if_empty
from wxapp_backend.knowledge_store.models import ChatTurn


@pytest.fixture
def oa_kb(app, settings):
    application = build(settings, wechat_token=OA_TOKEN, wechat_aes_key=OA_KEY, wechat_appid=OA_APPID)
    with application.app_context():
        load_default_if_empty()
        from wxapp_backend.knowledge_store.services import get_runtime

        get_runtime().check_interval = 0
    return application


def ask(application, text, msg_id):
    resp = post(application, "oa", text_push(application, text, msg_id=msg_id))
    assert resp.status_code == 200
    return reply_of(application, resp)["Content"]


def test_wechat_text_gets_the_kb_answer(oa_kb, db):
    reply = ask(oa_kb, "外籍人才工作许可怎么办", 9001)
    assert "工作许可" in reply
    turn = db.query(ChatTurn).one()
    assert turn.channel == "oa" and turn.entry_id == "talent-foreign-work-permit"


def test_unknown_question_offers_handoff_and_appeal(oa_kb):
    reply = ask(oa_kb, "明天股票会涨吗", 9002)
    assert "人工" in reply and "我要反映" in reply


def test_digit_after_suggestions_picks_a_choice_not_the_menu(oa_kb, redis_client):
    from wxapp_backend.knowledge_store.bot import _memory_key

    redis_client.set(_memory_key("oa", "oUserA1"), '["talent-foreign-work-permit", "talent-hub"]', ex=60)
    reply = ask(oa_kb, "1", 9003)
    assert "工作许可" in reply
    assert "人才港" in ask(oa_kb, "2", 9004)  # the list stays after a pick: 2 is its second choice
    ask(oa_kb, "菜单", 9005)
    menu = ask(oa_kb, "1", 9006)  # the menu shown since: 1 is the menu's 政策问答 again
    assert "政策" in menu
