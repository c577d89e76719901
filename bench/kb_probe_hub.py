"""Probe (dev data only): does a candidate's neighbourhood in the index (its "hubness") tell a paraphrase?

Nothing here is used by the product. Same task and protocol as bench/kb_probe_pos.py (LCQMC dev @10k, draws
7 / 8 / 9 x 2,686 answerable + 500 out of scope, AFQMC dev distractors; the current code's 30 candidates;
2-fold cross-validation by LCQMC cluster over five fold assignments; gains in top-1 of 8,058 answerable).

Label-free columns, from the index alone (every document's own text searched against the index at build time,
itself left out), in the spirit of CSLS (Conneau et al. 2018, hubness reduction for nearest-neighbour search):

- dens_f1 / dens_f3 / dens_f10: the document's best / mean top-3 / mean top-10 fused score (BM25 + character
  cosine, no fitted weights) against the other documents;
- dens_l1 / dens_l3: the same with the current model's logit;
- csls: 2 x the query's fused score with the candidate - dens_f10 (the query's own density is the same for every
  candidate, so it drops out of the ranking).

    .venv/bin/python bench/kb_probe_hub.py            # dumps to /tmp/kb_probe_hub.pkl once (~5 min)

Fitted with the question blocks refitted and the held-out character table (bench/kb_probe_pos.py --joint),
against the same refit with the character table alone.

Measured (session 20; the refit baselines 6,784 / 6,774 / 6,774 / 6,780 / 6,782 and the character table's
+134 / +158 / +142 / +140 / +137 reproduced), gain over the character table of 8,058, five fold assignments:

    dens_f1..f10 + dens_l1, l3 (all five)     +30 +38 +37 +38 +40   mean +36.6
    csls + the five                           +32 +31 +25 +45 +53   mean +37.2
    dens_f1, f3, f10 (fused only)             +41 +30 +33 +50 +37   mean +38.2
    the same for the 5 / 10 best candidates   mean +34.6 / +37.2 (the others at the mean)
    shared nearest neighbours                 +5  -5  +5  -1  -3    mean +0.2

Dumped again from the code that has them (33cbd8f; candidates listed in its order, so ties fall differently):
all five +28 +34 +36 +46 +45 (mean +37.8), csls + the five mean +42.6.
The product took the fused three for the 5 best candidates (knowledge/index.py, single_dens_*); docs/bench/kb.md,
session 20.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kb_probe_pos as P  # noqa: E402

from knowledge.analysis import MAX_QUERY_CHARS  # noqa: E402

CACHE = Path("/tmp/kb_probe_hub.pkl")
DENS = ("dens_f1", "dens_f3", "dens_f10", "dens_l1", "dens_l3")


def _density(idx, analyzer, texts: list[str], k: int = 11) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per document: its best / top-3 / top-10 fused and best / top-3 logit scores against the others, and the
    other documents among its k best (by fused score)."""
    out = np.zeros((len(texts), len(DENS)))
    nn = []
    for d, t in enumerate(texts):
        a = analyzer.analyze(t, MAX_QUERY_CHARS)
        docs, fused, _, feats = idx.search_docs(a, None, k)
        keep = docs != d
        o = np.argsort(-fused[keep], kind="stable")
        nn.append(docs[keep][o][:10])
        f = np.sort(fused[keep])[::-1]
        lg = np.sort((feats @ idx.weights)[keep])[::-1]
        if len(f):
            out[d] = (f[0], f[:3].mean(), f[:10].mean(), lg[0], lg[:3].mean())
    return out, nn


def _per_index(kb):
    """The hook for kb_probe_pos.dump: every document's neighbourhood, then per row the candidates' own."""
    idx = kb._index
    texts = [kb.entries[idx.doc_entry[d]].question for d in range(len(idx.doc_entry))]
    t0 = time.perf_counter()
    dens, nn = _density(idx, kb.analyzer, texts)
    print(f"density of {len(texts)} documents in {time.perf_counter() - t0:.0f} s", flush=True)
    return lambda docs, fused: dict(fused=fused, dens=dens[docs], docs=docs, nn=[nn[d] for d in docs])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--redump", action="store_true")
    args = ap.parse_args(argv)
    data = P.load(args.redump, CACHE, _per_index)
    rows = data["rows"]
    print(f"{len(rows)} queries; current code top-1", sum(int(r["y"][int(np.argmax(r["base"]))] == 1) for r in rows))
    dens = [r["dens"] for r in rows]
    csls = [np.column_stack([2 * r["fused"] - r["dens"][:, 2], r["dens"]]) for r in rows]
    char = P.Crit(data, "char")
    groups = {"char": ([], [char]), "char+dens": ([dens], [char]), "char+csls": ([csls], [char])}
    bases = [P.cv(rows, [], [], args.l2, a, True, 1.0, with_new=False)[0] for a in range(5)]
    print("refit without new columns:", bases, flush=True)
    res = {}
    for name, (static, crits) in groups.items():
        res[name] = [P.cv(rows, static, crits, args.l2, a, True, 1.0)[0] for a in range(5)]
        g = [h - b for h, b in zip(res[name], bases, strict=True)]
        print(f"{name:10s} over refit {' '.join(f'{x:+4d}' for x in g)} mean {np.mean(g):+.1f}", flush=True)
        if name != "char":
            g = [h - b for h, b in zip(res[name], res["char"], strict=True)]
            print(f"{name:10s} over char  {' '.join(f'{x:+4d}' for x in g)} mean {np.mean(g):+.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
