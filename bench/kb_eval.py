"""Knowledge-base retrieval benchmark (protocol: /work/shared/eval/README.md) against jieba + rank_bm25.

Usage:
    .venv/bin/python bench/kb_eval.py [--sizes 1000,10000,100000] [--quick]
    .venv/bin/python bench/kb_eval.py --fit      # fit question-index weights and thresholds on dev data only
    .venv/bin/python bench/kb_eval.py --fit-passages --l2 10  # fit the passage block (gov_qa dev half + gov_nlu)
    .venv/bin/python bench/kb_eval.py --dev --only own,gov    # report on dev data only (for tuning)
    .venv/bin/python bench/kb_eval.py --fit-crit    # write knowledge/weights/char_crit.tsv from all LCQMC dev pairs
    .venv/bin/python bench/kb_eval.py --fit-single  # fit the single_* block (single-phrasing entries), LCQMC dev

Eval data is read from ../shared/eval at run time and never copied into the repository.
Tuning (--fit, --fit-passages, --fit-crit, --fit-single) touches only LCQMC dev, gov_nlu (a separate sheet from gov_qa), the gov_qa dev
half and the dev split of our own labelled set.
"""

from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import json
import multiprocessing as mp
import os
import random
import re
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from knowledge.analysis import MAX_QUERY_CHARS, get_analyzer  # noqa: E402
from knowledge.index import (  # noqa: E402
    CHAR_CRIT_FILE,
    FEATURES,
    LONG_AT,
    N_BASE,
    PASSAGE_AT,
    RERANK_WEIGHTS,
    SINGLE_AT,
)
from knowledge.loaders import load_dir  # noqa: E402
from knowledge.schema import Entry  # noqa: E402
from knowledge.search import (  # noqa: E402
    DEFAULT_ANSWER_THRESHOLD,
    DEFAULT_SUGGEST_THRESHOLD,
    KnowledgeBase,
)

EVAL = Path(os.environ.get("KB_EVAL_DIR", ROOT.parent / "shared" / "eval"))
KB_DATA = ROOT / "knowledge" / "data"
LABELLED = ROOT / "tests" / "data" / "kb_labelled.jsonl"
SEED = 20240601


# ---------------------------------------------------------------- tasks


@dataclass
class Task:
    """An index (entries) and queries with their gold entry ids (empty = out of scope)."""

    name: str
    entries: list[Entry]
    queries: list[tuple[str, frozenset[str]]]
    note: str = ""
    extra: dict[str, object] = field(default_factory=dict)


def _read_pairs(path: Path) -> list[tuple[str, str, int]]:
    out = []
    with path.open(encoding="utf-8-sig") as f:
        if path.suffix == ".csv":
            for r in csv.DictReader(f):
                out.append((r["sentence1"].strip(), r["sentence2"].strip(), int(r["label"])))
        else:
            for line in f:
                p = line.rstrip("\n").split("\t")
                if len(p) >= 3 and p[2].strip() in ("0", "1"):
                    out.append((p[0].strip(), p[1].strip(), int(p[2])))
    return out


def _clusters(pairs: Sequence[tuple[str, str, int]]) -> list[list[str]]:
    """Union the label-1 pairs; every sentence (label-0 ones too) ends in exactly one cluster."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, lab in pairs:
        ra, rb = find(a), find(b)
        if lab == 1 and ra != rb:
            parent[ra] = rb
    groups: dict[str, list[str]] = {}
    for x in list(parent):
        groups.setdefault(find(x), []).append(x)
    return [sorted(g) for g in sorted(groups.values(), key=lambda g: sorted(g)[0]) if g[0]]


def _extra_texts(sources: Sequence[str]) -> list[str]:
    """Distractor texts from other sets, in a fixed order, for indexes bigger than one set's clusters."""
    out: list[str] = []
    for src in sources:
        if src in ("lcqmc/dev.txt", "lcqmc/test.txt", "afqmc/dev.txt", "bq/test.csv"):
            for a, b, _ in _read_pairs(EVAL / src):
                out.extend((a, b))
        elif src == "gov/texts":
            for fn, key in (("gov_messages.jsonl", "message"), ("gov_qa.jsonl", "question")):
                with (EVAL / "gov" / fn).open(encoding="utf-8") as f:
                    out.extend(json.loads(line)[key] for line in f)
        elif src == "gov/sentences":
            for fn, key in (("gov_qa.jsonl", "answer"), ("gov_messages.jsonl", "message")):
                with (EVAL / "gov" / fn).open(encoding="utf-8") as f:
                    for line in f:
                        for s in re.split(r"[。！？!?；;\n]", json.loads(line)[key] or ""):
                            if 6 <= len(s.strip()) <= 60:
                                out.append(s.strip())
    return out


def pair_task(
    name: str, path: Path, size: int, n_ans: int, n_oos: int, extra_sources: Sequence[str], seed: int = SEED
) -> Task:
    """Pairs -> FAQ benchmark: index one member per answerable cluster, query with another; OOS never indexed."""
    rng = random.Random(seed)
    clusters = _clusters(_read_pairs(path))
    multi = [c for c in clusters if len(c) >= 2]
    rng.shuffle(multi)
    ans, oos = multi[:n_ans], multi[n_ans : n_ans + n_oos]
    blocked: set[str] = set()
    entries: list[Entry] = []
    queries: list[tuple[str, frozenset[str]]] = []
    for i, c in enumerate(ans):
        std, q = rng.sample(c, 2)
        eid = f"a{i}"
        entries.append(Entry(id=eid, question=std, answer=std))
        queries.append((q, frozenset([eid])))
        blocked.update(c)
    for c in oos:
        queries.append((rng.choice(c), frozenset()))
        blocked.update(c)
    used = set(blocked)
    pool = [rng.choice(c) for c in clusters if not (set(c) & blocked)]
    rng.shuffle(pool)
    pool_extra = _extra_texts(extra_sources) if len(pool) + len(entries) < size else []
    n_from_pairs = 0
    for t in [*pool, *pool_extra]:
        if len(entries) >= size:
            break
        if t in used or not t.strip():
            continue
        used.add(t)
        entries.append(Entry(id=f"d{len(entries)}", question=t, answer=t))
        n_from_pairs += 1
    # Index order must say nothing about the labels: the answerable entries were added first, and ties go to
    # the lower document number (knowledge/index.py), so without this shuffle every tie would go to the gold.
    rng.shuffle(entries)
    note = f"{len(ans)} answerable + {len(oos)} out-of-scope queries; {len(entries)} entries"
    if pool_extra:
        note += f" (distractors beyond {path.parent.name} clusters from {', '.join(extra_sources)})"
    return Task(f"{path.parent.name.upper()} {path.stem} @{len(entries)}", entries, queries, note)


