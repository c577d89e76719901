"""A process that starts while the database is away answers from the copy of the knowledge base kept on disk by the
last build, and goes back to the database as soon as it answers again. Before, such a process (a gunicorn worker
recycled during a PostgreSQL restart) had no index at all and could answer no question until the database was back."""

from __future__ import annotations

import contextlib
import gzip
import os
from datetime import date

import pytest
from sqlalchemy.exc import OperationalError

from knowledge.schema import Entry
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend import db as db_module
from wxapp_backend.audit import SYSTEM
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store import services, snapshot
from wxapp_backend.knowledge_store.cli import load_default_if_empty

QUESTION = "外籍人才工作许可怎么办"
GOLD = "talent-foreign-work-permit"
NEW_PHRASING = "老外来我们公司上班要办啥证"


@contextlib.contextmanager
def database_away(monkeypatch):
    @contextlib.contextmanager
    def away(self, *a, **kw):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        yield  # pragma: no cover

    real = db_module.Database.session_scope
    monkeypatch.setattr(db_module.Database, "session_scope", away)
    try:
        yield
    finally:
        monkeypatch.setattr(db_module.Database, "session_scope", real)


@pytest.fixture
def kept(app_ctx, tmp_path):
    load_default_if_empty()
    return tmp_path / "kb-snapshot.jsonl.gz"


def _runtime(app_ctx, path, **kw):
    state = app_ctx.extensions["wxapp"]
    return services.KBRuntime(state.db, state.redis, check_interval=0, snapshot=path, **kw)


def _built(runtime):
    """The runtime's index, once its copy on disk (written behind the build) is kept."""
    kb = runtime.get()
    if runtime._keeper is not None:
        runtime._keeper.join(30)
    return kb


def test_a_copy_round_trips_every_field(tmp_path):
    entries = [
        Entry(id="p1", question="小微企业贷款贴息", answer="见原文", similar=("贷款贴息怎么申请", "贴息"),
              category="惠企政策", tags=("金融", "小微"), issuer="区财政局", eligibility="小微企业", conditions="纳税",
              window="每年3月", benefit="贴息50%", where_to_apply="一网通办", url="https://example.gov.cn/p1",
              valid_from=date(2026, 1, 1), valid_until=date(2026, 12, 31), retired=True),
        Entry(id="q2", question="营业执照丢了怎么办", answer="补领 😀"),
    ]
    path = tmp_path / "copy.jsonl.gz"
    assert snapshot.write(path, entries, (2, 7))
    assert snapshot.read(path) == (entries, (2, 7))
    assert snapshot.stamp_of(path) == (2, 7)
    assert not list(tmp_path.glob("*.tmp"))


def test_a_damaged_copy_is_not_used(tmp_path):
    path = tmp_path / "copy.jsonl.gz"
    entries = [Entry(id=f"e{i}", question=f"问题{i}", answer="答") for i in range(50)]
    snapshot.write(path, entries, (50, 50))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # cut short (a full disk, a copy taken by hand)
    assert snapshot.read(path) is None
    with gzip.open(path, "wt", encoding="utf-8") as f:  # a line fewer than its stamp says
        f.write('{"format": 1, "stamp": [51, 51]}\n' + "".join(
            f'{{"id": "e{i}", "question": "问题{i}", "answer": "答"}}\n' for i in range(50)))
    assert snapshot.read(path) is None
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write('{"format": 99, "stamp": [0, 0]}\n')
    assert snapshot.read(path) is None
    assert snapshot.read(tmp_path / "missing.jsonl.gz") is None


def test_each_database_has_its_own_copy(tmp_path):
    a = snapshot.snapshot_path(tmp_path, "postgresql://u:secret@db1/wx")
    b = snapshot.snapshot_path(tmp_path, "postgresql://u:secret@db2/wx")
    assert a != b and a.parent == tmp_path
    assert "secret" not in a.name and "db1" not in a.name


