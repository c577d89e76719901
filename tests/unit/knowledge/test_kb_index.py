"""Index tests: sparse BM25 equals rank_bm25, TF-IDF cosine is a cosine, confidences are probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from knowledge.analysis import get_analyzer
from knowledge.index import BM25Matrix, SearchIndex, TfidfMatrix

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
