"""Appeals QA (pass 14, appeals9): what the enterprise reads of staff notes, the chat's refused score, `now`.

- a staff note on 关闭 and a staff reason on 转办不成事 are staff's: the enterprise reads the step's own wording
  (as for 受理 / 交办 / 开始办理 / 协调会办), staff keep the note;
- a department handling a master sees its merged children (the same issue), but cannot open them;
- in the chat, a score the service refuses keeps the rating open and asks for the score again;
- the stored weekly report counts its response rate as of the tick's `now`; `press_own(now=...)` stamps its press
  at `now`, so “already pressed today” is judged on the same clock.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from handlers import appeal_followup as followup
from tests.integration.appeals.test_appeal_chat_followup import (  # noqa: F401  (the chat fixture)
    _ratings,
    chat,
)
from tests.integration.test_appeals2_qa_s11 import at, w  # noqa: F401  (pass 11's fixture)
from wxapp_backend.appeals import jobs, services
from wxapp_backend.appeals.models import AppealEvent, AppealReport
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.errors import NotFound, ValidationError

MONDAY = at(2025, 11, 3, 10, 0)
SECRET = "张科长说这家企业老是投诉，不用理"


def _public(appeal_id, action):
    with session_scope() as s:
        body = services.detail_for_user(s, services.get_appeal(s, appeal_id, Actor("system", None)))
        return [e["note"] for e in body["timeline"] if e["action"] == action]


# --- 1. 关闭 and 转办不成事: the enterprise reads the standard wording ---------------------------------------------

def test_a_staff_note_on_close_is_not_shown_to_the_enterprise(w):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "resolve", now=MONDAY + timedelta(hours=1), resolution="已更换税控盘")
    w.act(appeal_id, "close", now=MONDAY + timedelta(days=10), note=SECRET)  # past 7 working days
    ((note,),) = [(n,) for n in _public(appeal_id, "closed")]
    assert SECRET not in note and "关闭" in note and "评价期已过" in note
    ((staff_note, _),) = w.events(appeal_id, "closed")
    assert SECRET in staff_note  # staff keep it


def test_a_staff_reason_on_escalation_is_not_shown_to_the_enterprise(w):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "escalate", now=MONDAY + timedelta(hours=1), reason=SECRET)
    (note,) = _public(appeal_id, "escalated")
    assert SECRET not in note and "办不成事" in note
    ((staff_note, _),) = w.events(appeal_id, "escalated")
    assert SECRET in staff_note
    # The enterprise's own reason is its own words: still shown to it.
    mine = w.submit(MONDAY)
    with session_scope() as s:
        services.escalate_by_user(s, w.user.id, mine, "跑了三趟还是办不了")
    (own,) = _public(mine, "escalated")
    assert "跑了三趟还是办不了" in own


# --- 2. a department sees the merged children of the master it handles -------------------------------------------

def test_a_department_sees_its_masters_merged_children_but_cannot_open_them(w):  # noqa: F811
    master = w.submit(MONDAY)
    child = w.submit(MONDAY, content="税控盘坏了，发票开不出来，很着急")
    w.act(master, "accept", now=MONDAY)
    w.act(master, "assign", now=MONDAY, department="税务所")
    w.act(child, "accept", now=MONDAY)
    w.act(child, "merge", now=MONDAY, master_id=master)
    tax = Actor("staff", w.tax.id, role="dept", name="税务所", department="税务所")
    with session_scope() as s:
        body = services.detail_for_staff(s, services.get_appeal(s, master, tax), tax)
    assert [c["id"] for c in body["children"]] == [child]
    assert set(body["children"][0]) == {"id", "number", "status"}  # no content, no enterprise
    with session_scope() as s, pytest.raises(NotFound):  # opening one is still the child's own rule
        services.get_appeal(s, child, tax)


# --- 3. the chat: a refused score asks again -----------------------------------------------------------------------

def test_a_refused_score_in_the_chat_keeps_the_rating_open(chat, monkeypatch):  # noqa: F811
    appeal_id, number = chat.resolved()
    chat("评价")
    chat("1")
    chat("4")
    real = services.rate

    def refuse(*a, **kw):
        raise ValidationError("满意度请打 1 到 5 分。", fields={"satisfaction": "应为 1 到 5 分"})

    monkeypatch.setattr(services, "rate", refuse)
    reply = chat("跳过")
    assert "1 到 5" in reply and followup.ASK_STARS in reply
    monkeypatch.setattr(services, "rate", real)
    assert chat("5") == followup.ASK_COMMENT  # still in the rating, asked the score again
    assert chat("跳过") == followup.RATED_CLOSED.format(number=number)
    assert [(r.resolved, r.satisfaction) for r in _ratings(appeal_id)] == [(True, 5)]


# --- 4. the tick's `now` -------------------------------------------------------------------------------------------

def test_the_stored_weekly_report_counts_responses_as_of_the_ticks_now(w, db):  # noqa: F811
    appeal_id = w.submit(at(2025, 11, 2, 20, 0))  # Sunday evening: its response is due on Monday
    assert w.appeal(appeal_id).response_due_at > MONDAY
    jobs.tick(now=MONDAY)
    (data,) = db.scalars(select(AppealReport.data)).all()
    # Not yet due at the tick: neither a hit nor a miss (against the real clock it was a miss, 0 %).
    assert data["metrics"]["response"]["denominator"] == 0


def test_press_own_judges_today_on_its_own_clock(w):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    with session_scope() as s:
        assert services.press_own(s, w.user.id, appeal_id, now=MONDAY)
    with session_scope() as s:
        assert s.scalar(select(AppealEvent.created_at).where(AppealEvent.appeal_id == appeal_id,
                                                             AppealEvent.action == "pressed")) == MONDAY
    with session_scope() as s:
        assert not services.press_own(s, w.user.id, appeal_id, now=MONDAY + timedelta(hours=2))
    with session_scope() as s:  # the next day: a new press
        assert services.press_own(s, w.user.id, appeal_id, now=MONDAY + timedelta(days=1))
