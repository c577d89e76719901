"""Sparse retrieval index: word BM25 and char n-gram TF-IDF over every phrasing, plus a calibrated re-ranker."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .analysis import Analysis, Analyzer, char_ngrams


@dataclass(frozen=True, slots=True)
class IndexParams:
    """Scoring knobs; the defaults were chosen on LCQMC dev and our own data (bench/kb_eval.py --tune)."""

    k1: float = 1.2
    b: float = 0.75
    idf: str = "lucene"  # "okapi" reproduces rank_bm25.BM25Okapi exactly (negative idf floored)
    char_n_min: int = 1
    char_n_max: int = 2
    w_bm25: float = 0.5
    w_char: float = 0.5
    candidates: int = 30
    # Entry-level "answer field" (answer text, category, tags, policy fields): its own BM25, weaker in fusion.
    ans_k1: float = 1.2
    ans_b: float = 0.5
    w_ans: float = 0.15


class BM25Matrix:
    """Okapi BM25 with the per-document term weights precomputed in a CSC matrix (docs x terms)."""

    def __init__(
        self,
        docs: Sequence[Sequence[str]],
        k1: float = 1.5,
        b: float = 0.75,
        idf: str = "okapi",
        epsilon: float = 0.25,
    ) -> None:
        self.k1, self.b = k1, b
        self.vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        vals: list[int] = []
        lengths = np.zeros(len(docs), dtype=np.float64)
        for i, doc in enumerate(docs):
            lengths[i] = len(doc)
            for term, tf in Counter(doc).items():
                j = self.vocab.setdefault(term, len(self.vocab))
                rows.append(i)
                cols.append(j)
                vals.append(tf)
        n_docs, n_terms = len(docs), len(self.vocab)
        self.n_docs = n_docs
        tf = sparse.csr_matrix(
            (
                np.asarray(vals, dtype=np.float64),
                (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
            ),
            shape=(n_docs, n_terms),
        )
        self.avgdl = float(lengths.mean()) if n_docs and lengths.sum() > 0 else 1.0
        df = np.bincount(np.asarray(cols, dtype=np.int64), minlength=n_terms).astype(np.float64)
        self.idf = self._idf(df, n_docs, idf, epsilon)
        self.idf_mode, self.epsilon = idf, epsilon
        # Unknown query terms count in the self-match score as if they were the rarest term.
        self.unknown_idf = float(self._idf(np.zeros(1), n_docs, "lucene", epsilon)[0]) if n_docs else 1.0
        norm = k1 * (1.0 - b + b * lengths / self.avgdl)
        data = tf.data
        row_of = np.repeat(np.arange(n_docs), np.diff(tf.indptr))
        w = data * (k1 + 1.0) / (data + norm[row_of])
        w *= self.idf[tf.indices]
        self.W = sparse.csr_matrix((w, tf.indices, tf.indptr), shape=tf.shape).tocsc()

    @staticmethod
    def _idf(df: np.ndarray, n: int, mode: str, epsilon: float) -> np.ndarray:
        """Okapi idf (rank_bm25 semantics) or the non-negative Lucene variant."""
        if mode == "okapi":
            idf = np.log(n - df + 0.5) - np.log(df + 0.5)
            if idf.size:
                eps = epsilon * float(idf.mean())
                idf = np.where(idf < 0, eps, idf)
            return idf
        return np.log1p((n - df + 0.5) / (df + 0.5))

    def query_terms(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Column ids and counts of the known query terms, plus the unknown terms."""
        counts = Counter(tokens)
        cols, cnt, unknown = [], [], []
        for t, c in counts.items():
            j = self.vocab.get(t)
            if j is None:
                unknown.append(t)
            else:
                cols.append(j)
                cnt.append(c)
        return np.asarray(cols, dtype=np.int64), np.asarray(cnt, dtype=np.float64), unknown

    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for the query (repeated query terms count repeatedly, as in rank_bm25)."""
        cols, cnt, _ = self.query_terms(tokens)
        if cols.size == 0:
            return np.zeros(self.n_docs)
        return np.asarray(self.W[:, cols] @ cnt).ravel()

    def self_score(self, tokens: Sequence[str]) -> float:
        """BM25 of the query against itself as an average-length document: the ceiling used to normalise."""
        counts = Counter(tokens)
        ql = float(len(tokens))
        s = 0.0
        for t, c in counts.items():
            j = self.vocab.get(t)
            idf = float(self.idf[j]) if j is not None else self.unknown_idf
            tf = float(c)
            s += (
                c
                * max(idf, 0.0)
                * tf
                * (self.k1 + 1.0)
                / (tf + self.k1 * (1 - self.b + self.b * ql / self.avgdl))
            )
        return s


class TfidfMatrix:
    """L2-normalised sublinear TF-IDF rows (CSC) for cosine similarity against a query."""

    def __init__(self, docs: Sequence[Sequence[str]]) -> None:
        self.vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for i, doc in enumerate(docs):
            for term, tf in Counter(doc).items():
                j = self.vocab.setdefault(term, len(self.vocab))
                rows.append(i)
                cols.append(j)
                vals.append(tf)
        n = len(docs)
        self.n_docs = n
        m = sparse.csr_matrix(
            (
                np.asarray(vals, dtype=np.float64),
                (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)),
            ),
            shape=(n, len(self.vocab)),
        )
        df = np.bincount(np.asarray(cols, dtype=np.int64), minlength=len(self.vocab)).astype(np.float64)
        self.idf = np.log((n + 1.0) / (df + 1.0)) + 1.0
        self.unknown_idf = math.log(n + 1.0) + 1.0
        m.data = (1.0 + np.log(m.data)) * self.idf[m.indices]
        norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        m = sparse.diags(1.0 / norms) @ m
        self.M = sparse.csc_matrix(m)

    def query_vector(self, grams: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Known columns and their weights, already divided by the full query norm (unknown grams included)."""
        counts = Counter(grams)
        cols, w = [], []
        norm2 = 0.0
        for g, c in counts.items():
            j = self.vocab.get(g)
            idf = float(self.idf[j]) if j is not None else self.unknown_idf
            v = (1.0 + math.log(c)) * idf
            norm2 += v * v
            if j is not None:
                cols.append(j)
                w.append(v)
        if not cols or norm2 == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        return np.asarray(cols, dtype=np.int64), np.asarray(w) / math.sqrt(norm2)

    def scores(self, grams: Sequence[str]) -> np.ndarray:
        """Cosine of every document with the query."""
        cols, w = self.query_vector(grams)
        if cols.size == 0:
            return np.zeros(self.n_docs)
        return np.asarray(self.M[:, cols] @ w).ravel()


