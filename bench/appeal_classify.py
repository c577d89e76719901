"""Appeal classifier benchmark on real citizen messages (gov_messages.jsonl; read at run time, never copied).

Measures the keyword rules in wxapp_backend/appeals/classify.py on two labels of each message:
  - type: 咨询 / 投诉/求助 / 建言           (classify.message_type)
  - domain: 城建, 交通, 教育, ... or ''     (classify.domain; '' = no domain)
and, in the same run, the majority-class baseline for each.

The rules were written from the catalogue and general vocabulary, not fitted to this set. A stable hash puts
every message in dev (20 %) or test (80 %); figures are reported on test. `--dev` reports on dev instead
(use dev, never test, when adjusting rules).

Usage: .venv/bin/python bench/appeal_classify.py [--data ../shared/eval/gov/gov_messages.jsonl] [--dev]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wxapp_backend.appeals import classify  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "eval" / "gov" / "gov_messages.jsonl"


def split_of(text: str) -> str:
    return "dev" if int(hashlib.sha1(text.encode()).hexdigest(), 16) % 5 == 0 else "test"


def report(name: str, gold: list[str], pred: list[str], conf: list[float], min_support: int = 30) -> None:
    n = len(gold)
    correct = sum(g == p for g, p in zip(gold, pred, strict=True))
    majority, _ = Counter(gold).most_common(1)[0]
    base = sum(g == majority for g in gold)
    print(f"\n## {name}  (n = {n})")
    print(f"accuracy: rules {correct / n:.3f}   majority baseline ('{majority or '（无）'}') {base / n:.3f}")
    labels = [lab for lab, c in Counter(gold).most_common() if c >= min_support]
    print(f"{'label':<10}{'support':>8}{'recall':>8}{'precision':>10}{'F1':>7}{'baseline recall':>17}")
    f1s = []
    for lab in labels:
        tp = sum(g == lab and p == lab for g, p in zip(gold, pred, strict=True))
        sup = sum(g == lab for g in gold)
        predicted = sum(p == lab for p in pred)
        rec = tp / sup if sup else 0.0
        prec = tp / predicted if predicted else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        f1s.append(f1)
        print(f"{lab or '（无）':<10}{sup:>8}{rec:>8.3f}{prec:>10.3f}{f1:>7.3f}{(1.0 if lab == majority else 0.0):>17.3f}")
    rare = n - sum(sum(g == lab for g in gold) for lab in labels)
    if rare:
        print(f"(labels with fewer than {min_support} messages: {rare} messages, counted in accuracy only)")
    print(f"macro-F1 over the labels shown: {sum(f1s) / len(f1s):.3f}")
    # confidence: is the confident half more accurate than the rest?
    ranked = sorted(zip(conf, gold, pred, strict=True), key=lambda t: -t[0])
    half = ranked[: n // 2]
    print(f"accuracy of the more confident half: {sum(g == p for _, g, p in half) / len(half):.3f}; "
          f"no-evidence rate (confidence 0): {sum(c == 0 for c in conf) / n:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--dev", action="store_true", help="report on the dev split instead of test")
    args = ap.parse_args()
    if not args.data.is_file():
        sys.exit(f"eval data not found: {args.data}")
    want = "dev" if args.dev else "test"
    rows = [json.loads(line) for line in args.data.open(encoding="utf-8") if line.strip()]
    rows = [r for r in rows if split_of(r["message"]) == want]
    t0 = time.perf_counter()
    types = [classify.message_type(r["message"]) for r in rows]
    domains = [classify.domain(r["message"]) for r in rows]
    elapsed = time.perf_counter() - t0
    print(f"# appeal classifier on gov_messages.jsonl, split {want}: {len(rows)} messages, "
          f"{elapsed / len(rows) / 2 * 1000:.2f} ms per message per label")
    report("message type (咨询 / 投诉/求助 / 建言)", [r["msg_type"] for r in rows], [t for t, _ in types],
           [c for _, c in types])
    report("domain", [r["domain"] for r in rows], [d for d, _ in domains], [c for _, c in domains])


if __name__ == "__main__":
    main()
