"""Operations, crash safety and the one-command start (QA pass 11)."""

from __future__ import annotations

from wxapp_backend.db import session_scope

# --------------------------------------------------------------------------- test isolation: the KB index


def _kb_ids(app) -> list[str]:
    from wxapp_backend.knowledge_store.services import get_runtime

    with app.app_context():
        return sorted(e.id for e in get_runtime().get().entries)


def test_kb_isolation_first_test_builds_an_index(app_ctx):
    """With the next test: the suite's one application keeps this process's knowledge-base index between tests.
    `_clean` emptied the tables and Redis but not that index, so the next test searched this test's entries: a
    test adding rows as this one does (no version bump) saw them for a minute, and one that loaded the default
    knowledge base saw them for a second (`kb search` printed "决定：fallback" for 营业执照 after
    test_inputs_qa_s9's console test when run as test_api_fuzz, test_auth, test_inputs_qa_s9, test_contract_qa_s9)."""
    from wxapp_backend.knowledge_store.models import KBEntry

    with session_scope() as s:
        s.add(KBEntry(id="qa-s11-first", question="外籍人才工作许可怎么办", answer="到一网通办申请。"))
    assert _kb_ids(app_ctx) == ["qa-s11-first"]


def test_kb_isolation_second_test_sees_only_its_own_entries(app_ctx):
    from wxapp_backend.knowledge_store.models import KBEntry

    with session_scope() as s:
        s.add(KBEntry(id="qa-s11-second", question="社保怎么开户", answer="一网通办。"))
    assert _kb_ids(app_ctx) == ["qa-s11-second"]
