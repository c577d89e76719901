"""single_dens_*: a one-phrasing candidate's neighbourhood in the index (hubness), label-free and lazy."""

from __future__ import annotations

import numpy as np
import pytest

from knowledge.analysis import get_analyzer
from knowledge.index import (
    DENS_CANDIDATES,
    DENS_NEIGHBOURS,
    FEATURES,
    ONE_PHRASING_BLOCK,
    PASSAGE_AT,
    RERANK_WEIGHTS,
    SINGLE_AT,
    SearchIndex,
    one_phrasing_weights,
)

DENS = [FEATURES.index(f"single_dens_{n}") for n in (1, 3, 10)]

TEXTS = [
    "上海哪里办营业执照",
    "上海在哪里办理营业执照",
    "上海营业执照去哪办",
    "北京哪里办营业执照",
    "营业执照丢了怎么补办",
    "外国人工作许可怎么办",
    "外国人来华工作许可证在哪申请",
    "公司注销需要哪些材料",
    "个体户怎么注销",
    "停车费多少钱一个小时",
    "社保断交了怎么补缴",
    "公积金怎么提取",
    "小孩上学要什么材料",
    "新房装修有什么补贴",
]


def _brute(idx: SearchIndex, d: int) -> np.ndarray:
    """The definition, computed the long way: the document's own text as a query, itself left out."""
    a = get_analyzer()
    docs, fused, _, _ = idx.search_docs(a.analyze(TEXTS[d]), None, len(TEXTS))
    v = sorted((float(f) for x, f in zip(docs, fused, strict=True) if x != d), reverse=True)[:DENS_NEIGHBOURS]
    v += [0.0] * (DENS_NEIGHBOURS - len(v))
    return np.array([v[0], np.mean(v[:3]), np.mean(v)])


def test_density_is_the_documents_best_scores_against_the_others() -> None:
    idx = SearchIndex(TEXTS, list(range(len(TEXTS))), get_analyzer())
    for d in range(len(TEXTS)):
        assert np.allclose(idx.density(d), _brute(idx, d))
    # Three ways of asking where to register in Shanghai are each other's near-twins; a lone question is not.
    assert idx.density(0)[0] > 2 * idx.density(12)[0]
    # Fewer than ten neighbours with any score: the missing ones count 0.
    assert idx.density(12)[2] < idx.density(12)[1]


def test_the_index_mean_is_over_an_even_sample_and_features_are_centred_on_it() -> None:
    a = get_analyzer()
    idx = SearchIndex(TEXTS, list(range(len(TEXTS))), a)
    # Fewer documents than DENS_SAMPLE: the sample is all of them.
    assert np.allclose(idx.dens_mean, np.mean([idx.density(d) for d in range(len(TEXTS))], axis=0))
    docs, fused, _, feats = idx.search_docs(a.analyze("上海营业执照在哪里办"))
    order = np.lexsort((docs, -np.round(fused, 9)))
    best, rest = order[:DENS_CANDIDATES], order[DENS_CANDIDATES:]
    assert len(rest) > 0
    for r in best:
        assert np.allclose(feats[r, DENS], idx.density(int(docs[r])) - idx.dens_mean)
    # Candidates beyond the best DENS_CANDIDATES by fused score get the index's average: 0.
    assert not feats[rest][:, DENS].any()


def test_worked_out_once_per_document(monkeypatch: pytest.MonkeyPatch) -> None:
    a = get_analyzer()
    idx = SearchIndex(TEXTS, list(range(len(TEXTS))), a)
    assert not np.isnan(idx._dens).any()  # under DENS_SAMPLE documents: all worked out for the mean
    idx._dens[:] = np.nan  # as for the documents outside the sample of a large index
    calls: list[int] = []
    real = SearchIndex._fused

    def counting(self, tokens, chars):
        calls.append(1)
        return real(self, tokens, chars)

    monkeypatch.setattr(SearchIndex, "_fused", counting)
    q = a.analyze("上海营业执照在哪里办")
    idx.search_docs(q)
    first = len(calls)
    idx.search_docs(q)
    assert first > 1  # the query's own pass plus the neighbourhoods not known yet ...
    assert len(calls) - first == 1  # ... and the second time only the query's


def test_only_for_one_phrasing_questions() -> None:
    a = get_analyzer()
    q = a.analyze("上海营业执照在哪里办")
    # Our own FAQ: every entry has several phrasings, so there is nothing to compute and nothing in the row.
    own = SearchIndex(TEXTS, [i // 2 for i in range(len(TEXTS))], a)
    assert own._dens is None and not own.dens_mean.any()
    assert not own.search_docs(q)[3][:, DENS].any()
    # An index of answer texts never has it either.
    passages = SearchIndex(TEXTS, list(range(len(TEXTS))), a, passages=True)
    assert passages._dens is None
    assert not passages.search_docs(q)[3][:, DENS].any()


def test_a_question_with_near_twins_in_the_index_is_trusted_less() -> None:
    a = get_analyzer()
    idx = SearchIndex(TEXTS, list(range(len(TEXTS))), a)
    w = one_phrasing_weights()
    w[DENS] = 0.0
    without = SearchIndex(TEXTS, list(range(len(TEXTS))), a, weights=w)
    q = a.analyze("上海营业执照哪里可以办")
    d_new, _, c_new, f_new = idx.search_docs(q)
    d_old, _, c_old, _ = without.search_docs(q)
    conf_new = dict(zip(d_new.tolist(), c_new.tolist(), strict=True))
    conf_old = dict(zip(d_old.tolist(), c_old.tolist(), strict=True))
    row = int(np.flatnonzero(d_new == 0)[0])
    assert f_new[row, DENS[0]] > 0  # denser than the index's average ...
    assert conf_new[0] < conf_old[0]  # ... so less confident than without the columns


def test_an_index_of_one_phrasing_questions_has_its_own_block() -> None:
    a = get_analyzer()
    q = a.analyze("上海营业执照在哪里办")
    alone = SearchIndex(TEXTS, list(range(len(TEXTS))), a)
    assert alone.one_phrasing and alone._dens is not None
    assert np.array_equal(alone.weights[SINGLE_AT:PASSAGE_AT], ONE_PHRASING_BLOCK)
    assert np.array_equal(alone.weights[:SINGLE_AT], RERANK_WEIGHTS[:SINGLE_AT])
    # A few one-phrasing entries among many-phrasing ones (staff adding a question to our FAQ): session 19's
    # block, no neighbourhoods worked out, nothing in the columns.
    owners = [0, 1, 2] + [3 + (i - 3) // 4 for i in range(3, len(TEXTS))]
    mixed = SearchIndex(TEXTS, owners, a)
    assert mixed.doc_share.any() and not mixed.one_phrasing and mixed._dens is None
    assert np.array_equal(mixed.weights, RERANK_WEIGHTS)
    assert not mixed.search_docs(q)[3][:, DENS].any()
    # Weights given explicitly (bench/kb_eval.py fitting) are kept as given.
    given = np.asarray(RERANK_WEIGHTS, dtype=np.float64) * 0.5
    assert np.array_equal(SearchIndex(TEXTS, list(range(len(TEXTS))), a, weights=given).weights, given)
