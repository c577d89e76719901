"""Answer-field search, entry-level sibling feature, short/long feature halves and the answer threshold."""

from __future__ import annotations

import numpy as np

from knowledge.analysis import get_analyzer
from knowledge.index import FEATURES, LONG_AT, N_BASE, PASSAGE_AT, RERANK_WEIGHTS, SINGLE_AT, SearchIndex
from knowledge.schema import Entry
from knowledge.search import DEFAULT_ANSWER_THRESHOLD, DEFAULT_SUGGEST_THRESHOLD, KnowledgeBase, _entry_text


def test_weights_match_features_and_thresholds_are_ordered() -> None:
    assert len(RERANK_WEIGHTS) == len(FEATURES)
    base = [f.split("_", 1)[1] for f in FEATURES[:N_BASE]]
    assert [f.split("_", 1)[1] for f in FEATURES[LONG_AT:SINGLE_AT]] == base
    assert [f.split("_", 1)[1] for f in FEATURES[SINGLE_AT : SINGLE_AT + N_BASE]] == base
    assert [f.split("_", 1)[1] for f in FEATURES[PASSAGE_AT : PASSAGE_AT + N_BASE]] == base
    assert all(f.startswith("passage_") for f in FEATURES[PASSAGE_AT:])
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
    idx = SearchIndex([long_text, "外国人工作许可怎么办"], [0, 1], a, passages=False)
    docs, _, _, feats = idx.search_docs(a.analyze("外国人工作许可怎么办理"))
    for d, row in zip(docs.tolist(), feats, strict=True):
        assert not row[PASSAGE_AT:].any()
        if d == 0:
            assert not row[:LONG_AT].any() and row[LONG_AT] == 1.0
        else:
            # (an entry with one phrasing: its single_* copy, see test_char_crit.py)
            assert not row[LONG_AT:SINGLE_AT].any() and not row[PASSAGE_AT:].any() and row[0] == 1.0


def test_an_index_of_answer_texts_uses_the_passage_features() -> None:
    """Mostly long documents: every document, short answers too, is scored as a passage."""
    a = get_analyzer()
    texts = [
        "不能。已登记为租赁性质的车辆，在车辆转让或报废后，更新指标的性质仍为租赁，不能转回非营运。"
        "如有疑问可以咨询市交通委员会的服务热线，或者登录交通委网站查询租赁车辆管理的具体规定和办理流程。",
        "申报材料包括：1.申请表原件一份；2.身份证明；3.近期二寸彩色免冠照片。材料齐全的当场受理，"
        "不齐全的一次性告知需要补正的内容，申请人补齐以后重新提交，审核通过后二十个工作日内公布结果。",
        "办理地点在各区政务服务中心综合窗口，工作日上午九点至下午五点受理，也可以在一网通办网上提交。"
        "审核通过后五个工作日内发放证书，证书可以邮寄到家，也可以本人持身份证件到原窗口领取。",
        "不收费。",
        "暴雨天气尽量减少外出，远离广告牌、临时搭建物和大树，不要在地下通道、涵洞等低洼处停留，"
        "车辆遇到积水不要强行通过，注意收听天气预报和预警信息。",
    ]
    idx = SearchIndex(texts, [0, 1, 2, 3, 4], a)
    assert idx.passages
    q = a.analyze("租赁性质的车辆更新时能否转回非营运？")
    docs, _, conf, feats = idx.search_docs(q)
    assert docs[0] == 0
    assert not feats[:, :PASSAGE_AT].any() and (feats[:, PASSAGE_AT] == 1.0).all()
    yes_no = FEATURES.index("passage_yes_no")
    assert feats[0, yes_no] == 1.0
    assert ((conf >= 0) & (conf <= 1)).all()
    docs, _, _, _ = idx.search_docs(a.analyze("申报需要提交哪些材料"))
    assert docs[0] == 1
    # An index of questions with one long text is not an index of passages.
    assert not SearchIndex(["外国人工作许可怎么办", "营业执照怎么办理", texts[1]], [0, 1, 2], a).passages


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


def test_question_word_mismatch_counts_only_for_an_entry_with_one_phrasing() -> None:
    from knowledge.index import question_mask

    assert question_mask("营业执照是什么") != question_mask("营业执照怎么办")
    assert question_mask("营业执照去哪办") == question_mask("营业执照在哪里办")
    a = get_analyzer()
    col = FEATURES.index("short_qw_mismatch")
    gap = FEATURES.index("short_len_gap")
    # One phrasing per entry: a question asking "what" does not paraphrase one asking "how".
    idx = SearchIndex(["营业执照是什么", "营业执照怎么办"], [0, 1], a)
    docs, _, _, feats = idx.search_docs(a.analyze("营业执照怎么申请"))
    assert docs[0] == 1
    assert feats[docs == 1, col][0] == 0.0 and feats[docs == 0, col][0] == 1.0
    assert feats[docs == 0, gap][0] > 0.0
    # Four phrasings of one entry (a curated topic that answers several kinds of question): no penalty.
    idx = SearchIndex(["营业执照是什么", "执照", "营业执照", "办执照"], [0, 0, 0, 0], a)
    docs, _, _, feats = idx.search_docs(a.analyze("营业执照怎么申请"))
    assert feats[:, col].max() == 0.0 and feats[:, gap].max() == 0.0
