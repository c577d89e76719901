"""The retrieval benchmark's tasks (bench/kb_eval.py) must not leak labels through the order of the index.

Ties between texts that normalise to the same words go to the lower document number (knowledge/index.py),
so an index that lists the answerable entries first would hand every tie to the gold entry. Synthetic pairs
only: the real eval data is never copied into the repository.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _kb_eval():
    spec = importlib.util.spec_from_file_location("kb_eval_under_test", ROOT / "bench" / "kb_eval.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _spread(ids: list[str], marked: set[str]) -> float:
    """Mean position (0 = first, 1 = last) of the marked ids in the index."""
    pos = [i / (len(ids) - 1) for i, x in enumerate(ids) if x in marked]
    return sum(pos) / len(pos)


def test_pair_task_index_order_does_not_put_the_answerable_entries_first(tmp_path: Path) -> None:
    kb_eval = _kb_eval()
    lines = []
    for c in range(400):  # 400 two-member clusters, plus 400 lone sentences (label-0 pairs)
        lines.append(f"问题{c}甲\t问题{c}乙\t1")
        lines.append(f"孤句{c}\t孤句{c}之二\t0")
    path = tmp_path / "pairs.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    task = kb_eval.pair_task("t", path, size=600, n_ans=100, n_oos=50, extra_sources=[])
    ids = [e.id for e in task.entries]
    gold = {g for _, golds in task.queries for g in golds}
    assert len(gold) == 100 and gold <= set(ids)
    assert len(set(ids)) == len(ids)
    # In building order the gold entries are the first 100 of 600 (mean position ~0.08); shuffled ~0.5.
    assert 0.35 < _spread(ids, gold) < 0.65


def test_gov_task_index_order_is_not_the_file_order(tmp_path: Path) -> None:
    kb_eval = _kb_eval()
    rows = [{"question": f"问{i}", "answer": f"答复{i}：请咨询相关部门。", "dept": "某局"} for i in range(300)]
    path = tmp_path / "gov_qa.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    task = kb_eval.gov_task(path)
    ids = [e.id for e in task.entries]
    assert sorted(ids, key=lambda x: int(x[1:])) != ids and set(ids) == {f"g{i}" for i in range(300)}
