"""A console save during a knowledge-base import (PostgreSQL): the import's stale copy used to write over it."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from knowledge.schema import Entry
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.errors import Conflict
from wxapp_backend.knowledge_store import services
from wxapp_backend.knowledge_store.models import KBEntry

ADMIN = Actor("staff", 1, "admin", name="admin")
BASE = Entry(id="race-entry", question="公司注册要多久？", answer="一般 1 个工作日。", similar=("注册要几天",))


def _race(app, monkeypatch, *, lock: bool) -> tuple[str, KBEntry]:
    r = app.extensions["wxapp"].redis
    with session_scope() as s:
        services.import_entries(s, r, ADMIN, [BASE])
    with session_scope() as s:
        start = s.get(KBEntry, BASE.id).revision
    monkeypatch.setattr(services, "IMPORT_LOCKS", lock)
    real = services._row_values
    read = threading.Event()

    def slow_row_values(entry):  # the import has read the rows; hold it there while the console saves
        read.set()
        time.sleep(1.0)
        return real(entry)

    monkeypatch.setattr(services, "_row_values", slow_row_values)
    console: dict[str, str] = {}

    def save():
        read.wait(10)
        with app.app_context():
            try:
                with session_scope() as s:
                    services.save_entry(s, r, ADMIN, dataclasses.replace(BASE, answer="控制台改的：当天办结。"),
                                        create=False, revision=start)
                console["result"] = "saved"
            except Conflict:
                console["result"] = "409"

    t = threading.Thread(target=save)
    t.start()
    with session_scope() as s:
        services.import_entries(s, r, ADMIN, [dataclasses.replace(BASE, answer="文件里的：3 个工作日。")])
    t.join(20)
    with session_scope() as s:
        row = s.get(KBEntry, BASE.id)
        s.expunge(row)
    return console["result"], row, start


@pytest.mark.postgres
def test_a_console_save_during_an_import_is_refused_not_lost(app, app_ctx, monkeypatch):
    result, row, start = _race(app, monkeypatch, lock=True)
    assert result == "409"  # the staff member is told; nothing of theirs was silently dropped
    assert row.answer == "文件里的：3 个工作日。" and row.revision == start + 1


@pytest.mark.postgres
def test_negative_control_without_the_lock_the_console_save_is_lost(app, app_ctx, monkeypatch):
    result, row, start = _race(app, monkeypatch, lock=False)
    assert result == "saved"  # the console was told it saved...
    assert row.answer == "文件里的：3 个工作日。" and row.revision == start + 1  # ...and its change is gone
