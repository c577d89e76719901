"""“外 籍 人 才 工 作 许 可 怎 么 办”: a question typed one character at a time between spaces got “您是不是想问”
at best (jieba saw single characters, no words) and “小 微 企 业 融 资 …” nothing at all."""

from __future__ import annotations

import pytest

from knowledge.analysis import get_analyzer
from knowledge.loaders import load_dir
from knowledge.search import KnowledgeBase


@pytest.mark.parametrize(("typed", "seen"), [
    ("外 籍 人 才 工 作 许 可 怎 么 办", "外籍人才工作许可怎么办"),
    ("小  微 企\u3000业 融 资", "小微企业融资"),  # any run of blanks, full-width ones too
    ("我 想 问 一下 落户", "我想问 一下 落户"),  # the spaced-out run joined, the words after it kept apart
])
def test_a_run_of_single_characters_between_spaces_is_read_as_one_phrase(typed, seen):
    assert get_analyzer().normalize(typed) == seen


@pytest.mark.parametrize("typed", ["一网通办 怎么 注册", "外 籍人才", "中 文", "a b c d", "办 证"])
def test_spaces_between_words_and_short_runs_are_left_alone(typed):
    assert get_analyzer().normalize(typed) == typed


@pytest.fixture(scope="module")
def kb() -> KnowledgeBase:
    return KnowledgeBase(load_dir("knowledge/data"))


@pytest.mark.parametrize(("typed", "entry"), [
    ("外 籍 人 才 工 作 许 可 怎 么 办", "talent-foreign-work-permit"),
    ("小 微 企 业 融 资 有 什 么 政 策", "finance-puhui"),
])
def test_a_spaced_out_question_gets_the_answer_the_plain_one_gets(kb, typed, entry):
    plain = kb.decide(typed.replace(" ", ""))
    spaced = kb.decide(typed)
    assert plain.kind == "answer" and plain.hits[0].entry.id == entry
    assert spaced.kind == "answer" and spaced.hits[0].entry.id == entry


@pytest.mark.parametrize("typed", ["一网通办怎么注册", "怎么注册一网通办", "一网通办 怎么 注册"])
def test_registering_on_yiwangtongban_is_not_answered_with_opening_a_branch(kb, typed):
    """“一网通办怎么注册” was answered outright (0.98) with “怎么设立分公司？”: a confident wrong answer."""
    decision = kb.decide(typed)
    assert decision.hits[0].entry.id == "gov-legal-person-login"
    assert decision.kind != "answer" or decision.hits[0].entry.id == "gov-legal-person-login"
