"""Probe (dev only): does the single_* block (session 19) make a one-phrasing entry of OUR knowledge base harder
or too easy to reach?

Staff create entries with one phrasing (the console's unanswered queue, "turn this question into a new entry", or a
new entry typed without similar phrasings). Such an entry gets the LCQMC-fitted single_* block added to its score,
while its neighbours (several phrasings each) do not. This script measures the effect on the DEV split of
tests/data/kb_labelled.jsonl only:

1. per gold entry E of a dev question: a KB of knowledge/data where E keeps its standard question only; E's dev
   questions are asked with the shipped weights (ON) and with the single_* weights zeroed (OFF, the ranking before
   session 19); top-1 right, E's rank, and the decision (answer >= 0.8 / suggest >= 0.2 / fallback, with
   knowledge/search.py's thresholds and rules) are counted;
2. the out-of-scope dev questions against KBs where several entries are reduced to one phrasing at once (batches of
   BATCH entries in a seeded order, and all gold entries together): answered outright ON vs OFF.

    .venv/bin/python bench/kb_probe_single.py [--batch 10] [--verbose]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from knowledge.index import PASSAGE_AT, RERANK_WEIGHTS, SINGLE_AT  # noqa: E402
from knowledge.loaders import load_dir  # noqa: E402
from knowledge.schema import Entry  # noqa: E402
from knowledge.search import KnowledgeBase  # noqa: E402

KB_DATA = ROOT / "knowledge" / "data"
LABELLED = ROOT / "tests" / "data" / "kb_labelled.jsonl"
RANK_DEPTH = 20


def _off_weights() -> np.ndarray:
    w = np.asarray(RERANK_WEIGHTS, dtype=np.float64).copy()
    w[SINGLE_AT:PASSAGE_AT] = 0.0
    return w


def _dev_rows(known: set[str]) -> list[tuple[str, frozenset[str]]]:
    rows = []
    with LABELLED.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                if obj.get("split", "test") == "dev":
                    rows.append((str(obj["q"]), frozenset(i for i in obj.get("ids", []) if i in known)))
    return rows


def _reduce(entries: list[Entry], ids: set[str]) -> list[Entry]:
    return [dataclasses.replace(e, similar=()) if e.id in ids else e for e in entries]


def _ask(kb: KnowledgeBase, q: str, gold: frozenset[str], target: str | None) -> dict[str, object]:
    hits = kb.search(q, RANK_DEPTH)
    ids = [h.entry.id for h in hits]
    d = kb.decide(q)
    best = d.best
    kind = d.kind
    if kind == "answer":
        kind = "answer_right" if best is not None and best.entry.id in gold else "answer_wrong"
    rank = ids.index(target) + 1 if target in ids else None
    conf = next((h.confidence for h in hits if h.entry.id == target), None)
    return {
        "top1": bool(ids) and ids[0] in gold,
        "rank": rank,
        "conf": conf,
        "kind": kind,
        "top_conf": hits[0].confidence if hits else 0.0,
    }


def _c(r: dict[str, object]) -> str:
    return "-" if r["conf"] is None else f"{float(r['conf']):.3f}"  # type: ignore[arg-type]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--batch", type=int, default=10, help="entries reduced together for the out-of-scope part"
    )
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--verbose", action="store_true", help="print every question whose outcome differs")
    args = ap.parse_args()

    entries = load_dir(KB_DATA)
    known = {e.id for e in entries}
    rows = _dev_rows(known)
    oos = [q for q, g in rows if not g]
    gold_ids = sorted({i for _, g in rows for i in g})
    off = _off_weights()
    print(
        f"{len(entries)} entries, {len(rows)} dev questions ({len(oos)} out of scope), {len(gold_ids)} gold entries"
    )

    # ---- 1. one gold entry reduced at a time
    t0 = time.perf_counter()
    res: dict[str, list[dict[str, object]]] = {"full": [], "on": [], "off": []}
    full_on = KnowledgeBase(entries)
    # The other in-scope dev questions (gold does not include E): does the reduced E take them?
    others: dict[str, Counter[str]] = {"full": Counter(), "on": Counter(), "off": Counter()}
    full_other = {q: _ask(full_on, q, g, None) for q, g in rows if g}
    for eid in gold_ids:
        red = _reduce(entries, {eid})
        kbs = {"on": KnowledgeBase(red), "off": KnowledgeBase(red, weights=off)}
        for q, g in rows:
            if g and eid not in g:
                for k, kb in kbs.items():
                    a, f = _ask(kb, q, g, eid), full_other[q]
                    c = others[k]
                    c["n"] += 1
                    c["top1"] += int(bool(a["top1"]))
                    c["lost"] += int(bool(f["top1"]) and not a["top1"])
                    c["stolen"] += int(a["rank"] == 1)
                    c["wrong"] += int(a["kind"] == "answer_wrong")
                    c["wrong_new"] += int(a["kind"] == "answer_wrong" and f["kind"] != "answer_wrong")
                    c["wrong_by_e"] += int(a["kind"] == "answer_wrong" and a["rank"] == 1)
                    if args.verbose and a["rank"] == 1 and k == "on":
                        print(f"  E={eid} takes top-1 of {q!r} (gold {sorted(g)}): {a['kind']} conf={_c(a)}")
                continue
            if eid not in g:
                continue
            res["full"].append(_ask(full_on, q, g, eid) | {"q": q, "e": eid})
            for k, kb in kbs.items():
                res[k].append(_ask(kb, q, g, eid) | {"q": q, "e": eid})
    n = len(res["on"])
    print(
        f"\n1. one gold entry reduced to its standard question: {n} (question, entry) pairs, "
        f"{time.perf_counter() - t0:.0f} s"
    )
    print(
        "| weights | top-1 right | E in top 5 | E's mean rank (<=20) | E missing | answer right | answer wrong "
        "| suggest | fallback | E's mean conf |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, label in (
        ("full", "all phrasings (reference)"),
        ("off", "reduced, single_* OFF"),
        ("on", "reduced, single_* ON"),
    ):
        r = res[k]
        kinds = Counter(str(x["kind"]) for x in r)
        ranks = [int(x["rank"]) for x in r if x["rank"] is not None]  # type: ignore[call-overload]
        confs = [float(x["conf"]) for x in r if x["conf"] is not None]  # type: ignore[arg-type]
        print(
            f"| {label} | {sum(bool(x['top1']) for x in r)} | {sum(1 for v in ranks if v <= 5)} | "
            f"{np.mean(ranks):.2f} | {n - len(ranks)} | {kinds['answer_right']} | {kinds['answer_wrong']} | "
            f"{kinds['suggest']} | {kinds['fallback']} | {np.mean(confs):.3f} |"
        )
    moved = [
        (a, b)
        for a, b in zip(res["off"], res["on"], strict=True)
        if (a["top1"], a["kind"]) != (b["top1"], b["kind"])
    ]
    better = sum(1 for a, b in moved if b["top1"] and not a["top1"])
    worse = sum(1 for a, b in moved if a["top1"] and not b["top1"])
    print(
        f"OFF -> ON: top-1 gained {better}, lost {worse}; decision changed on {len(moved)}; "
        f"E's confidence ON - OFF: mean "
        f"{np.mean([float(b['conf'] or 0) - float(a['conf'] or 0) for a, b in zip(res['off'], res['on'], strict=True)]):+.3f}"
    )
    print("\nThe other in-scope dev questions (gold does not include the reduced E), summed over every E:")
    f_top1 = sum(bool(x["top1"]) for x in full_other.values())
    f_wrong = sum(x["kind"] == "answer_wrong" for x in full_other.values())
    print(
        f"  reference (nothing reduced): {len(full_other)} questions, top-1 {f_top1}, answer wrong {f_wrong}"
    )
    for k in ("off", "on"):
        c = others[k]
        print(
            f"  {k.upper()}: {c['n']} asked, top-1 {c['top1']} (lost vs reference {c['lost']}), "
            f"E became top-1 {c['stolen']}, answer wrong {c['wrong']} (new {c['wrong_new']}, "
            f"answered with E {c['wrong_by_e']})"
        )
    if args.verbose:
        for a, b in moved:
            print(
                f"  {b['e']} | {b['q']} | OFF top1={a['top1']} {a['kind']} rank={a['rank']} conf={_c(a)}"
                f" | ON top1={b['top1']} {b['kind']} rank={b['rank']} conf={_c(b)}"
            )

    # ---- 2. out of scope with several entries reduced at once
    t0 = time.perf_counter()
    order = [e.id for e in entries]
    random.Random(args.seed).shuffle(order)
    batches = [set(order[i : i + args.batch]) for i in range(0, len(order), args.batch)]
    batches.append(set(gold_ids))
    tally = {"on": Counter(), "off": Counter()}  # type: dict[str, Counter[str]]
    tally_all = {"on": Counter(), "off": Counter()}  # type: dict[str, Counter[str]]
    in_scope = {"on": Counter(), "off": Counter()}  # type: dict[str, Counter[str]]
    for bi, ids in enumerate(batches):
        red = _reduce(entries, ids)
        kbs = {"on": KnowledgeBase(red), "off": KnowledgeBase(red, weights=off)}
        for k, kb in kbs.items():
            dest = tally_all[k] if bi == len(batches) - 1 else tally[k]
            for q in oos:
                a = _ask(kb, q, frozenset(), None)
                dest[str(a["kind"])] += 1
                dest["top_conf_sum"] += float(a["top_conf"])  # type: ignore[arg-type]
            if bi < len(batches) - 1:
                # In-scope dev questions whose gold includes a reduced entry of this batch.
                for q, g in rows:
                    if g & ids:
                        a = _ask(kb, q, g, None)
                        in_scope[k]["n"] += 1
                        in_scope[k]["top1"] += int(bool(a["top1"]))
                        in_scope[k][str(a["kind"])] += 1
    print(f"\n2. out-of-scope dev questions ({len(oos)}), {time.perf_counter() - t0:.0f} s")
    print("| KB | weights | answered outright (wrong) | suggest | fallback | mean top conf |")
    print("|---|---|---|---|---|---|")
    nb = len(batches) - 1
    for label, t, m in (
        (f"{nb} batches of {args.batch} reduced", tally, len(oos) * nb),
        (f"all {len(gold_ids)} gold entries reduced", tally_all, len(oos)),
    ):
        for k in ("off", "on"):
            c = t[k]
            print(
                f"| {label} | {k.upper()} | {c['answer_wrong']} of {m} | {c['suggest']} | {c['fallback']} | "
                f"{c['top_conf_sum'] / m:.3f} |"
            )
    print("\nIn-scope dev questions in the batch KBs (gold includes a reduced entry of the batch):")
    for k in ("off", "on"):
        c = in_scope[k]
        print(
            f"  {k.upper()}: {c['n']} asked, top-1 {c['top1']}, answer right {c['answer_right']}, "
            f"answer wrong {c['answer_wrong']}, suggest {c['suggest']}, fallback {c['fallback']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
