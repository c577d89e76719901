"""Cost of the unanswered queue's marks (suggested entries and 现在能回答) for one page, on a large knowledge base.

Usage:
    .venv/bin/python bench/kb_unanswered.py [--sizes 20000,100000] [--questions 50] [--repeat 3]

The index holds the project's own entries plus N synthetic ones, generated here at run time from the words of
knowledge/data (nothing is written to disk). Questions are drawn from tests/data/kb_labelled.jsonl. Per size it
prints, for one page of questions:
  baseline  the previous page code: kb.search(text, 3) for the suggestions, then the chat's ask() for the mark
  cold      services.question_marks with an empty cache (the first load after an entry changed)
  warm      services.question_marks again on the same index content (reloads, other processes: Redis)
with wall time (median of --repeat runs) and searches made, and how many marks the two ways agree on.
Redis: REDIS_URL if set (use a database of your own, e.g. redis://127.0.0.1:6379/8), else a private server in
a temporary folder, stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from knowledge.analysis import get_analyzer  # noqa: E402
from knowledge.index import SearchIndex  # noqa: E402
from knowledge.loaders import load_dir  # noqa: E402
from knowledge.schema import Entry  # noqa: E402
from knowledge.search import KnowledgeBase  # noqa: E402
from wxapp_backend.knowledge_store import services  # noqa: E402
from wxapp_backend.knowledge_store.chat import ask  # noqa: E402

SEED = 20261206


def synthetic(real: list[Entry], n: int, rng: random.Random) -> list[Entry]:
    """n entries made of the real entries' words: a question, two phrasings and a 30-word answer each."""
    an = get_analyzer()
    q_words = [t for e in real for p in e.phrasings for t in an.analyze(p).tokens]
    a_words = [t for e in real for t in an.analyze(e.answer).tokens]
    return [Entry(id=f"syn-{i}", question="".join(rng.sample(q_words, 5))[:300],
                  answer="".join(rng.sample(a_words, 30)),
                  similar=tuple("".join(rng.sample(q_words, 4)) for _ in range(2)), category="合成")
            for i in range(n)]


def baseline(kb: KnowledgeBase, texts: list[str]) -> dict[str, tuple[tuple[str, ...], str | None]]:
    """What the page computed before: a search for the suggestions, then the chat's decision."""
    out = {}
    for text in texts:
        hits = kb.search(text, 3)
        result = ask(kb, text)
        out[text] = (tuple(h.entry.id for h in hits),
                     result.entry_id if result.decision == "answer" and not result.picked else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="20000,100000")
    ap.add_argument("--questions", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import os

    import redis

    from wxapp_backend.kv import ensure_embedded_redis, stop_embedded_redis

    tmp = None
    url = os.environ.get("REDIS_URL")
    if not url:
        tmp = tempfile.TemporaryDirectory(prefix="kbu-")
        url = ensure_embedded_redis(Path(tmp.name))
    r = redis.Redis.from_url(url)

    searches = [0]
    real_search = SearchIndex.search_docs

    def counted(self, *a, **kw):
        searches[0] += 1
        return real_search(self, *a, **kw)

    SearchIndex.search_docs = counted  # type: ignore[method-assign]

    rng = random.Random(SEED)
    real = load_dir(ROOT / "knowledge" / "data")
    rows = [json.loads(line) for line in (ROOT / "tests" / "data" / "kb_labelled.jsonl").open(encoding="utf-8")]
    texts = [row["q"] for row in rng.sample(rows, args.questions)]
    print(f"questions per page: {len(texts)} (kb_labelled, seed {SEED}); repeat {args.repeat}, median shown")
    print(f"{'entries':>8} {'build s':>8} | {'baseline ms':>11} {'searches':>8} | {'cold ms':>8} {'searches':>8}"
          f" | {'warm ms':>8} {'searches':>8} | answer marks same | suggestions same")
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            started = time.perf_counter()
            kb = KnowledgeBase([*real, *synthetic(real, n, rng)], today=services.today_shanghai())
            build = time.perf_counter() - started

            def timed(fn):
                times, made, result = [], 0, None
                for _ in range(args.repeat):
                    searches[0] = 0
                    t0 = time.perf_counter()
                    result = fn()
                    times.append((time.perf_counter() - t0) * 1000)
                    made = searches[0]
                return statistics.median(times), made, result

            base_ms, base_n, before = timed(lambda kb=kb: baseline(kb, texts))
            keys = iter(f"bench-{n}-{i}-{time.time_ns()}" for i in range(args.repeat))
            cold_ms, cold_n, now = timed(lambda kb=kb, keys=keys: services.question_marks(kb, next(keys), r, texts))
            warm_key = f"bench-{n}-warm-{time.time_ns()}"
            services.question_marks(kb, warm_key, r, texts)
            warm_ms, warm_n, warm = timed(lambda kb=kb, k=warm_key: services.question_marks(kb, k, r, texts))
            assert warm == now
            same_answer = sum(before[t][1] == now[t].answer for t in texts)
            same_sugg = sum(before[t][0] == now[t].suggestions for t in texts)
            print(f"{len(kb):>8} {build:>8.1f} | {base_ms:>11.1f} {base_n:>8} | {cold_ms:>8.1f} {cold_n:>8}"
                  f" | {warm_ms:>8.2f} {warm_n:>8} | {same_answer:>8} / {len(texts)} | {same_sugg:>8} / {len(texts)}")
            for key in r.scan_iter("kb:marks:v1:bench-*"):
                r.delete(key)
    finally:
        SearchIndex.search_docs = real_search  # type: ignore[method-assign]
        if tmp is not None:
            stop_embedded_redis(Path(tmp.name))
            tmp.cleanup()


if __name__ == "__main__":
    main()
