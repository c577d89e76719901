"""Answer-field search, entry-level sibling feature, short/long feature halves and the answer threshold."""

from __future__ import annotations

import numpy as np

from knowledge.analysis import get_analyzer
from knowledge.index import FEATURES, RERANK_WEIGHTS, SearchIndex
from knowledge.schema import Entry
from knowledge.search import DEFAULT_ANSWER_THRESHOLD, DEFAULT_SUGGEST_THRESHOLD, KnowledgeBase, _entry_text


def test_weights_match_features_and_thresholds_are_ordered() -> None:
    assert len(RERANK_WEIGHTS) == len(FEATURES)
    half = len(FEATURES) // 2
    assert [f.split("_", 1)[1] for f in FEATURES[:half]] == [f.split("_", 1)[1] for f in FEATURES[half:]]
    assert 0.0 <= DEFAULT_SUGGEST_THRESHOLD <= DEFAULT_ANSWER_THRESHOLD <= 1.0


def test_entry_text_skips_an_answer_that_repeats_the_question() -> None:
    same = Entry(id="a", question="营业执照怎么办", answer="营业执照怎么办")
    assert _entry_text(same) == ""
    full = Entry(id="b", question="q", answer="答案正文", category="分类", tags=("标签",), issuer="区商务委")
    assert _entry_text(full) == "答案正文 分类 标签 区商务委"


def test_answer_text_breaks_a_tie_between_similar_questions() -> None:
    entries = [
        Entry(
            id="rent", question="疫情期间的政策还能申请吗", answer="承租国有房屋的小微企业可申请减免租金。"
        ),
        Entry(id="social", question="疫情期间的政策还有吗", answer="阶段性减免企业社会保险费已经结束。"),
    ]
    kb = KnowledgeBase(entries)
    assert kb.search("疫情期间国有房屋租金减免还有吗")[0].entry.id == "rent"
    assert kb.search("疫情期间社会保险费减免还有吗")[0].entry.id == "social"


def test_sibling_feature_is_the_same_for_every_phrasing_of_an_entry() -> None:
    a = get_analyzer()
    texts = ["外国人工作许可怎么办", "外籍员工工作许可证在哪申请", "营业执照怎么办理"]
    idx = SearchIndex(texts, [0, 0, 1], a)
    docs, _, _, feats = idx.search_docs(a.analyze("外国员工工作许可怎么申请"))
    col = FEATURES.index("short_sibling")
    own = feats[np.isin(docs, [0, 1]), col]
    assert len(own) == 2 and own[0] == own[1] > 0
    assert feats[docs == 2, col].tolist() in ([], [0.0])


def test_long_documents_use_the_long_half_of_the_features() -> None:
    a = get_analyzer()
    long_text = "办理外国人工作许可需要登录一网通办提交申请材料，审批通过后领取工作许可证，" * 3
    idx = SearchIndex([long_text, "外国人工作许可怎么办"], [0, 1], a)
    docs, _, _, feats = idx.search_docs(a.analyze("外国人工作许可怎么办理"))
    half = len(FEATURES) // 2
    for d, row in zip(docs.tolist(), feats, strict=True):
        if d == 0:
            assert not row[:half].any() and row[half] == 1.0
        else:
            assert not row[half:].any() and row[0] == 1.0


def test_one_keyword_is_offered_as_choices_not_answered():
    """A bare keyword matches many entries perfectly; answering one of them would be a confident guess."""
    from pathlib import Path

    from knowledge.loaders import load_dir
    from knowledge.search import KnowledgeBase

    entries = load_dir(Path(__file__).resolve().parents[3] / "knowledge" / "data")
    kb = KnowledgeBase(entries)
    loose = KnowledgeBase(entries, min_answer_tokens=1)
    for word in ("融资", "营业执照"):
        assert loose.decide(word).kind == "answer"  # what the re-ranker alone would do
        assert kb.decide(word).kind == "suggest"
    assert kb.decide("外籍人才工作许可怎么办").kind == "answer"
