"""Passage features of the best single sentence (sent_bi, sent_words; docs/bench/kb.md, round 10b)."""

from __future__ import annotations

import pytest

from knowledge.analysis import get_analyzer
from knowledge.index import FEATURES, SearchIndex, _best_sentence, _sentences


def test_sentences_split_on_chinese_and_ascii_sentence_ends_and_line_breaks() -> None:
    a = get_analyzer()
    parts = _sentences("营业执照在区政务服务中心办理。需要身份证！可以网上办吗？可以；\n邮寄到家\n\n", a)
    assert len(parts) == 5
    bigrams, words = parts[0]
    expected = get_analyzer().analyze("营业执照在区政务服务中心办理")  # the analysed form, synonyms folded
    assert words == frozenset(expected.tokens)
    assert "务中" in bigrams and bigrams <= {
        expected.chars[i : i + 2] for i in range(len(expected.chars) - 1)
    }
    assert parts[1][1] == frozenset(a.analyze("需要身份证").tokens)
    # No bigram crosses a sentence end: the last character of one sentence and the first of the next.
    joined = expected.chars[-1] + a.analyze("需要身份证").chars[0]
    assert all(joined not in b for b, _ in parts)
    # A text without a sentence end is one sentence; punctuation alone is no sentence.
    assert len(_sentences("营业执照在区政务服务中心办理", a)) == 1
    assert len(_sentences("。。！", a)) == 1


def test_best_sentence_takes_the_best_single_sentence_not_the_sum() -> None:
    q_bi = {"ab", "bc", "cd", "de"}
    idf = {"x": 3.0, "y": 1.0}
    split = [(frozenset({"ab", "bc"}), frozenset({"x"})), (frozenset({"cd", "de"}), frozenset({"y"}))]
    assert _best_sentence(split, q_bi, idf, 4.0) == (0.5, 0.75)
    together = [*split, (frozenset({"ab", "bc", "cd", "zz"}), frozenset({"x", "y", "z"}))]
    assert _best_sentence(together, q_bi, idf, 4.0) == (0.75, 1.0)
    assert _best_sentence([], q_bi, idf, 4.0) == (0.0, 0.0)


def test_a_passage_that_answers_in_one_sentence_scores_higher_on_the_sentence_columns() -> None:
    a = get_analyzer()
    one = (
        "外国人工作许可证可以在区政务服务中心办理。"
        "其他事项请咨询服务热线，工作日上午九点至下午五点有人接听，节假日不接听，谢谢理解和支持。"
    )
    spread = (
        "外国人来京工作应当遵守相关规定。工作许可的审批由市科委负责。"
        "证件可以到各区政务服务中心领取，领取时需要携带本人护照原件和复印件，以及单位出具的介绍信。"
    )
    other = "暴雨天气尽量减少外出，远离广告牌、临时搭建物和大树，不要在地下通道、涵洞等低洼处停留。" * 2
    idx = SearchIndex([one, spread, other], [0, 1, 2], a)
    assert idx.passages
    docs, _, _, feats = idx.search_docs(a.analyze("外国人工作许可证在哪里办理"))
    row = {int(d): f for d, f in zip(docs, feats, strict=True)}
    sb, sw = FEATURES.index("passage_sent_bi"), FEATURES.index("passage_sent_words")
    assert row[0][sb] > row[1][sb] > 0
    assert row[0][sw] > row[1][sw] > 0
    assert row[0][sw] < 1  # 哪里 is in no sentence
    # Every word of this query is in the first sentence of `one`; `spread` has them in three sentences.
    docs, _, _, feats = idx.search_docs(a.analyze("外国人工作许可证在区政务服务中心办理"))
    row = {int(d): f for d, f in zip(docs, feats, strict=True)}
    assert row[0][sw] == pytest.approx(1.0)
    assert row[1][sw] < 1 and row[0][sb] > row[1][sb]


def test_an_index_of_questions_leaves_the_sentence_columns_at_zero() -> None:
    a = get_analyzer()
    idx = SearchIndex(["外国人工作许可怎么办", "营业执照怎么办理"], [0, 1], a)
    assert not idx.passages and idx.long_sentences == []
    _, _, _, feats = idx.search_docs(a.analyze("外国人工作许可怎么办理"))
    assert not feats[:, FEATURES.index("passage_sent_bi")].any()
    assert not feats[:, FEATURES.index("passage_sent_words")].any()


def test_passage_bigram_columns_count_as_the_bigram_sets_do() -> None:
    """Passages count shared bigrams by substring test and keep their bigram counts and opening bigrams from
    the build (no set of a passage's bigrams per query): the columns must equal the set-based definition,
    including a one-character query (whose "bigram" is the character itself, found in no passage bigram)."""
    from knowledge.index import LEAD_CHARS, _bigram_set

    a = get_analyzer()
    texts = [
        "外国人工作许可证可以在区政务服务中心办理，办理时需要护照原件。工作许可证有效期一般为一年。",
        "营业执照遗失后可以在一网通办申请补领，补领营业执照需要法定代表人签字。" * 3,
        "户",  # a one-character passage takes the set path
    ]
    idx = SearchIndex(texts, [0, 1, 2], a, passages=True)
    assert idx.passages
    cols = {n: FEATURES.index(f"passage_{n}") for n in ("q_bi_cover", "d_bi_cover", "lead_bi")}
    for question in ("营业执照丢了怎么补办", "工作许可证去哪里办理", "户", "照"):  # 照 is in two passages
        q = a.analyze(question)
        docs, fused, cos, feats = idx.search_docs(q)
        qb = _bigram_set(q.chars)
        for d, row in zip(docs, feats, strict=True):
            dc = idx.doc_chars[int(d)]
            db = _bigram_set(dc)
            lead = dc[:LEAD_CHARS]
            lead_set = {lead[i : i + 2] for i in range(len(lead) - 1)}
            assert row[cols["q_bi_cover"]] == len(qb & db) / max(len(qb), 1)
            assert row[cols["d_bi_cover"]] == len(qb & db) / max(len(db), 1)
            assert row[cols["lead_bi"]] == len(qb & lead_set) / max(len(qb), 1)
