"""The bot's decision texts: numbered choices, policy facts, length limits, expired policies."""

from __future__ import annotations

from datetime import date

from knowledge.schema import Entry
from knowledge.search import KnowledgeBase
from wxapp_backend.knowledge_store.chat import MAX_REPLY_CHARS, ask, format_answer

ENTRIES = [
    Entry(id="a", question="营业执照怎么办理", answer="在一网通办申请。", similar=("怎么办执照", "开公司办执照")),
    Entry(id="b", question="高新技术企业认定条件", answer="高企认定看研发投入。",
          similar=("高企认定要求",), eligibility="注册满一年的企业", where_to_apply="一网通办",
          valid_until=date(2099, 1, 1)),
    Entry(id="c", question="2020 年疫情房租减免", answer="已结束。", similar=("疫情房租减免政策",),
          valid_until=date(2020, 12, 31)),
]


def test_number_reply_picks_the_offered_entry():
    kb = KnowledgeBase(ENTRIES)
    result = ask(kb, "2", last_suggestions=["a", "b"])
    assert result.decision == "answer" and result.entry_id == "b"


def test_number_without_offer_is_a_question():
    kb = KnowledgeBase(ENTRIES)
    assert ask(kb, "2").entry_id is None


def test_policy_answer_shows_who_and_where():
    text, cut = format_answer(ENTRIES[1])
    assert "【适用对象】注册满一年的企业" in text and "【办理渠道】一网通办" in text and not cut


def test_long_answer_is_shortened_with_a_pointer():
    long = Entry(id="l", question="q", answer="很长的内容。" * 400)
    text, cut = format_answer(long)
    assert cut and len(text) <= MAX_REPLY_CHARS and "小程序" in text


def test_expired_policy_is_said_to_have_ended():
    kb = KnowledgeBase(ENTRIES, today=date(2026, 1, 1))
    result = ask(kb, "2020 年疫情房租减免")
    assert result.decision == "fallback" and "有效期" in result.reply and result.entry_id is None


def test_empty_text():
    assert ask(KnowledgeBase(ENTRIES), "   ").decision == "smalltalk"
