"""The single_* block: character criticality and its weights apply to entries with one phrasing only."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from knowledge.analysis import get_analyzer
from knowledge.index import (
    CHAR_CRIT_FILE,
    FEATURES,
    PASSAGE_AT,
    RERANK_WEIGHTS,
    SINGLE_AT,
    SearchIndex,
    _crit_columns,
    char_criticality,
)
from knowledge.loaders import load_dir
from knowledge.search import KnowledgeBase

DATA = Path(__file__).resolve().parents[3] / "knowledge" / "data"


def _without_single() -> np.ndarray:
    w = np.asarray(RERANK_WEIGHTS, dtype=np.float64).copy()
    w[SINGLE_AT:PASSAGE_AT] = 0.0
    return w


def test_the_table_is_single_characters_sorted_with_its_recipe() -> None:
    lines = CHAR_CRIT_FILE.read_text(encoding="utf-8").splitlines()
    header = [x for x in lines if x.startswith("#")]
    assert any("bench/kb_eval.py --fit-crit" in x for x in header)
    rows = [x.split("\t") for x in lines if not x.startswith("#")]
    assert len(rows) > 1000 and all(len(r) == 2 and len(r[0]) == 1 for r in rows)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    table = char_criticality()
    assert table is char_criticality()  # read once
    assert len(table) == len(rows) and all(math.isfinite(v) for v in table.values())
    # A place name changes the question, a question particle hardly does.
    assert table["海"] > 1.0 > 0.0 > table["吗"]


def test_crit_columns_sum_and_max_and_unknown_characters_count_zero() -> None:
    crit = {"甲": 2.0, "乙": -1.0}
    idf = {"甲": 3.0, "乙": 1.0, "丙": 5.0}
    assert _crit_columns(set(), crit, idf) == (0.0, 0.0, 0.0, 0.0)
    assert _crit_columns({"甲", "乙", "丙"}, crit, idf) == (1.0, 2.0, 5.0, 6.0)
    assert _crit_columns({"丙"}, crit, idf) == (0.0, 0.0, 0.0, 0.0)


def test_single_block_only_for_a_short_document_of_an_entry_with_one_phrasing() -> None:
    a = get_analyzer()
    texts = ["上海哪里办营业执照", "北京哪里办营业执照", "营业执照在哪办理"]
    q = a.analyze("上海营业执照在哪里办")
    # One phrasing per entry: the single_* copy of the base features plus the criticality columns.
    idx = SearchIndex(texts, [0, 1, 2], a)
    docs, _, _, feats = idx.search_docs(q)
    block = feats[:, SINGLE_AT:PASSAGE_AT]
    assert (block[:, 0] == 1.0).all()
    n_base = FEATURES.index("single_crit_sum") - SINGLE_AT
    assert np.array_equal(block[:, :n_base], feats[:, :n_base])
    crit_sum = FEATURES.index("single_crit_sum")
    # 北京 instead of 上海 is a different question: more criticality unmatched than for the same city.
    assert feats[docs == 1, crit_sum][0] > feats[docs == 0, crit_sum][0]
    # The same texts as phrasings of one entry (our own FAQ: every entry has several): no single_* column.
    docs, _, _, feats = SearchIndex(texts, [0, 0, 0], a).search_docs(q)
    assert not feats[:, SINGLE_AT:PASSAGE_AT].any()
    # An index of answer texts never has it either.
    docs, _, _, feats = SearchIndex(texts, [0, 1, 2], a, passages=True).search_docs(q)
    assert not feats[:, :PASSAGE_AT].any()


def test_a_phrasing_identical_to_the_query_keeps_its_old_confidence() -> None:
    a = get_analyzer()
    texts = ["上海哪里办营业执照", "北京哪里办营业执照", "营业执照在哪办理", "外国人工作许可怎么办"]
    # Four one-phrasing entries among an entry of five phrasings: session 19's block (RERANK_WEIGHTS).
    more = ["公司注销要什么材料", "注销公司需要哪些资料", "怎么注销公司", "公司注销流程", "注销企业怎么办"]
    owners = [0, 1, 2, 3, 4, 4, 4, 4, 4]
    new = SearchIndex(texts + more, owners, a)
    old = SearchIndex(texts + more, owners, a, weights=_without_single())
    assert not new.one_phrasing
    q = a.analyze("上海哪里办营业执照")
    d_new, _, c_new, _ = new.search_docs(q)
    d_old, _, c_old, _ = old.search_docs(q)
    assert d_new[0] == d_old[0] == 0
    assert abs(c_new[0] - c_old[0]) < 1e-3


def test_in_an_index_of_one_phrasing_questions_it_keeps_about_its_old_confidence() -> None:
    # ONE_PHRASING_BLOCK's offset keeps the out-of-scope answer rate on LCQMC dev instead (session 20).
    a = get_analyzer()
    texts = ["上海哪里办营业执照", "北京哪里办营业执照", "营业执照在哪办理", "外国人工作许可怎么办"]
    new = SearchIndex(texts, [0, 1, 2, 3], a)
    old = SearchIndex(texts, [0, 1, 2, 3], a, weights=_without_single())
    assert new.one_phrasing
    q = a.analyze("上海哪里办营业执照")
    d_new, _, c_new, _ = new.search_docs(q)
    d_old, _, c_old, _ = old.search_docs(q)
    assert d_new[0] == d_old[0] == 0
    assert abs(c_new[0] - c_old[0]) < 0.01


def test_our_own_knowledge_base_ranks_exactly_as_without_the_block() -> None:
    entries = load_dir(DATA)
    new = KnowledgeBase(entries)
    old = KnowledgeBase(entries, weights=_without_single())
    assert not new._index.doc_share.any()  # every entry of ours has several phrasings
    for q in ("营业执照怎么办理", "外国人来上海工作要办什么", "公司注销需要哪些材料", "停车费多少钱"):
        h_new, h_old = new.search(q, 5), old.search(q, 5)
        assert [h.entry.id for h in h_new] == [h.entry.id for h in h_old]
        assert [h.confidence for h in h_new] == [h.confidence for h in h_old]