def gov_half(question: str) -> str:
    """Fixed split of gov_qa queries: "dev" (sha1 of the question even, used for tuning) or "test" (reported)."""
    return "dev" if int(hashlib.sha1(question.encode("utf-8")).hexdigest(), 16) % 2 == 0 else "test"


def gov_task(path: Path, limit: int | None = None, half: str | None = None) -> Task:
    """Government Q&A: index each distinct answer text (all of them), query with the citizen question.

    `half` keeps only the queries of one fixed half (see gov_half); the index is the same either way."""
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    ids: dict[str, str] = {}
    entries: list[Entry] = []
    queries: list[tuple[str, frozenset[str]]] = []
    for r in rows:
        a = (r.get("answer") or "").strip()
        q = (r.get("question") or "").strip()
        if not a or not q:
            continue
        if a not in ids:
            ids[a] = f"g{len(ids)}"
            entries.append(Entry(id=ids[a], question=a, answer=a))
        if half is None or gov_half(q) == half:
            queries.append((q, frozenset([ids[a]])))
    if limit:
        queries = queries[:limit]
    random.Random(SEED).shuffle(entries)  # index order says nothing about the labels (see pair_task)
    tag = f" {half} half" if half else ""
    return Task(
        f"{path.stem}{tag} (question -> answer text) @{len(entries)}",
        entries,
        queries,
        f"{len(queries)} queries",
    )


def own_holdout_task(n_oos: int = 500, seed: int = 11) -> Task | None:
    """Our entries with one alternative phrasing held out per entry as the query, plus open-domain
    LCQMC dev sentences as out-of-scope queries. Dev/own data only: safe for fitting."""
    if not KB_DATA.is_dir():
        return None
    rng = random.Random(seed)
    entries, queries = [], []
    from dataclasses import replace

    for e in load_dir(KB_DATA):
        if len(e.similar) >= 2:
            held = rng.choice(e.similar)
            e = replace(e, similar=tuple(x for x in e.similar if x != held))
            queries.append((held, frozenset([e.id])))
        entries.append(e)
    dev = [a for a, _, _ in _read_pairs(EVAL / "lcqmc" / "dev.txt")]
    rng.shuffle(dev)
    queries.extend((q, frozenset()) for q in dev[:n_oos])
    return Task(f"own-holdout @{len(entries)}", entries, queries, f"{len(queries)} queries")


def _labelled_rows() -> list[tuple[str, list[str], str]]:
    """(question, gold ids, split) of tests/data/kb_labelled.jsonl; split is "dev" or "test"."""
    rows = []
    with LABELLED.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                rows.append(
                    (str(obj["q"]), [str(i) for i in obj.get("ids", [])], str(obj.get("split", "test")))
                )
    return rows


def own_task(split: str = "test") -> Task | None:
    """Our knowledge/data/*.yaml with the `split` part of tests/data/kb_labelled.jsonl (dev ~1/3, test ~2/3)."""
    if not LABELLED.is_file() or not KB_DATA.is_dir():
        return None
    entries = load_dir(KB_DATA)
    known = {e.id for e in entries}
    queries = [(q, frozenset(i for i in ids if i in known)) for q, ids, sp in _labelled_rows() if sp == split]
    n_oos = sum(1 for _, g in queries if not g)
    # Search never returns expired or retired entries as hits, so questions labelled only with such an
    # entry cannot count as top-1 right (the bot names them in its reason instead): the ceiling.
    from datetime import date

    current = {e.id for e in entries if e.is_current(date.today())}
    n_gone = sum(1 for _, g in queries if g and not (g & current))
    note = (
        f"{len(queries)} queries ({n_oos} out of scope; {n_gone} in scope labelled only with expired entries)"
    )
    return Task(f"own kb {split} @{len(entries)}", entries, queries, note)


# ---------------------------------------------------------------- methods


Searcher = Callable[[str, int], list[tuple[str, float]]]


def build_ours(entries: list[Entry], **kw: object) -> tuple[Searcher, Callable[[str], str]]:
    kb = KnowledgeBase(entries, **kw)  # type: ignore[arg-type]

    def search(q: str, k: int) -> list[tuple[str, float]]:
        return [(h.entry.id, h.confidence) for h in kb.search(q, k)]

    def decide(q: str) -> str:
        d = kb.decide(q)
        return d.kind if d.kind != "answer" else "answer:" + d.hits[0].entry.id

    return search, decide


