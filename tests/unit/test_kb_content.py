"""Content checks for the default knowledge base and the labelled question set (PyYAML only)."""

import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KB_DIR = ROOT / "knowledge" / "data"
LABELLED = ROOT / "tests" / "data" / "kb_labelled.jsonl"
ID_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def _entries() -> list[dict]:
    entries: list[dict] = []
    for path in sorted(KB_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert isinstance(data, list), f"{path.name} must hold a list of entries"
        for item in data:
            item["_file"] = path.name
            entries.append(item)
    return entries


def _labelled() -> list[dict]:
    rows = []
    for n, line in enumerate(LABELLED.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            assert set(row) == {"q", "ids", "split"}, f"line {n}: keys must be q, ids and split"
            assert row["split"] in ("dev", "test"), f"line {n}: split must be dev or test"
            rows.append(row)
    return rows


@pytest.fixture(scope="module")
def entries() -> list[dict]:
    return _entries()


@pytest.fixture(scope="module")
def labelled() -> list[dict]:
    return _labelled()


def test_entry_count(entries):
    assert len(entries) >= 150


def test_ids_unique_and_slugs(entries):
    ids = [e.get("id") for e in entries]
    assert all(isinstance(i, str) and ID_RE.match(i) for i in ids), [
        i for i in ids if not ID_RE.match(str(i))
    ]
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, dupes


def test_entry_fields(entries):
    for e in entries:
        where = f"{e['_file']}:{e['id']}"
        assert isinstance(e.get("question"), str) and e["question"].strip(), where
        assert isinstance(e.get("answer"), str) and e["answer"].strip(), where
        assert isinstance(e.get("category"), str) and e["category"].strip(), where
        similar = e.get("similar")
        assert isinstance(similar, list) and len(similar) >= 3, where
        assert all(isinstance(s, str) and s.strip() for s in similar), where
        assert isinstance(e.get("tags", []), list), where
        assert isinstance(e.get("policy", {}), dict), where


def test_some_policies_expired(entries):
    import datetime as dt

    expired = [
        e
        for e in entries
        if isinstance(e.get("policy"), dict)
        and isinstance(e["policy"].get("valid_until"), dt.date)
        and e["policy"]["valid_until"] < dt.date(2023, 1, 1)
    ]
    assert len(expired) >= 3


def test_labelled_counts(labelled):
    assert len(labelled) >= 300
    assert sum(1 for r in labelled if not r["ids"]) >= 60


def test_labelled_split_is_deterministic(labelled):
    # dev = sha1(question) divisible by 3 (about a third); everything else is test.
    import hashlib

    for r in labelled:
        h = int(hashlib.sha1(r["q"].encode("utf-8")).hexdigest(), 16)
        assert r["split"] == ("dev" if h % 3 == 0 else "test"), r["q"]
    dev = sum(1 for r in labelled if r["split"] == "dev")
    assert 0.25 < dev / len(labelled) < 0.42


def test_labelled_ids_exist(entries, labelled):
    ids = {e["id"] for e in entries}
    missing = {i for r in labelled for i in r["ids"] if i not in ids}
    assert not missing, missing


def test_labelled_questions_not_copied(entries, labelled):
    texts = set()
    for e in entries:
        texts.add(e["question"].strip())
        texts.update(s.strip() for s in e["similar"])
    copied = [r["q"] for r in labelled if r["q"].strip() in texts]
    assert not copied, copied


def test_labelled_questions_unique(labelled):
    qs = [r["q"] for r in labelled]
    assert len(qs) == len(set(qs)), {q for q in qs if qs.count(q) > 1}
