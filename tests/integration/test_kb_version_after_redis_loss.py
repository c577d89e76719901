"""The knowledge-base version every process watches survives Redis losing its data: it was a counter, so after a
Redis restart (no persistence) the first edits counted 1, 2, ... again and a process that had seen the same
number before kept its old index until its once-a-minute table check. (The test suite met this too: each test
starts from an empty Redis.)"""

from __future__ import annotations

from knowledge.schema import Entry
from wxapp_backend.audit import SYSTEM
from wxapp_backend.db import get_db, session_scope
from wxapp_backend.knowledge_store import services


def test_an_edit_after_redis_lost_the_version_still_reaches_every_process(app_ctx):
    r = app_ctx.extensions["wxapp"].redis
    runtime = services.KBRuntime(get_db(), r, check_interval=0.0, full_check_interval=3600.0)
    # Always wait for the rebuild: on a loaded machine the first build can take longer than the runtime's
    # wait-for-it limit, and the next get() would then (rightly) still answer from the previous index.
    runtime.wait_for_builds_under = float("inf")
    r.delete(services.VERSION_KEY)
    with session_scope() as s:
        services.import_entries(s, r, SYSTEM, [Entry(id="first", question="公司注册要多久？", answer="一般 1 天。")])
    assert runtime.get().get("first") is not None
    r.delete(services.VERSION_KEY)  # Redis restarted without its data
    with session_scope() as s:
        services.import_entries(s, r, SYSTEM, [Entry(id="second", question="社保怎么开户？", answer="一网通办。")])
    assert runtime.get().get("second") is not None