def build_baseline(entries: list[Entry]) -> tuple[Searcher, None]:
    """Plain jieba (global tokenizer, no normalisation) + rank_bm25.BM25Okapi over the same phrasings."""
    import jieba
    from rank_bm25 import BM25Okapi

    docs: list[list[str]] = []
    owner: list[str] = []
    for e in entries:
        for p in e.phrasings:
            docs.append(jieba.lcut(p))
            owner.append(e.id)
    bm = BM25Okapi(docs)

    def search(q: str, k: int) -> list[tuple[str, float]]:
        s = bm.get_scores(jieba.lcut(q[:MAX_QUERY_CHARS]))
        out: list[tuple[str, float]] = []
        seen: set[str] = set()
        for d in np.argsort(-s)[: k * 4]:
            if owner[d] not in seen:
                seen.add(owner[d])
                out.append((owner[d], float(s[d])))
            if len(out) >= k:
                break
        return out

    return search, None


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _auroc(pos: list[float], neg: list[float]) -> float | None:
    if not pos or not neg:
        return None
    from scipy.stats import rankdata

    r = rankdata(np.concatenate([pos, neg]))
    return float((r[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def evaluate(task: Task, method: str, max_queries: int | None = None) -> dict[str, object]:
    """Build the method's index over the task, run every query, and compute the protocol's metrics."""
    gc.collect()
    rss0 = _rss_kb()
    t0 = time.perf_counter()
    if method == "ours":
        search, decide = build_ours(task.entries)
    else:
        search, decide = build_baseline(task.entries)
    build_s = time.perf_counter() - t0
    gc.collect()
    rss_mb = (_rss_kb() - rss0) / 1024
    queries = task.queries[:max_queries] if max_queries else task.queries
    lat: list[float] = []
    top1 = r5 = mrr = 0.0
    n_in = 0
    pos: list[float] = []
    neg: list[float] = []
    a_right = a_wrong = oos_ans = n_oos = ties = 0
    for q, gold in queries:
        t = time.perf_counter()
        hits = search(q, 5)
        lat.append((time.perf_counter() - t) * 1000)
        ids = [h[0] for h in hits]
        conf = hits[0][1] if hits else 0.0
        if gold:
            n_in += 1
            # The gold entry and another one with the same confidence at the top: which comes first is
            # decided by document order (knowledge/index.py, search_docs), the same on every machine.
            if (
                len(hits) >= 2
                and abs(hits[0][1] - hits[1][1]) < 1e-9
                and (ids[0] in gold) != (ids[1] in gold)
            ):
                ties += 1
            rank = next((i for i, x in enumerate(ids) if x in gold), None)
            if rank == 0:
                top1 += 1
                pos.append(conf)
            if rank is not None:
                r5 += 1
                mrr += 1.0 / (rank + 1)
        else:
            n_oos += 1
            neg.append(conf)
        if decide is not None:
            kind = decide(q)
            if kind.startswith("answer:"):
                if not gold:
                    oos_ans += 1
                elif kind[7:] in gold:
                    a_right += 1
                else:
                    a_wrong += 1
    res: dict[str, object] = {
        "top1": top1 / max(n_in, 1),
        "r5": r5 / max(n_in, 1),
        "mrr5": mrr / max(n_in, 1),
        "auroc": _auroc(pos, neg),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "build_s": build_s,
        "rss_mb": rss_mb,
        "n_in": n_in,
        "n_oos": n_oos,
        "ties": ties,
    }
    if decide is not None:
        res.update(
            answered_right=a_right / max(n_in, 1),
            answered_wrong=a_wrong / max(n_in, 1),
            oos_answered=(oos_ans / n_oos) if n_oos else None,
        )
    return res


def _evaluate_in_child(task: Task, method: str, max_queries: int | None) -> dict[str, object]:
    """Run one (task, method) in a forked child so RSS deltas are not polluted by earlier runs."""
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        return pool.apply(evaluate, (task, method, max_queries))


# ---------------------------------------------------------------- fitting (dev only)


def _collect_training(task: Task, k: int = 30) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Candidate features with labels (1 = the gold entry), grouped by query."""
    kb = KnowledgeBase(task.entries)
    idx = kb._index  # the bench is allowed to look inside
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    groups: list[int] = []
    for gi, (q, gold) in enumerate(task.queries):
        a = kb.analyzer.analyze(q, MAX_QUERY_CHARS)
        docs, _, _, feats = idx.search_docs(a, None, k)
        if len(docs) == 0:
            continue
        y = np.array([1.0 if kb.entries[idx.doc_entry[d]].id in gold else 0.0 for d in docs])
        xs.append(feats)
        ys.append(y)
        groups.extend([gi] * len(docs))
    return np.vstack(xs), np.concatenate(ys), groups


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method (bias column is x[:, 0], not penalised)."""
    w = np.zeros(x.shape[1])
    reg = np.full(x.shape[1], l2)
    reg[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        g = x.T @ (p - y) + reg * w
        h = (x * (p * (1 - p))[:, None]).T @ x + np.diag(reg + 1e-9)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def _calibration(s, g, y, mask):
    """Offset and slope of a logistic fit of "the top candidate is right" on the top candidates of the
    groups selected by `mask` (the confidence's calibration; the ranking is unchanged)."""
    top = _top_per_group(s, g)
    sel = mask[top]
    return fit_logistic(np.column_stack([np.ones(int(sel.sum())), s[top][sel]]), y[top][sel], l2=0.0)


def _top_per_group(s: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Index of the best-scoring row in each group."""
    order = np.lexsort((-s, g))
    first = np.ones(len(order), dtype=bool)
    first[1:] = g[order][1:] != g[order][:-1]
    return order[first]


def fit_listwise(
    x: np.ndarray,
    y: np.ndarray,
    g: np.ndarray,
    l2: float = 1.0,
    iters: int = 60,
    offset: np.ndarray | None = None,
) -> np.ndarray:
    """Conditional-logit (softmax over each query's candidates) ranking weights, by Newton's method.

    Only queries whose gold entry is among the candidates take part; this optimises top-1 directly.
    `offset` is a fixed per-row score added to x @ w (the part of the model that is not being fitted).
    """
    keep_groups = np.unique(g[y > 0])
    m = np.isin(g, keep_groups)
    x, y, g = x[m], y[m], g[m]
    off = np.zeros(len(y)) if offset is None else offset[m]
    _, gi = np.unique(g, return_inverse=True)
    n_g = gi.max() + 1
    yn = y / np.bincount(gi, weights=y, minlength=n_g)[gi]

    def loss(w: np.ndarray) -> float:
        s = x @ w + off
        mx = np.full(n_g, -np.inf)
        np.maximum.at(mx, gi, s)
        lse = np.log(np.bincount(gi, weights=np.exp(s - mx[gi]), minlength=n_g)) + mx
        return float(-(yn * s).sum() + lse.sum() + 0.5 * l2 * w @ w)

    w = np.zeros(x.shape[1])
    cur = loss(w)
    for _ in range(iters):
        s = x @ w + off
        mx = np.full(n_g, -np.inf)
        np.maximum.at(mx, gi, s)
        e = np.exp(s - mx[gi])
        p = e / np.bincount(gi, weights=e, minlength=n_g)[gi]
        grad = x.T @ (p - yn) + l2 * w
        xbar = np.vstack([np.bincount(gi, weights=p * x[:, j], minlength=n_g) for j in range(x.shape[1])]).T
        xc = x - xbar[gi]
        h = (xc * p[:, None]).T @ xc + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(h, grad)
        # Damped Newton: halve the step until the loss goes down (plain Newton can overshoot here).
        t = 1.0
        while t > 1e-6:
            new = loss(w - t * step)
            if new <= cur:
                break
            t /= 2
        w = w - t * step
        done = cur - new < 1e-10
        cur = new
        if done or np.abs(t * step).max() < 1e-8:
            break
    return w


def fit_weights(tasks: Sequence[Task], l2: float = 1.0, own_rep: int = 5) -> np.ndarray:
    """Question-index weights (one listwise fit over every task) then one calibration into RERANK_WEIGHTS.

    The calibration is fitted on our own tasks only, the domain the thresholds are for. Our own data is
    small but is the domain that matters, so it is weighted up by repetition in the ranking fit. Only the
    short_* and long_* blocks are fitted here; the passage_* block (indexes of answer texts) is kept as it
    is (see fit_passages), and tasks whose index is one of passages are skipped.
    Note: the round-6 weights of short_qw_mismatch / short_len_gap were chosen by a grid over LCQMC dev top-1
    with the rest fixed (docs/bench/kb.md); a refit here fits them like every other question feature.
    The single_* block (a correction for single-phrasing entries, see fit_single) is kept as it is.
    """
    xs, ys, gs, own_flags = [], [], [], []
    offset = 0
    for t in tasks:
        x, y, groups = _collect_training(t)
        if not x[:, :PASSAGE_AT].any():
            print(f"{t.name}: an index of passages, not used here (see --fit-passages)", file=sys.stderr)
            continue
        rep = own_rep if t.name.startswith("own") else 1
        for _ in range(rep):
            xs.append(x[:, :SINGLE_AT])
            ys.append(y)
            gs.append(np.asarray(groups) + offset)
            own_flags.append(np.full(len(y), t.name.startswith("own") and _ == 0))
            offset += len(t.queries) + 1
        print(f"{t.name}: {len(y)} candidates, {int(y.sum())} positive", file=sys.stderr)
    x, y = np.vstack(xs), np.concatenate(ys)
    g = np.concatenate(gs)
    own = np.concatenate(own_flags)
    # One joint ranking fit: short and long documents compete in the same candidate lists (the ~100k
    # index mixes in long citizen messages), so the two blocks must stay on one scale.
    w_rank = np.concatenate([[0.0], fit_listwise(x[:, 1:], y, g, l2=l2, iters=200)])
    s = x @ w_rank
    # One calibration (a slope and an offset for both blocks' bias) keeps the ranking intact; it is fitted
    # on our own tasks' top candidates, the domain the thresholds are for.
    cal = _calibration(s, g, y, own)
    w = cal[1] * w_rank
    w[0] += cal[0]
    w[LONG_AT] += cal[0]
    return np.concatenate([w, np.asarray(RERANK_WEIGHTS[SINGLE_AT:])])


def _top1_of(s: np.ndarray, y: np.ndarray, g: np.ndarray) -> float:
    top = _top_per_group(s, g)
    return float(y[top].sum() / len(np.unique(g)))


def fit_passages(args: argparse.Namespace) -> None:
    """Fit the passage_* block of the re-ranker (indexes of answer texts) on dev data only.

    Question -> answer-text retrieval is its own task, so it has its own weights: the short_*/long_* blocks
    (question indexes: our FAQ, LCQMC) do not move. Tasks: gov_qa's dev half and gov_nlu. The ranking
    weights are fitted listwise (l2 chosen by 2-fold cross-validation over the gov_qa dev half's queries),
    then a slope and an offset turn the score into P(top hit is right) on the gov_qa dev half.
    """
    tasks = [gov_task(EVAL / "gov" / "gov_qa.jsonl", half="dev")]
    nlu = EVAL / "gov" / "gov_nlu.jsonl"
    if nlu.is_file() and not args.no_nlu:
        tasks.append(gov_task(nlu))
    w0 = np.asarray(RERANK_WEIGHTS, dtype=np.float64)
    xs, ys, gs, is_qa = [], [], [], []
    offset = 0
    for t in tasks:
        x, y, groups = _collect_training(t, k=args.k)
        if x[:, :PASSAGE_AT].any():
            print(f"{t.name}: not an index of passages, skipped", file=sys.stderr)
            continue
        xs.append(x)
        ys.append(y)
        gs.append(np.asarray(groups) + offset)
        is_qa.append(np.full(len(y), t.name.startswith("gov_qa")))
        offset += len(t.queries) + 1
        print(f"{t.name}: {len(y)} candidates, {int(y.sum())} positive", file=sys.stderr)
    x, y, g = np.vstack(xs), np.concatenate(ys), np.concatenate(gs)
    qa = np.concatenate(is_qa)
    xp = x[:, PASSAGE_AT:]
    names = FEATURES[PASSAGE_AT:]
    # The bias is the same for every candidate of a query, so the ranking fit leaves it out.
    cols = np.array(
        [i for i, n in enumerate(names) if i > 0 and not any(d and d in n for d in args.drop.split(","))]
    )
    print(f"current weights, gov_qa dev in-sample top-1: {_top1_of(x[qa] @ w0, y[qa], g[qa]):.3f}")
    for l2 in [float(v) for v in args.l2s.split(",")]:
        hits = []
        for fold in (0, 1):
            tr = (g % 2) != fold
            te = (~tr) & qa
            wl = np.zeros(xp.shape[1])
            wl[cols] = fit_listwise(xp[tr][:, cols], y[tr], g[tr], l2=l2, iters=200)
            hits.append(_top1_of(xp[te] @ wl, y[te], g[te]))
        print(f"l2 {l2:g}: gov_qa dev 2-fold CV top-1 {np.mean(hits):.3f} ({hits[0]:.3f} / {hits[1]:.3f})")
    wl = np.zeros(xp.shape[1])
    wl[cols] = fit_listwise(xp[:, cols], y, g, l2=args.l2, iters=200)
    s = xp @ wl
    cal = _calibration(s, g, y, qa)
    wl = cal[1] * wl
    wl[0] += cal[0]
    w = np.concatenate([w0[:PASSAGE_AT], wl])
    print(f"l2 {args.l2:g}, all dev: gov_qa dev in-sample top-1 {_top1_of(x[qa] @ w, y[qa], g[qa]):.3f}")
    print("RERANK_WEIGHTS = (" + ", ".join(f"{v:.4f}" for v in w) + ")")
    for n, v in zip(names, wl, strict=True):
        print(f"  {n:28s} {v:+.4f}")


# ---------------------------------------------------------------- single-phrasing entries (LCQMC dev only)

CRIT_ALPHA = 1.0  # pseudo-count of the criticality log-odds (docs/bench/kb.md, session 19 probe)


def crit_table(
    pairs: Sequence[tuple[set[str], set[str], int]], alpha: float = CRIT_ALPHA
) -> dict[str, float]:
    """Per character: log of its rate in the symmetric differences of label-0 pairs over that of label-1
    pairs, `alpha` pseudo-counts on the label-0 scale (so a character seen in neither would read 0)."""
    c0: Counter[str] = Counter()
    c1: Counter[str] = Counter()
    n0 = n1 = 0
    for a, b, lab in pairs:
        if lab:
            n1 += 1
            c1.update(a ^ b)
        else:
            n0 += 1
            c0.update(a ^ b)
    return {
        ch: float(np.log((c0[ch] + alpha) / n0) - np.log((c1[ch] + alpha * n1 / n0) / n1))
        for ch in c0.keys() | c1.keys()
    }


def _lcqmc_dev_chars() -> tuple[list[tuple[int, int, int, set[str], set[str]]], dict[str, int]]:
    """LCQMC dev pairs as (cluster, cluster, label, characters, characters), and each sentence's cluster."""
    pairs = _read_pairs(EVAL / "lcqmc" / "dev.txt")
    cluster_of = {s: i for i, c in enumerate(_clusters(pairs)) for s in c}
    an = get_analyzer()
    chars: dict[str, set[str]] = {}
    for a, b, _ in pairs:
        for t in (a, b):
            if t not in chars:
                chars[t] = set(an.analyze(t, MAX_QUERY_CHARS).chars)
    return [(cluster_of[a], cluster_of[b], lab, chars[a], chars[b]) for a, b, lab in pairs], cluster_of


def fit_crit(args: argparse.Namespace) -> None:
    """Write the character criticality table (knowledge/weights/char_crit.tsv) from ALL LCQMC dev pairs."""
    pairs, _ = _lcqmc_dev_chars()
    table = crit_table([(a, b, lab) for _, _, lab, a, b in pairs])
    n1 = sum(p[2] for p in pairs)
    CHAR_CRIT_FILE.parent.mkdir(parents=True, exist_ok=True)
    with CHAR_CRIT_FILE.open("w", encoding="utf-8") as f:
        f.write(
            "# Character criticality for knowledge/index.py (the single_crit_* features): per character, the\n"
            f"# smoothed log-odds (pseudo-count {CRIT_ALPHA:g}) of its being in the symmetric difference of the two\n"
            "# sentences' character sets (as knowledge.analysis keeps them) in a label-0 rather than a label-1\n"
            f"# LCQMC dev pair; {len(pairs)} pairs ({len(pairs) - n1} label 0, {n1} label 1), {len(table)} characters.\n"
            "# Fitted weights, no sentence kept. Made by: .venv/bin/python bench/kb_eval.py --fit-crit\n"
            "# character<TAB>log-odds, sorted by character\n"
        )
        for ch in sorted(table):
            f.write(f"{ch}\t{table[ch]:.4f}\n")
    print(f"wrote {CHAR_CRIT_FILE} ({len(table)} characters)")


def _answered(s: np.ndarray, y: np.ndarray, g: np.ndarray, oos: np.ndarray, thr: float) -> tuple[int, ...]:
    """(top-1 right, answered right, answered wrong, out-of-scope answered) at confidence `thr`."""
    top = _top_per_group(s, g)
    p = 1.0 / (1.0 + np.exp(-s[top]))
    ok, o = y[top] > 0, oos[top]
    return (
        int(ok.sum()),
        int((ok & (p >= thr)).sum()),
        int((~ok & ~o & (p >= thr)).sum()),
        int((o & (p >= thr)).sum()),
    )


def fit_single(args: argparse.Namespace) -> None:
    """Fit the single_* block of an index of one-phrasing questions on LCQMC dev; paste the result into
    knowledge/index.py as ONE_PHRASING_BLOCK (RERANK_WEIGHTS' own single_* block is session 19's, for a few
    one-phrasing entries among many-phrasing ones, and is not refitted here).

    The round-10 task (draws 7 / 8 / 9 x 2,686 answerable + 500 out of scope @10k, AFQMC dev distractors, 30
    candidates). The criticality columns of a query come from a table of the pairs whose two clusters are both
    in the other half (2 halves by cluster, the probe's fold assignment 0), never from one that saw it. The
    single_* columns (all but the bias) are fitted listwise on top of the short_* score (offset, coefficient 1),
    then the slope of one logistic calibration of "the top candidate is right" over every query's top candidate
    (out-of-scope ones included) scales the score, and the offset is set so that out-of-scope queries are
    answered at the threshold as often as by the short_* score alone (the plain calibration would answer ~3.5x
    more on LCQMC dev, out-of-scope queries 11% instead of 2%; until session 20 the offset kept the confidence
    of a phrasing identical to the query, which with the single_dens_* columns answered 612 right instead of
    1,257 at fewer out-of-scope answers, 14 of 1,500). Both are folded into the single_* weights, so the short_*
    block and every other document stay as they are. Printed: 2-fold cross-validated (by cluster) top-1 and
    answered figures (also without the single_dens_* columns), then the weights.
    """
    dev = EVAL / "lcqmc" / "dev.txt"
    pairs, cluster_of = _lcqmc_dev_chars()

    def half(k: int) -> int:
        return zlib.crc32(f"0:{k}".encode()) % 2

    tables = [
        crit_table([(a, b, lab) for k1, k2, lab, a, b in pairs if half(k1) != f and half(k2) != f])
        for f in (0, 1)
    ]
    w0 = np.asarray(RERANK_WEIGHTS, dtype=np.float64)
    xs, ys, gs, fs, oo = [], [], [], [], []
    gi = 0
    for seed in (7, 8, 9):
        task = pair_task("lcqmc-dev", dev, 10000, 2686, 500, ["afqmc/dev.txt"], seed=seed)
        kb = KnowledgeBase(task.entries)
        idx = kb._index
        for q, gold in task.queries:
            f = half(cluster_of[q])
            idx.crit = tables[f]
            docs, _, _, feats = idx.search_docs(kb.analyzer.analyze(q, MAX_QUERY_CHARS), None, args.k)
            if not len(docs):
                continue
            xs.append(feats)
            ys.append(np.array([float(kb.entries[idx.doc_entry[d]].id in gold) for d in docs]))
            gs.append(np.full(len(docs), gi))
            fs.append(np.full(len(docs), f))
            oo.append(np.full(len(docs), not gold))
            gi += 1
        print(f"seed {seed}: {gi} queries so far", file=sys.stderr, flush=True)
    x, y, g = np.vstack(xs), np.concatenate(ys), np.concatenate(gs)
    fold, oos = np.concatenate(fs), np.concatenate(oo)
    off = x[:, :SINGLE_AT] @ w0[:SINGLE_AT]  # the short_* (and long_*) score, without the single_* block
    xc = x[:, SINGLE_AT + 1 : PASSAGE_AT]  # every single_* column but the bias
    thr = DEFAULT_ANSWER_THRESHOLD

    dens_cols = [FEATURES.index(f"single_dens_{n}") for n in (1, 3, 10)]

    def fit_block(m: np.ndarray) -> np.ndarray:
        keep = xc[m].std(axis=0) > 0
        d = np.zeros(xc.shape[1])
        d[keep] = fit_listwise(xc[m][:, keep], y[m], g[m], l2=args.l2, iters=200, offset=off[m])
        s = off + xc @ d
        cal = _calibration(s[m], g[m], y[m], np.ones(int(m.sum()), dtype=bool))
        print(f"calibration slope {cal[1]:.4f}", file=sys.stderr)
        ws = np.zeros(PASSAGE_AT - SINGLE_AT)
        ws[:N_BASE] = (cal[1] - 1.0) * w0[:N_BASE]
        ws[1:] += cal[1] * d
        # A column that is 0 in every row here (ans_norm, sibling, lead_bi) keeps its short_* weight.
        ws[np.flatnonzero(~x[m, SINGLE_AT:PASSAGE_AT].any(axis=0))] = 0.0
        # The offset: out of scope, the block answers at the threshold as many queries of the training rows
        # as the short_* score alone did (about 2 %), so the threshold keeps its meaning for unknown questions
        # (a plain logistic calibration would answer ~3.5x more on LCQMC dev). Found by bisection; every row
        # of these tasks is a one-phrasing entry, so shifting the block shifts every candidate.
        mi = np.flatnonzero(m)
        target = _answered(off[mi], y[mi], g[mi], oos[mi], thr)[3]
        blk = x[mi, SINGLE_AT:PASSAGE_AT] @ ws + off[mi]
        lo, hi = -10.0, 10.0
        for _ in range(50):
            mid = (lo + hi) / 2
            if _answered(blk + mid, y[mi], g[mi], oos[mi], thr)[3] > target:
                hi = mid
            else:
                lo = mid
        ws[0] += lo
        return ws

    def cross_validated() -> np.ndarray:
        cv = np.zeros(len(y))
        for f in (0, 1):
            ws = fit_block(fold != f)
            cv[fold == f] = (off + x[:, SINGLE_AT:PASSAGE_AT] @ ws)[fold == f]
        return cv

    # The same without the single_dens_* columns (session 20's addition), for the record.
    kept = x[:, dens_cols].copy()
    x[:, dens_cols] = 0.0
    xc = x[:, SINGLE_AT + 1 : PASSAGE_AT]
    cv_nodens = cross_validated()
    x[:, dens_cols] = kept
    xc = x[:, SINGLE_AT + 1 : PASSAGE_AT]
    cv = cross_validated()
    n_ans = len(np.unique(g[~oos]))
    print(f"{n_ans} answerable + {len(np.unique(g[oos]))} out-of-scope queries; at confidence {thr}:")
    print("  model                     top-1  answered right / wrong / out-of-scope")
    for name, s in (
        ("without single_*", off),
        ("without dens, 2-fold CV", cv_nodens),
        ("with it, 2-fold CV", cv),
    ):
        t1, r, w, o = _answered(s, y, g, oos, thr)
        print(f"  {name:24s} {t1:6d}  {r} / {w} / {o}")
    ws = fit_block(np.ones(len(y), dtype=bool))
    t1, r, w, o = _answered(off + x[:, SINGLE_AT:PASSAGE_AT] @ ws, y, g, oos, thr)
    print(f"  {'with it, in-sample':24s} {t1:6d}  {r} / {w} / {o}")
    print("ONE_PHRASING_BLOCK = (" + ", ".join(f"{v:.4f}" for v in ws) + ")")
    print("single_* block:")
    for n, v in zip(FEATURES[SINGLE_AT:PASSAGE_AT], ws, strict=True):
        print(f"  {n:28s} {v:+.4f}")


def fit(args: argparse.Namespace) -> None:
    """Fit re-ranker weights on dev data, then pick thresholds; prints the constants to paste into knowledge/."""
    tasks = [
        pair_task("lcqmc-dev", EVAL / "lcqmc" / "dev.txt", 10000, 1500, 1500, ["afqmc/dev.txt"], seed=7),
    ]
    nlu = EVAL / "gov" / "gov_nlu.jsonl"
    if nlu.is_file():
        tasks.append(gov_task(nlu))
    # gov_qa: only the fixed "dev" half of its queries (the "test" half is what the report shows).
    tasks.append(gov_task(EVAL / "gov" / "gov_qa.jsonl", half="dev"))
    # Our own data: phrasings held out of knowledge/data, and the dev split of the labelled set.
    own = own_holdout_task()
    if own is not None:
        tasks.append(own)
    own_dev = own_task("dev")
    if own_dev is not None:
        tasks.append(own_dev)
    w = fit_weights(tasks, l2=args.l2)
    print("RERANK_WEIGHTS = (" + ", ".join(f"{v:.4f}" for v in w) + ")")
    print("features:", FEATURES)
    # Threshold sweep on the same dev tasks, with the new weights.
    for t in tasks:
        kb = KnowledgeBase(t.entries, weights=w, answer_threshold=0.0, suggest_threshold=0.0)
        rows = []
        for q, gold in t.queries:
            hits = kb.search(q, 1)
            conf = hits[0].confidence if hits else 0.0
            rows.append((conf, bool(gold), bool(hits) and hits[0].entry.id in gold))
        n_in = sum(1 for r in rows if r[1]) or 1
        n_oos = sum(1 for r in rows if not r[1])
        print(f"{t.name}: threshold answered-right answered-wrong oos-answered")
        for thr in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9):
            right = sum(1 for c, i, ok in rows if c >= thr and i and ok) / n_in
            wrong = sum(1 for c, i, ok in rows if c >= thr and i and not ok) / n_in
            oos = sum(1 for c, i, _ in rows if c >= thr and not i) / n_oos if n_oos else float("nan")
            print(f"  {thr:.2f}  {right:.3f}  {wrong:.3f}  {oos:.3f}")


# ---------------------------------------------------------------- report


def _fmt(v: object, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f}" if not pct else f"{v:.1%}"
    return str(v)


def report(rows: list[tuple[Task, dict[str, object], dict[str, object] | None]]) -> str:
    lines = [
        "| set | entries | method | top-1 | R@5 | MRR@5 | AUROC | ans. right | ans. wrong | OOS ans. | p50 ms | p95 ms | build s | RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, ours, base in rows:
        n = len(task.entries)
        for label, r in (("ours", ours), ("jieba+rank_bm25", base)):
            if r is None:
                continue
            lines.append(
                f"| {task.name} | {n} | {label} | {_fmt(r['top1'])} | {_fmt(r['r5'])} | {_fmt(r['mrr5'])} | "
                f"{_fmt(r['auroc'])} | {_fmt(r.get('answered_right'))} | {_fmt(r.get('answered_wrong'))} | "
                f"{_fmt(r.get('oos_answered'))} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['build_s']:.2f} | "
                f"{r['rss_mb']:.0f} |"
            )
        if base is not None:

            def ratio(k: str, ours: dict[str, object] = ours, base: dict[str, object] = base) -> float:
                return (ours[k] / base[k]) if base[k] else float("nan")  # type: ignore[operator]

            lines.append(
                f"| {task.name} | {n} | ratio ours/base | {ratio('top1'):.3f} | {ratio('r5'):.3f} | "
                f"{ratio('mrr5'):.3f} | | | | | {ratio('p50_ms'):.2f} | {ratio('p95_ms'):.2f} | "
                f"{ratio('build_s'):.2f} | {ratio('rss_mb'):.2f} |"
            )
    return "\n".join(lines)


def targets(rows: list[tuple[Task, dict[str, object], dict[str, object] | None]]) -> str:
    """The issue's targets against the figures of this run (never more than the table shows)."""
    out = ["| target | measured (ours; baseline) | status |", "|---|---|---|"]

    def line(what: str, ok: bool, measured: str) -> None:
        out.append(f"| {what} | {measured} | {'met' if ok else '**missed**'} |")

    for t, r, b in rows:
        n = len(t.entries)
        base = f"; baseline {b['top1']:.3f}" if b else ""
        if r.get("ties"):
            # How many top-1 outcomes rest on the tie rule (document order) rather than on a score.
            base += (
                f"; {r['ties']} {'query ties' if r['ties'] == 1 else 'queries tie'} the gold with another hit"
            )
        if t.name.startswith("LCQMC test") and 9000 <= n <= 11000:
            line("LCQMC 10k top-1 ≥ 0.92", r["top1"] >= 0.92, f"{r['top1']:.3f}{base}")  # type: ignore[operator]
            line("search p95 ≤ 5 ms at 10k", r["p95_ms"] <= 5, f"{r['p95_ms']:.2f} ms")  # type: ignore[operator]
            line("build ≤ 10 s at 10k", r["build_s"] <= 10, f"{r['build_s']:.2f} s")  # type: ignore[operator]
        elif t.name.startswith("LCQMC test") and n >= 90000:
            line("search p95 ≤ 50 ms at ~100k", r["p95_ms"] <= 50, f"{r['p95_ms']:.2f} ms")  # type: ignore[operator]
            out.append(f"| RSS at ~100k (reported) | {r['rss_mb']:.0f} MB | reported |")
        elif t.name.startswith("gov_qa test"):
            line("gov_qa top-1 ≥ 0.62 (test half)", r["top1"] >= 0.62, f"{r['top1']:.3f}{base}")  # type: ignore[operator]
        elif t.name.startswith("own kb test"):
            line("own labelled (test split) top-1 ≥ 0.92", r["top1"] >= 0.92, f"{r['top1']:.3f}{base}")  # type: ignore[operator]
            oos = r.get("oos_answered")
            line("own test split: ≤ 5 % out-of-scope answered", oos is not None and oos <= 0.05, f"{oos:.3f}")  # type: ignore[operator,str-format]
            out.append(
                f"| own test split: in-scope answered outright | {r['answered_right']:.3f} right, "
                f"{r['answered_wrong']:.3f} wrong | reported |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000", help="LCQMC index sizes")
    ap.add_argument("--quick", action="store_true", help="fewer queries (200+200) and sizes 1000,10000")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--fit", action="store_true", help="fit re-ranker weights on dev data only and exit")
    ap.add_argument("--l2", type=float, default=1.0, help="ridge penalty of the ranking fit (--fit)")
    ap.add_argument(
        "--fit-passages",
        action="store_true",
        help="refit only the passage (long-document) weights, dev data only",
    )
    ap.add_argument(
        "--fit-crit", action="store_true", help="write knowledge/weights/char_crit.tsv from LCQMC dev pairs"
    )
    ap.add_argument(
        "--fit-single",
        action="store_true",
        help="fit the single_* weights (entries with one phrasing) on LCQMC dev",
    )
    ap.add_argument("--l2s", default="0.1,0.3,1,3", help="ridge penalties to cross-validate (--fit-passages)")
    ap.add_argument("--k", type=int, default=30, help="candidates per query when fitting")
    ap.add_argument("--no-nlu", action="store_true", help="fit passages on the gov_qa dev half only")
    ap.add_argument(
        "--drop", default="", help="comma list of feature-name parts to leave out (--fit-passages)"
    )
    ap.add_argument("--dev", action="store_true", help="report on dev data instead of test (for tuning)")
    ap.add_argument("--only", default="", help="comma list of lcqmc,gov,own")
    args = ap.parse_args(argv)
    get_analyzer().warm_up()
    import jieba

    jieba.initialize()
    if args.fit:
        fit(args)
        return 0
    if args.fit_passages:
        fit_passages(args)
        return 0
    if args.fit_crit:
        fit_crit(args)
        return 0
    if args.fit_single:
        fit_single(args)
        return 0
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if args.quick:
        sizes = [s for s in sizes if s <= 10000] or [1000]
    n_q = 200 if args.quick else 500
    only = set(args.only.split(",")) if args.only else {"lcqmc", "gov", "own"}
    tasks: list[Task] = []
    if "lcqmc" in only:
        split = "dev" if args.dev else "test"
        extra = (
            ["afqmc/dev.txt", "bq/test.csv", "gov/texts", "gov/sentences"]
            if args.dev
            else ["lcqmc/dev.txt", "afqmc/dev.txt", "bq/test.csv", "gov/texts", "gov/sentences"]
        )
        for size in sizes:
            tasks.append(pair_task("lcqmc", EVAL / "lcqmc" / f"{split}.txt", size, n_q, n_q, extra))
    if "gov" in only:
        # gov_qa's "dev" half of the queries was used for tuning; the report shows the other half.
        tasks.append(gov_task(EVAL / "gov" / "gov_qa.jsonl", half="dev" if args.dev else "test"))
    if "own" in only:
        # --dev must not evaluate (and so print) anything from the test split.
        for split in ("dev",) if args.dev else ("test", "dev"):
            own = own_task(split)
            if own is not None:
                tasks.append(own)
    rows = []
    for t in tasks:
        print(f"# {t.name}: {t.note}", file=sys.stderr, flush=True)
        ours = _evaluate_in_child(t, "ours", None)
        base = None if args.no_baseline else _evaluate_in_child(t, "baseline", None)
        rows.append((t, ours, base))
        print(report([(t, ours, base)]).splitlines()[-3 if base else -1 :][0:3], file=sys.stderr, flush=True)
    print(f"command: {' '.join(['.venv/bin/python', 'bench/kb_eval.py', *(argv or sys.argv[1:])])}")
    print(
        f"thresholds: answer {DEFAULT_ANSWER_THRESHOLD}, suggest {DEFAULT_SUGGEST_THRESHOLD}; "
        f"weights {RERANK_WEIGHTS}"
    )
    for t, _, _ in rows:
        print(f"- {t.name}: {t.note}")
    print(report(rows))
    print()
    print(targets(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
