"""A chat turn whose COMMIT reached the database but whose reply was lost (the connection dropped right after it) was
logged twice: the error sent it to the queue, and the queued job, stamped with a later time than the row written,
did not recognise it. The time is now fixed before the first try, so the job finds the row and logs nothing more."""

from __future__ import annotations

import contextlib

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from tests.integration.test_chat9_qa_s14 import _unanswered
from tests.integration.test_chat_qa_s9 import oa_kb, say  # noqa: F401  (the signed webhook and its helper)
from wxapp_backend import db as db_module
from wxapp_backend.db import session_scope
from wxapp_backend.knowledge_store.models import ChatTurn

UNKNOWN_Q = "火星基地的企业怎么缴纳社保呢"
LICENSE_Q = "营业执照丢了怎么办呀"


@contextlib.contextmanager
def reply_lost_after_commit(monkeypatch):
    """Every transaction commits, then fails as a dropped connection does after its COMMIT went out."""
    real = db_module.Database.session_scope

    @contextlib.contextmanager
    def committed_then_lost(self, *a, **kw):
        with real(self, *a, **kw) as s:
            yield s
        raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(db_module.Database, "session_scope", committed_then_lost)
    try:
        yield
    finally:
        monkeypatch.setattr(db_module.Database, "session_scope", real)


def _count(application, question: str) -> int:
    with application.app_context(), session_scope() as s:
        return s.scalar(select(func.count(ChatTurn.id)).where(ChatTurn.question == question))


def test_a_turn_whose_commit_reply_was_lost_is_logged_once(oa_kb, monkeypatch, run_jobs):  # noqa: F811
    say(oa_kb, "oLostCommit", "你好")  # known to the webhook: its user look-up is cached
    unanswered = _unanswered(oa_kb)
    with oa_kb.app_context():
        from wxapp_backend.knowledge_store.services import get_runtime

        get_runtime().get()
    with reply_lost_after_commit(monkeypatch):
        answered = say(oa_kb, "oLostCommit", LICENSE_Q)
        fell_back = say(oa_kb, "oLostCommit", UNKNOWN_Q)
    assert "一网通办" in answered, answered
    assert fell_back, fell_back
    assert _count(oa_kb, LICENSE_Q) == 1 and _count(oa_kb, UNKNOWN_Q) == 1  # the commits went through
    assert run_jobs() >= 2  # the two queued logs ran ...
    assert _count(oa_kb, LICENSE_Q) == 1 and _count(oa_kb, UNKNOWN_Q) == 1  # ... and found them
    assert _unanswered(oa_kb) == unanswered + 1
