"""Appeals QA (pass 14, appeals8): the periodic tick and what it leaves unsaid.

- a 差评整改 task past its 5 working days is flagged once and its department alerted (only 会办 tasks were);
- an appeal the tick closes when the 7-day rating window ends tells the enterprise, as a close by staff does;
- `services.rate()` refuses a score outside 1-5 itself (a bad one reached the database's check, and the chat said
  “已经评价过了”);
- the 企业问题清单 keeps an appeal merged into another enterprise's master (it vanished from its own list);
- `tick(now=...)` on a Monday stores the report of the week before `now`, not before the real clock.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.integration.test_appeals2_qa_s11 import _alerts, _link, at, w  # noqa: F401  (pass 11's fixture)
from wxapp_backend.appeals import jobs, reports, services
from wxapp_backend.appeals.models import AppealRating, AppealReport, AppealTask
from wxapp_backend.db import session_scope
from wxapp_backend.errors import ValidationError
from wxapp_backend.notices.models import InboxItem, Notification

MONDAY = at(2025, 11, 3, 10, 0)


def _resolved(w, department="税务所", now=MONDAY):  # noqa: F811
    appeal_id = w.submit(now)
    w.act(appeal_id, "accept", now=now)
    w.act(appeal_id, "assign", now=now, department=department)
    w.act(appeal_id, "resolve", now=now + timedelta(hours=2), resolution="已更换税控盘")
    return appeal_id


# --- 1. a 差评整改 past its deadline is noticed -------------------------------------------------------------------

def test_an_overdue_rectification_task_is_flagged_once_and_its_department_alerted(w, db, make_user):  # noqa: F811
    phone = make_user(nickname="税务所小王")
    _link(w.tax, phone.id)
    appeal_id = _resolved(w)
    with session_scope() as s:
        services.rate(s, w.user.id, appeal_id, resolved=True, satisfaction=1, comment="态度很差",
                      now=at(2025, 11, 4, 10, 0))
    with session_scope() as s:
        task = s.scalar(select(AppealTask).where(AppealTask.appeal_id == appeal_id,
                                                 AppealTask.kind == "rectification"))
        due, task_id = task.due_at, task.id
    assert w.appeal(appeal_id).status == "closed"
    before = len(_alerts(db, phone.id))
    jobs.tick(now=due - timedelta(minutes=1))
    assert not w.events(appeal_id, "rectification_overdue")
    done = jobs.tick(now=due + timedelta(minutes=1))
    assert done["tasks_overdue"] == 1
    ((note, data),) = w.events(appeal_id, "rectification_overdue")
    assert "整改" in note and data["task_id"] == task_id
    alerts = _alerts(db, phone.id)
    assert len(alerts) == before + 1 and "整改" in alerts[-1].title + alerts[-1].body
    assert "会办" not in alerts[-1].body
    assert jobs.tick(now=due + timedelta(hours=3))["tasks_overdue"] == 0  # once
    assert len(_alerts(db, phone.id)) == before + 1 and len(w.events(appeal_id, "rectification_overdue")) == 1


# --- 2. the enterprise hears that the rating window closed its appeal --------------------------------------------

def test_an_appeal_closed_by_the_rating_windows_end_tells_the_enterprise(w, db):  # noqa: F811
    appeal_id = _resolved(w)
    with session_scope() as s:
        ends = services.rating_window_ends(services.get_appeal(s, appeal_id, w.actor))
    assert jobs.tick(now=ends + timedelta(minutes=5))["closed"] == 1
    assert w.appeal(appeal_id).status == "closed"
    db.expire_all()
    (told,) = db.scalars(select(Notification).where(Notification.user_id == w.user.id,
                                                    Notification.kind == "appeal_closed")).all()
    item = db.get(InboxItem, told.inbox_item_id)
    assert "评价" in item.body and w.appeal(appeal_id).number in item.body and item.title == "您的诉求已关闭"
    assert [d["kind"] for _, d in w.events(appeal_id, "notified")][-1] == "appeal_closed"
    jobs.tick(now=ends + timedelta(minutes=10))
    db.expire_all()
    assert len(db.scalars(select(Notification).where(Notification.user_id == w.user.id,
                                                     Notification.kind == "appeal_closed")).all()) == 1


# --- 3. the service itself refuses a score outside 1-5 ---------------------------------------------------------

@pytest.mark.parametrize("score", [0, 6, -1])
def test_rate_refuses_a_score_outside_one_to_five(w, db, score):  # noqa: F811
    appeal_id = _resolved(w)
    with pytest.raises(ValidationError) as err, session_scope() as s:
        services.rate(s, w.user.id, appeal_id, resolved=True, satisfaction=score, now=at(2025, 11, 4, 10, 0))
    assert "1" in err.value.message and "5" in err.value.message
    db.expire_all()
    assert db.scalar(select(AppealRating.id).where(AppealRating.appeal_id == appeal_id)) is None
    assert w.appeal(appeal_id).status == "resolved"


# --- 4. a merged appeal stays in its own enterprise's 问题清单 ----------------------------------------------------

def test_an_appeal_merged_into_another_enterprises_master_stays_in_its_issue_list(w, db, make_enterprise,  # noqa: F811
                                                                                   make_user):
    other_ent = make_enterprise()
    other_user = make_user(enterprise_id=other_ent.id, binding_state="verified")
    master = w.submit(MONDAY, content="新华大厦电梯坏了三天了一直没人修")
    child = w.submit(MONDAY, user_id=other_user.id, content="新华大厦的电梯坏了好几天没人修理")
    own_dup = w.submit(MONDAY, content="新华大厦电梯又坏了还是没人修")
    for appeal_id in (master, child, own_dup):
        w.act(appeal_id, "accept", now=MONDAY)
    w.act(child, "merge", now=MONDAY, master_id=master)
    w.act(own_dup, "merge", now=MONDAY, master_id=master)
    with session_scope() as s:
        report = reports.enterprise_issues(s)
    lists = {e["enterprise_id"]: [r["number"] for r in e["appeals"]] for e in report["enterprises"]}
    assert lists[other_ent.id] == [w.appeal(child).number]
    assert [r["status"] for e in report["enterprises"] if e["enterprise_id"] == other_ent.id
            for r in e["appeals"]] == ["已合并"]
    # still being handled (with its master): counted open, as it was before the merge
    assert [e["open"] for e in report["enterprises"] if e["enterprise_id"] == other_ent.id] == [1]
    # merged into its own enterprise's master: the same issue, listed once (the master's row)
    assert lists[w.appeal(master).enterprise_id] == [w.appeal(master).number]


# --- 5. the Monday report of tick(now=...) ----------------------------------------------------------------------

def test_a_monday_tick_stores_the_report_of_the_week_before_its_now(w, db):  # noqa: F811
    assert jobs.tick(now=MONDAY)["reports"] == 1
    db.expire_all()
    assert db.scalars(select(AppealReport.week)).all() == ["2025-W44"]


def test_an_overdue_rectification_the_centre_owes_reaches_the_centres_staff(w, db, make_user, make_staff):  # noqa: F811
    centre = make_staff(role="staff")
    phone = make_user(nickname="中心小张")
    _link(centre, phone.id)
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "resolve", now=MONDAY + timedelta(hours=1), resolution="中心已电话解答")  # never given out
    with session_scope() as s:
        services.rate(s, w.user.id, appeal_id, resolved=True, satisfaction=2, now=at(2025, 11, 4, 10, 0))
    with session_scope() as s:
        task = s.scalar(select(AppealTask).where(AppealTask.appeal_id == appeal_id,
                                                 AppealTask.kind == "rectification"))
        due, department = task.due_at, task.department
    assert department == services.CENTRE
    jobs.tick(now=due + timedelta(minutes=1))
    assert len(w.events(appeal_id, "rectification_overdue")) == 1
    assert any("整改" in a.title for a in _alerts(db, phone.id))
    assert not w.events(appeal_id, "staff_unreachable")
