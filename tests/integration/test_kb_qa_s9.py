"""Knowledge base: defects found in session 9, each test failing without its fix."""

from __future__ import annotations

from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store.models import ChatTurn, UnansweredQuestion
from wxapp_backend.knowledge_store.services import log_turn, mask_personal


def test_phone_and_id_numbers_typed_into_the_chat_are_not_kept(app_ctx, db):
    """The chat log and the staff's unanswered queue kept every question as typed, phone and ID numbers included
    (people write them for staff: “我是张三 13800138000 帮我查一下”)."""
    said = "我是张三 13800138000 身份证110105199001011234 帮我查下社保"
    with session_scope() as s:
        log_turn(s, channel="oa", user_id=None, question=said, decision="fallback", entry_id=None, confidence=0.1)
    stored = db.query(ChatTurn).one().question
    queued = db.query(UnansweredQuestion).one().text
    for text in (stored, queued):
        assert "13800138000" not in text and "110105199001011234" not in text
        assert "138****8000" in text and "110105********1234" in text and "帮我查下社保" in text
    assert mask_personal("订单号 202612060001234567 电话021-12345678") == "订单号 202612060001234567 电话021-12345678"
