"""Probe (dev data only): would Chinese word vectors help the re-ranker on LCQMC dev @10k?

The vectors are the 125,796 x 100 word2vec file (Chinese Wikipedia, MIT licence) inside the PyPI source
distribution of `synonyms` 3.8-3.10.2; later releases dropped it. Nothing here is used by the product:

    pip download --no-deps --no-binary :all: synonyms==3.10.2 -d /tmp/syn && tar xzf /tmp/syn/*.tar.gz -C /tmp/syn
    .venv/bin/python bench/kb_probe_wordvec.py --vectors /tmp/syn/synonyms-3.10.2/synonyms/data/words.vector

Task: the round-10 one (LCQMC dev, draws 7 / 8 / 9 x 2,686 answerable + 500 out of scope, 10k entries with
AFQMC dev as distractors), the current code's 30 candidates per query. New columns are fitted listwise on top
of the current logit (a fixed offset), 2-fold cross-validation by LCQMC cluster over five fold assignments;
the printed gain is in queries of 8,058 answerable (docs/bench/kb.md, "Session 17").
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kb_eval as K  # noqa: E402

from knowledge.analysis import MAX_QUERY_CHARS  # noqa: E402
from knowledge.search import KnowledgeBase  # noqa: E402

COLUMNS = ("emb_cos", "soft_q", "soft_d", "soft_q_unmatched", "soft_d_unmatched", "soft_min")


def load_vectors(path: Path) -> tuple[dict[str, int], np.ndarray]:
    """word2vec binary format: a header line "n dim", then per word its text, a space and dim float32."""
    with path.open("rb") as f:
        n, dim = map(int, f.readline().split())
        words: list[str] = []
        vecs = np.zeros((n, dim), np.float32)
        for i in range(n):
            w = bytearray()
            while (c := f.read(1)) != b" ":
                if c != b"\n":
                    w.extend(c)
            words.append(w.decode("utf-8", "replace"))
            vecs[i] = np.frombuffer(f.read(4 * dim), np.float32)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)
    return {w: i for i, w in enumerate(words)}, vecs


def columns(q: tuple[str, ...], d: tuple[str, ...], idf: dict[str, float], voc, vec) -> tuple[float, ...]:
    """Cosine of the idf-weighted mean vectors, and soft word alignment both ways (see COLUMNS)."""

    def mean(tokens):
        v = np.zeros(vec.shape[1], np.float32)
        for t in tokens:
            if (i := voc.get(t)) is not None:
                v += idf.get(t, 1.0) * vec[i]
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    def soft(a, b):
        bs = set(b)
        bv = [i for i in (voc.get(t) for t in bs) if i is not None]
        m = vec[bv] if bv else None
        num = den = num_u = den_u = 0.0
        for t in set(a):
            w = idf.get(t, 1.0)
            den += w
            if t in bs:
                num += w
                continue
            i = voc.get(t)
            s = float(max((m @ vec[i]).max(), 0.0)) if i is not None and m is not None else 0.0
            num, num_u, den_u = num + w * s, num_u + w * s, den_u + w
        return num / max(den, 1e-9), (num_u / den_u if den_u else 1.0)

    sq, uq = soft(q, d)
    sd, ud = soft(d, q)
    return float(mean(q) @ mean(d)), sq, sd, uq, ud, min(sq, sd)


def _cv(rows: list, l2: float, assign: int, drop: int = 0) -> int:
    """Top-1 hits with the columns (less the last `drop`) fitted by 2-fold cross-validation by cluster."""
    fold = [zlib.crc32(f"{assign}:{k}".encode()) % 2 for k, *_ in rows]
    n = rows[0][3].shape[1] - drop
    hits = 0
    for f in (0, 1):
        tr = [i for i in range(len(rows)) if fold[i] != f]
        x = np.vstack([rows[i][3][:, :n] for i in tr])
        keep = x.std(axis=0) > 0  # a column that never varies (the long block's round-6 pair) has no weight
        w = np.zeros(n)
        w[keep] = K.fit_listwise(
            x[:, keep],
            np.concatenate([rows[i][1] for i in tr]),
            np.concatenate([[i] * len(rows[i][1]) for i in tr]),
            l2=l2,
            offset=np.concatenate([rows[i][2] for i in tr]),
            iters=200,
        )
        for i in (i for i in range(len(rows)) if fold[i] == f):
            _, y, s, x_i = rows[i]
            hits += int(y[int(np.argmax(s + x_i[:, :n] @ w))] == 1)
    return hits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vectors", type=Path, required=True)
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument(
        "--joint",
        action="store_true",
        help="refit the question blocks with and without the new columns (no fixed offset) and compare the two",
    )
    args = ap.parse_args(argv)
    voc, vec = load_vectors(args.vectors)
    dev = K.EVAL / "lcqmc" / "dev.txt"
    cluster_of = {s: i for i, c in enumerate(K._clusters(K._read_pairs(dev))) for s in c}
    rows = []  # (fold key, labels, current logit, new columns)
    for seed in (7, 8, 9):
        task = K.pair_task("lcqmc-dev", dev, 10000, 2686, 500, ["afqmc/dev.txt"], seed=seed)
        kb = KnowledgeBase(task.entries)
        idx = kb._index  # the bench is allowed to look inside
        for q, gold in task.queries:
            a = kb.analyzer.analyze(q, MAX_QUERY_CHARS)
            docs, _, _, feats = idx.search_docs(a, None, 30)
            if len(docs):
                y = np.array([float(kb.entries[idx.doc_entry[d]].id in gold) for d in docs])
                idf = {t: max(idx._idf(t), 0.0) for d in docs for t in (*idx.doc_tokens[d], *a.tokens)}
                x = np.array([columns(a.tokens, idx.doc_tokens[d], idf, voc, vec) for d in docs])
                if args.joint:  # the question blocks (bias and passage block left out), then the new columns
                    rows.append((str(cluster_of.get(q, q)), y, np.zeros(len(y)), np.hstack([feats[:, 1 : K.SINGLE_AT], x])))
                else:
                    rows.append((str(cluster_of.get(q, q)), y, feats @ idx.weights, x))
    base = sum(int(y[int(np.argmax(s))] == 1) for _, y, s, _ in rows)
    if args.joint:
        # The baseline is the same refit without the new columns.
        base = _cv(rows, args.l2, 0, drop=len(COLUMNS))
    print(f"baseline top-1: {base} of 8,058 answerable ({len(rows)} queries with candidates, out of scope included)")
    gains = []
    for assign in range(5):
        hits = _cv(rows, args.l2, assign)
        if args.joint:
            base = _cv(rows, args.l2, assign, drop=len(COLUMNS))
        gains.append(hits - base)
        print(f"fold assignment {assign}: top-1 {hits} against {base} ({hits - base:+d})")
    print(f"gain over five assignments: mean {np.mean(gains):+.1f}, min {min(gains):+d} (bar: +120 on every one)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
