"""Security review, session 10: defects found attacking the running service, each test failing without its fix."""

from __future__ import annotations

import pytest

from wxapp_backend.knowledge_store.models import ChatTurn, UnansweredQuestion


@pytest.mark.parametrize(("said", "kept"), [
    ("我的手机 138-0013-8000 麻烦回电", "138-0013-8000"),
    ("电话 138 0013 8000 找张经理", "138 0013 8000"),
    ("联系我 +86 13800138000 谢谢", "13800138000"),
    ("联系我 8613800138000 谢谢", "8613800138000"),
    ("手机号１３８００１３８０００请回电", "１３８００１３８０００"),
    ("身份证号１１０１０５１９９００１０１１２３４怎么查社保", "１１０１０５１９９００１０１１２３４"),
])
def test_phone_numbers_written_as_people_type_them_are_not_kept_in_the_chat_log(client, db, said, kept):
    """The chat log and the staff's unanswered queue hide the middle of a mobile or ID-card number, but only of
    eleven (eighteen) ASCII digits in a row: the same number with the spaces or dashes people group it with, with
    the country code in front, or in the full-width digits a Chinese input method types, was kept as typed."""
    resp = client.post("/api/v1/chat", json={"text": said})
    assert resp.status_code == 200, resp.get_json()
    stored = [t.question for t in db.query(ChatTurn)] + [q.text for q in db.query(UnansweredQuestion)]
    assert stored, "the question was not logged at all"
    for text in stored:
        assert kept not in text, text
        assert "****" in text, text
