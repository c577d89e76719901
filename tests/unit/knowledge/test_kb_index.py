"""Index tests: sparse BM25 equals rank_bm25, TF-IDF cosine is a cosine, confidences are probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from knowledge.analysis import get_analyzer
from knowledge.index import BM25Matrix, SearchIndex, TfidfMatrix, _top_k

CORPUS = [
    "外籍 人才 如何 办理 工作 许可",
    "外国人 工作 许可 怎么 办",
    "营业 执照 怎么 办理",
    "居住证 积分 怎么 申请 申请",
    "高新 技术 企业 认定 需要 什么 材料",
    "社保 公积金 怎么 缴纳",
    "落户 条件",
    "工作 工作 工作",
]
QUERIES = ["工作 许可 怎么 办", "申请 积分", "怎么 怎么 办理", "完全 不相关", "工作"]


@pytest.mark.parametrize("query", QUERIES)
def test_sparse_bm25_equals_rank_bm25_okapi(query: str) -> None:
    docs = [d.split() for d in CORPUS]
    ours = BM25Matrix(docs, k1=1.5, b=0.75, idf="okapi", epsilon=0.25)
    ref = BM25Okapi(docs, k1=1.5, b=0.75, epsilon=0.25)
    np.testing.assert_allclose(
        ours.scores(query.split()), ref.get_scores(query.split()), rtol=1e-10, atol=1e-12
    )


def test_bm25_matches_with_other_parameters() -> None:
    docs = [d.split() for d in CORPUS]
    ours = BM25Matrix(docs, k1=0.9, b=0.4, idf="okapi")
    ref = BM25Okapi(docs, k1=0.9, b=0.4)
    np.testing.assert_allclose(ours.scores(["工作", "许可"]), ref.get_scores(["工作", "许可"]), rtol=1e-10)


def test_self_score_bounds_the_exact_match() -> None:
    docs = [d.split() for d in CORPUS]
    bm = BM25Matrix(docs, k1=1.2, b=0.75, idf="lucene")
    q = CORPUS[2].split()
    s = bm.scores(q)
    assert s.argmax() == 2
    assert 0.8 < s[2] / bm.self_score(q) < 1.25
    # Unknown words lower the normalised score: they count in the ceiling but match nothing.
    q2 = q + ["火星"]
    assert bm.scores(q2)[2] / bm.self_score(q2) < s[2] / bm.self_score(q)


def test_tfidf_cosine_in_unit_range_and_exact_match_is_one() -> None:
    docs = [list(d.replace(" ", "")) for d in CORPUS]
    m = TfidfMatrix(docs)
    s = m.scores(docs[3])
    assert s.argmax() == 3 and s[3] == pytest.approx(1.0)
    assert (s >= 0).all() and (s <= 1 + 1e-9).all()
    assert m.scores(["火", "星"]).max() == 0.0


def test_search_index_confidence_in_unit_interval() -> None:
    a = get_analyzer()
    texts = ["外籍人才如何办理工作许可", "营业执照怎么办理", "居住证积分怎么申请", "社保怎么缴纳"]
    idx = SearchIndex(texts, [0, 1, 2, 3], a)
    docs, fused, conf, feats = idx.search_docs(a.analyze("老外工作许可咋办"))
    assert docs[0] == 0
    assert ((conf >= 0) & (conf <= 1)).all()
    assert list(conf) == sorted(conf, reverse=True)
    assert feats.shape[0] == len(docs)


def test_empty_index_and_empty_query() -> None:
    a = get_analyzer()
    idx = SearchIndex([], [], a)
    assert len(idx.search_docs(a.analyze("落户"))[0]) == 0
    idx = SearchIndex(["落户"], [0], a)
    assert len(idx.search_docs(a.analyze(""))[0]) == 0


def test_top_k_takes_the_lowest_indices_of_a_tie_at_the_cut() -> None:
    rng = np.random.default_rng(7)
    scores = rng.integers(-1, 6, size=400).astype(float)  # many ties at every value, zeros and negatives
    positive = [i for i in range(len(scores)) if scores[i] > 0]
    for k in (1, 5, 37, 120, 399, 400, 500):
        want = sorted(positive, key=lambda i: (-scores[i], i))[:k]
        assert sorted(_top_k(scores, k).tolist()) == sorted(want)


def _with_filler(twins: list[str]) -> list[str]:
    # The twins last: with 180 fillers the candidate cut is a partial selection.
    return [f"第{i}号楼的{w}怎么办理" for i in range(60) for w in ("停车证", "门禁卡", "快递柜")] + twins


def test_tied_documents_come_in_document_order_whatever_the_last_float_bits() -> None:
    """Texts worded alike (here: the same but for punctuation) tie; the lower document number wins, in either
    order of loading, and a difference in the last bits of a score (which varies between CPUs) does not
    decide it."""
    a = get_analyzer()
    pair = ["一夫当关下一句是什么", "一夫当关下一句是什么？"]
    for twins in (pair, pair[::-1]):
        texts = _with_filler(twins)
        idx = SearchIndex(texts, list(range(len(texts))), a)
        q = a.analyze("一夫当关下一句")
        docs, fused, conf, _ = idx.search_docs(q, k=5)
        assert abs(conf[0] - conf[1]) < 1e-12
        assert docs[:2].tolist() == [180, 181]
        # Nudge the later twin's word score up by a last-bit amount, as another CPU's float sums might.
        nudge = np.where(np.arange(len(texts)) == 181, 1e-13, 0.0)
        real = idx.bm25.scores
        idx.bm25.scores = lambda toks, real=real, nudge=nudge: real(toks) + nudge
        assert idx.search_docs(q, k=5)[0][:2].tolist() == [180, 181]


def test_a_tie_goes_to_the_document_worded_like_the_question() -> None:
    """Texts that differ only in a stop word analyse alike; the one that has the question's wording wins."""
    a = get_analyzer()
    pair = ["一夫当关的下一句是什么", "一夫当关下一句是什么"]
    assert a.analyze(pair[0]).tokens == a.analyze(pair[1]).tokens
    for question, meant in (("一夫当关下一句", pair[1]), ("一夫当关的下一句", pair[0])):
        for twins in (pair, pair[::-1]):
            texts = _with_filler(twins)
            idx = SearchIndex(texts, list(range(len(texts))), a)
            docs, _, conf, _ = idx.search_docs(a.analyze(question), k=5)
            assert abs(conf[0] - conf[1]) < 1e-12
            assert texts[int(docs[0])] == meant
