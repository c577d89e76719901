"""The per-process index at scale: a slow rebuild runs behind the previous index instead of holding up the
question that noticed the edit; a new day is no rebuild; a failed rebuild leaves the previous index answering."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError

from knowledge.search import KnowledgeBase
from wxapp_backend.audit import SYSTEM
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store import services
from wxapp_backend.knowledge_store.cli import load_default_if_empty

NEW_PHRASING = "我们公司想请个洋专家要办啥手续"


@pytest.fixture
def runtime(app_ctx):
    load_default_if_empty()
    state = app_ctx.extensions["wxapp"]
    rt = services.KBRuntime(state.db, state.redis, check_interval=0)
    rt.get()
    return rt


def _edit(app_ctx):
    with session_scope() as s:
        services.add_phrasing(s, app_ctx.extensions["wxapp"].redis, SYSTEM, "talent-foreign-work-permit",
                              NEW_PHRASING)


def _holds_phrasing(kb: KnowledgeBase) -> bool:
    return NEW_PHRASING in kb.get("talent-foreign-work-permit").similar


def _slow_builds(runtime, monkeypatch):
    """Builds that take as long as the last one did (a large knowledge base): each waits for `release`."""
    release, started = threading.Event(), threading.Event()
    real = runtime._build

    def slow(day, version=""):
        started.set()
        assert release.wait(30)
        return real(day, version)

    monkeypatch.setattr(runtime, "_build", slow)
    runtime._last_build_seconds = runtime.wait_for_builds_under + 30  # what 100,000 entries take
    return release, started


def test_a_slow_rebuild_does_not_hold_up_the_question_that_noticed_the_edit(app_ctx, runtime, monkeypatch):
    before = runtime.get()
    release, started = _slow_builds(runtime, monkeypatch)
    _edit(app_ctx)
    answered = []
    asker = threading.Thread(target=lambda: answered.append(runtime.get()))
    asker.start()
    assert started.wait(10)
    asker.join(5)
    try:
        assert not asker.is_alive(), "the question waited for the whole rebuild"
        assert answered == [before]  # the previous index answered it
        assert runtime.get() is before  # so does every question while the rebuild runs
    finally:
        release.set()
        asker.join(30)
    runtime._builder.join(30) if runtime._builder else None
    after = runtime.get()
    assert after is not before and _holds_phrasing(after)


def test_a_quick_rebuild_is_waited_for_so_the_edit_is_in_the_next_answer(app_ctx, runtime):
    assert runtime._last_build_seconds < runtime.wait_for_builds_under
    _edit(app_ctx)
    assert _holds_phrasing(runtime.get())


def test_only_one_rebuild_runs_however_many_questions_notice_the_edit(app_ctx, runtime, monkeypatch):
    release, started = _slow_builds(runtime, monkeypatch)
    builds = []
    real = runtime._build

    def counted(day, version=""):
        builds.append(version)
        return real(day, version)

    monkeypatch.setattr(runtime, "_build", counted)
    _edit(app_ctx)
    for _ in range(5):
        runtime.get()
    release.set()
    if runtime._builder:
        runtime._builder.join(30)
    assert len(builds) == 1
    assert _holds_phrasing(runtime.get())


def test_a_failed_rebuild_leaves_the_previous_index_answering(app_ctx, runtime, monkeypatch):
    before = runtime.get()

    def broken(day, version=""):
        raise OperationalError("SELECT", {}, Exception("database gone"))

    monkeypatch.setattr(runtime, "_build", broken)
    _edit(app_ctx)
    assert runtime.get() is before
    monkeypatch.undo()
    if runtime._builder:
        runtime._builder.join(30)
    assert _holds_phrasing(runtime.get())  # the next check tries again


def test_a_new_day_is_not_a_rebuild_and_is_judged_by_that_day(app_ctx, runtime, monkeypatch):
    before = runtime.get()
    today = services.today_shanghai()
    built = []
    monkeypatch.setattr(runtime, "_build", lambda *a, **k: built.append(a) or before)
    monkeypatch.setattr(services, "today_shanghai", lambda: today + timedelta(days=1))
    kb = runtime.get()
    assert built == []
    assert kb.today == today + timedelta(days=1)
    assert kb._index is before._index  # the same index, judged on the new day
    key = runtime.content_key(kb)
    assert key is not None and key.endswith((today + timedelta(days=1)).isoformat())
    assert runtime.content_key(before).endswith(today.isoformat())
