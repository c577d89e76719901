"""Entry ids a browser rewrites in a path: "." and ".." are resolved away and "\\" is read as "/", so
/console/kb/<id>/edit of such an entry led to another page and the entry could not be edited or retired."""

from __future__ import annotations

import pytest

from knowledge.schema import Entry, validate_entry


def _entry(entry_id: str) -> Entry:
    return Entry(id=entry_id, question="营业执照丢了怎么补办？", answer="可以在一网通办申请补领。", category="政务服务")


@pytest.mark.parametrize("entry_id", [".", "..", "a\\b", "\\"])
def test_ids_a_browser_rewrites_are_refused(entry_id):
    errors = validate_entry(_entry(entry_id))
    assert any("“id”" in e for e in errors), errors


@pytest.mark.parametrize("entry_id", ["...", "a.b", ".hidden", "policy-001", "政策.2026"])
def test_dots_inside_an_id_are_still_fine(entry_id):
    assert validate_entry(_entry(entry_id)) == []