def test_the_database_away_at_the_first_question_answers_from_the_copy(app_ctx, kept, monkeypatch):
    built = _built(_runtime(app_ctx, kept))
    assert kept.exists()
    fresh = _runtime(app_ctx, kept)
    with database_away(monkeypatch):
        kb = fresh.get()
        assert kb.search(QUESTION, 3)[0].entry.id == GOLD
        assert [(h.entry.id, h.confidence) for h in kb.search(QUESTION, 5)] == [(h.entry.id, h.confidence) for h in built.search(QUESTION, 5)]
        assert len(kb.entries) == len(built.entries)
    # Negative control: no copy, and the same start has no index to answer from.
    bare = _runtime(app_ctx, None)
    with database_away(monkeypatch), pytest.raises(OperationalError):
        bare.get()


def test_the_database_back_the_index_is_rebuilt_from_it(app_ctx, kept, monkeypatch):
    _built(_runtime(app_ctx, kept))
    fresh = _runtime(app_ctx, kept)
    fresh.snapshot_retry_interval = 0
    with database_away(monkeypatch):
        from_copy = fresh.get()
        assert fresh.get() is from_copy  # tried again behind it, and failed: the copy goes on answering
        if fresh._builder:
            fresh._builder.join(30)
    with session_scope() as s:  # an edit made meanwhile (another machine saw the database first)
        services.add_phrasing(s, app_ctx.extensions["wxapp"].redis, SYSTEM, GOLD, NEW_PHRASING)
    fresh.get()
    if fresh._builder:
        fresh._builder.join(30)
    rebuilt = fresh.get()
    assert rebuilt is not from_copy
    assert NEW_PHRASING in rebuilt.get(GOLD).similar
    assert NEW_PHRASING not in from_copy.get(GOLD).similar


def test_the_copy_is_written_once_per_content(app_ctx, kept):
    _built(_runtime(app_ctx, kept))
    first = kept.stat().st_mtime_ns
    os.utime(kept, ns=(first - 10**9, first - 10**9))
    _built(_runtime(app_ctx, kept))  # another process, the same rows: not written again
    assert kept.stat().st_mtime_ns == first - 10**9
    with session_scope() as s:
        services.add_phrasing(s, app_ctx.extensions["wxapp"].redis, SYSTEM, GOLD, NEW_PHRASING)
    _built(_runtime(app_ctx, kept))
    entries, _stamp = snapshot.read(kept)
    assert NEW_PHRASING in next(e for e in entries if e.id == GOLD).similar


def test_a_refused_write_leaves_the_answers_going(app_ctx, tmp_path):
    load_default_if_empty()
    folder = tmp_path / "not-a-folder"
    folder.write_text("x")
    kb = _built(_runtime(app_ctx, folder / "kb.jsonl.gz"))
    assert kb.search(QUESTION, 1)[0].entry.id == GOLD


def test_a_wechat_question_in_a_fresh_process_with_the_database_away(oa_kb, monkeypatch):  # noqa: F811
    with oa_kb.app_context():
        _built(services.get_runtime())  # the last build before the restart kept its copy
        oa_kb.extensions.pop("wxapp_kb")  # a new process: no index in memory
    with database_away(monkeypatch):
        reply = say(oa_kb, "oSnapshotUser", QUESTION)
    assert "工作许可" in reply, reply
    # Negative control: without the copy the same process has nothing to answer from.
    state = oa_kb.extensions["wxapp"]
    snapshot.snapshot_path(state.settings.instance_path, state.settings.resolved_database_url).unlink()
    oa_kb.extensions.pop("wxapp_kb")
    with database_away(monkeypatch):
        reply = say(oa_kb, "oSnapshotUser2", QUESTION)
    assert "工作许可" not in reply, reply


def test_two_writers_of_one_process_never_mix_their_copies(tmp_path):
    """Each write has a temporary file of its own: two at once (two runtimes of one process) leave one whole copy."""
    import threading

    path = tmp_path / "copy.jsonl.gz"
    sets = [[Entry(id=f"{w}{i}", question=f"问题{w}{i}", answer="答" * 200) for i in range(3000)] for w in "ab"]
    go = threading.Barrier(2)
    written = []

    def writer(entries):
        go.wait()
        written.append(snapshot.write(path, entries, (len(entries), len(entries))))

    threads = [threading.Thread(target=writer, args=(e,)) for e in sets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert written == [True, True]  # a shared temporary file: the second replace found it gone
    kept = snapshot.read(path)
    assert kept is not None and kept[0] in sets
    assert not list(tmp_path.glob("*.tmp"))
