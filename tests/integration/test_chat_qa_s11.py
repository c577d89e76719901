"""QA of the bot's conversations, fourth pass: late and colloquial answers to a rating, a second pick of a choice."""

from __future__ import annotations

from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the first pass's fixture and helper)
from wxapp_backend.knowledge_store.bot import _memory_key

# --- 2. another pick from the same “您是不是想问” list ---------------------------------------------------------


def test_a_second_pick_from_the_same_choices(oa_kb, redis_client):  # noqa: F811
    """After picking “1” of “您是不是想问”, “第二个” (another of the same list) got “这个问题我还没学会” or the
    menu: the list was dropped as soon as one was picked. It stays (for the usual 15 minutes) and the answer
    says so."""
    openid = "oSecondPick"
    say(oa_kb, openid, "你好")
    redis_client.set(_memory_key("oa", openid), '["talent-foreign-work-permit", "talent-hub"]', ex=60)
    first = say(oa_kb, openid, "1")
    assert "工作许可" in first and "回复 2" in first, first
    second = say(oa_kb, openid, "第二个")
    assert "人才港" in second and "回复 1" in second, second
    assert "工作许可" in say(oa_kb, openid, "1")
    assert redis_client.ttl(_memory_key("oa", openid)) > 60  # kept for as long again
    say(oa_kb, openid, "菜单")  # the menu: a digit means the menu again
    assert "请直接输入您想了解的政策" in say(oa_kb, openid, "1")