# Re-ranker: logistic regression on pairwise features, fitted on LCQMC dev + our labelled data by
# `bench/kb_eval.py --fit`. The output is a probability that the candidate answers the query, which is
# what makes one threshold mean the same thing at 100 and 100,000 entries.
_BASE_FEATURES: tuple[str, ...] = (
    "bias",
    "bm25_norm",
    "char_cos",
    "q_cover",
    "d_cover",
    "q_bi_cover",
    "d_bi_cover",
    "len_ratio",
    "ans_norm",
    "sibling",
    "lead_bi",
)
# Questions and passages (long documents) behave differently, so each gets its own copy of every feature:
# short_* features are zero for long documents and long_* ones are zero for short documents.
FEATURES: tuple[str, ...] = tuple(f"short_{f}" for f in _BASE_FEATURES) + tuple(
    f"long_{f}" for f in _BASE_FEATURES
)
RERANK_WEIGHTS: tuple[float, ...] = (
    -5.8193, 3.9424, 5.0957, -0.5143, -1.5368, -0.0878,
    0.0651, 0.2549, 4.6446, 4.8134, 0.0000, -8.1334,
    4.5937, 3.4962, 2.0288, -0.9831, 1.7209, -2.2964,
    0.3279, 0.0000, 0.0000, 2.2729,
)  # fmt: skip
# Documents longer than this (in kept characters) are passages, not questions: the symmetric
# features mean something else for them, so the model gets separate weights (the long_* features).
LONG_DOC_CHARS = 60
# The opening of a long document (its first sentence, roughly) acts as a pseudo-question.
LEAD_CHARS = 40


def _dice(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return 2.0 * len(a & b) / (len(a) + len(b))


class SearchIndex:
    """Documents (phrasings) mapped to entry positions; scoring returns per-document features and confidence."""

    def __init__(
        self,
        texts: Sequence[str],
        doc_entry: Sequence[int],
        analyzer: Analyzer,
        params: IndexParams | None = None,
        weights: Sequence[float] | None = None,
        entry_texts: Sequence[str] | None = None,
    ) -> None:
        self.params = params or IndexParams()
        self.analyzer = analyzer
        self.weights = np.asarray(weights if weights is not None else RERANK_WEIGHTS, dtype=np.float64)
        self.doc_entry = np.asarray(doc_entry, dtype=np.int64)
        analyses = [analyzer.analyze(t) for t in texts]
        self.doc_tokens: list[tuple[str, ...]] = [a.tokens for a in analyses]
        self.doc_chars: list[str] = [a.chars for a in analyses]
        p = self.params
        self.bm25 = BM25Matrix(self.doc_tokens, k1=p.k1, b=p.b, idf=p.idf)
        self.char = TfidfMatrix([char_ngrams(c, p.char_n_min, p.char_n_max) for c in self.doc_chars])
        # Idf mass of each document's distinct words (the d_cover denominator), computed once here.
        vocab, idf = self.bm25.vocab, np.maximum(self.bm25.idf, 0.0)
        self.doc_mass = np.fromiter(
            (sum(float(idf[vocab[t]]) for t in set(toks)) for toks in self.doc_tokens),
            dtype=np.float64,
            count=len(self.doc_tokens),
        )
        # Answer field: one document per entry; entries without extra text get an empty document.
        self.ans: BM25Matrix | None = None
        if entry_texts is not None and any(entry_texts):
            self.ans = BM25Matrix(
                [analyzer.analyze(t).tokens if t else () for t in entry_texts],
                k1=p.ans_k1,
                b=p.ans_b,
                idf="lucene",
            )

    def __len__(self) -> int:
        return len(self.doc_entry)

    def _idf(self, term: str) -> float:
        j = self.bm25.vocab.get(term)
        return float(self.bm25.idf[j]) if j is not None else self.bm25.unknown_idf

    def features(
        self,
        q: Analysis,
        docs: np.ndarray,
        bm_norm: np.ndarray,
        cos: np.ndarray,
        ans_norm: np.ndarray | None = None,
        sibling: np.ndarray | None = None,
    ) -> np.ndarray:
        """Pairwise features (see FEATURES) of the query against each candidate document."""
        qset = set(q.tokens)
        q_idf = {t: max(self._idf(t), 0.0) for t in qset}
        q_mass = sum(q_idf.values()) or 1.0
        qb = {q.chars[i : i + 2] for i in range(len(q.chars) - 1)} or set(q.chars)
        out = np.zeros((len(docs), len(FEATURES)))
        for r, d in enumerate(docs):
            dset = set(self.doc_tokens[d])
            common = qset & dset
            c_mass = sum(q_idf[t] for t in common)
            d_mass = float(self.doc_mass[d]) or 1.0
            dc = self.doc_chars[d]
            db = {dc[i : i + 2] for i in range(len(dc) - 1)} or set(dc)
            shared_b = len(qb & db)
            lq, ld = len(q.chars), len(dc)
            bmn = min(float(bm_norm[r]), 1.5)
            cs = float(cos[r])
            d_cov = c_mass / d_mass
            d_bi = shared_b / max(len(db), 1)
            len_ratio = min(lq, ld) / max(lq, ld, 1)
            long = ld > LONG_DOC_CHARS
            lead_bi = 0.0
            if long:
                lead = dc[:LEAD_CHARS]
                lead_bi = len(qb & {lead[i : i + 2] for i in range(len(lead) - 1)}) / max(len(qb), 1)
            base = (
                1.0,
                bmn,
                cs,
                c_mass / q_mass,
                d_cov,
                shared_b / max(len(qb), 1),
                d_bi,
                len_ratio,
                min(float(ans_norm[r]), 1.5) if ans_norm is not None else 0.0,
                float(sibling[r]) if sibling is not None else 0.0,
                lead_bi,
            )
            half = len(_BASE_FEATURES)
            if long:
                out[r, half:] = base
            else:
                out[r, :half] = base
        return out

    def search_docs(
        self, q: Analysis, allowed: np.ndarray | None = None, k: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Top candidate documents: (doc ids, fused scores, confidences, feature rows), best confidence first."""
        empty = np.zeros(0, dtype=np.int64)
        if not q.tokens and not q.chars or len(self) == 0:
            return empty, np.zeros(0), np.zeros(0), np.zeros((0, len(FEATURES)))
        p = self.params
        bm = self.bm25.scores(q.tokens)
        self_s = self.bm25.self_score(q.tokens)
        bm_norm = bm / self_s if self_s > 0 else bm
        cos = self.char.scores(char_ngrams(q.chars, p.char_n_min, p.char_n_max))
        fused = p.w_bm25 * np.minimum(bm_norm, 1.5) + p.w_char * cos
        ans_doc = None
        if self.ans is not None and q.tokens:
            a_self = self.ans.self_score(q.tokens)
            ans_e = self.ans.scores(q.tokens)
            if a_self > 0:
                ans_e = ans_e / a_self
            ans_doc = np.minimum(ans_e, 1.5)[self.doc_entry]
            fused = fused + p.w_ans * ans_doc
        if allowed is not None:
            fused = np.where(allowed, fused, -1.0)
        k = min(k or p.candidates, len(fused))
        top = np.argpartition(-fused, k - 1)[:k] if k < len(fused) else np.arange(len(fused))
        top = top[fused[top] > 0]
        if top.size == 0:
            return empty, np.zeros(0), np.zeros(0), np.zeros((0, len(FEATURES)))
        # Several phrasings of one entry among the candidates: every one of them gets the entry's
        # second-best fused score (an entry-level bonus for matching more than one way of asking).
        ent = self.doc_entry[top]
        ft = fused[top]
        sibling = np.zeros(len(top))
        if len(np.unique(ent)) < len(ent):
            for e in np.unique(ent):
                m = np.flatnonzero(ent == e)
                if len(m) > 1:
                    sibling[m] = max(float(np.sort(ft[m])[-2]), 0.0)
        feats = self.features(
            q, top, bm_norm[top], cos[top], ans_doc[top] if ans_doc is not None else None, sibling
        )
        conf = 1.0 / (1.0 + np.exp(-(feats @ self.weights)))
        order = np.lexsort((-fused[top], -conf))
        return top[order], fused[top][order], conf[order], feats[order]
