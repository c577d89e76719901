"""Appeals QA (pass 12, fourth wave): the staff side — who hears of an appeal, who may decide what, and when.

- 交办 and 改派承办人 reach the newly responsible department's WeChat-linked staff / the new handler, once each,
  never the one acting;
- an appeal still 已提交 alerts the centre (who must accept it), not the department guessed at submission;
- the one who asked for a 延期 does not approve it;
- an ended appeal's handler and category stay as they ended;
- the console's 会办 form refuses 0 days instead of turning them into 3;
- a 退单 or 延期 still waiting when the appeal is 办结 ends with it.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select  # noqa: F401

from tests.integration.test_appeals2_qa_s11 import (  # noqa: F401  (the last pass's fixture)
    _alerts,
    _link,
    at,
    w,
)
from wxapp_backend.appeals import jobs, services  # noqa: F401
from wxapp_backend.appeals.models import AppealExtension, AppealReturn  # noqa: F401
from wxapp_backend.audit import Actor
from wxapp_backend.db import session_scope
from wxapp_backend.errors import Conflict, Forbidden, ValidationError  # noqa: F401

MONDAY = at(2025, 11, 3, 10, 0)


def _actor(staff, name):
    return Actor("staff", staff.id, role=staff.role, name=name, department=staff.department)


def _refused(fn, exc_type):
    try:
        fn()
    except exc_type as exc:
        return exc
    raise AssertionError(f"not refused with {exc_type.__name__}")


# --- 1. 交办 and 改派承办人 reach those who now answer for the appeal -------------------------------------------

def test_assigning_alerts_the_new_departments_linked_staff_once_not_the_one_assigning(w, db, make_user, make_staff):  # noqa: F811
    tax_phone, city_phone, admin_phone = (make_user(nickname=n) for n in ("税务所小王", "城运小李", "管理员手机"))
    city = make_staff(role="dept", department="城运中心")
    _link(w.tax, tax_phone.id)
    _link(city, city_phone.id)
    _link(w.admin, admin_phone.id)  # the one accepting and assigning: never told of its own act
    appeal_id = w.submit(MONDAY)
    number = w.appeal(appeal_id).number
    w.act(appeal_id, "accept", now=MONDAY)
    assert _alerts(db, tax_phone.id) == []  # accepted, not yet 交办: the department has nothing to do yet
    w.act(appeal_id, "assign", now=MONDAY, department="税务所")
    (alert,) = _alerts(db, tax_phone.id)
    assert number in alert.title and "交办" in alert.title and "税务所" in alert.body
    assert _alerts(db, city_phone.id) == [] and _alerts(db, admin_phone.id) == []
    (told,) = w.events(appeal_id, "staff_notified")
    assert told[1]["alert"] == "assigned"
    # Re-routed to 城运中心 (another 交办): 城运中心 hears of it, 税务所 is not told again.
    w.act(appeal_id, "assign", now=MONDAY + timedelta(hours=1), department="城运中心")
    assert len(_alerts(db, city_phone.id)) == 1 and len(_alerts(db, tax_phone.id)) == 1
    assert _alerts(db, admin_phone.id) == []


def test_a_new_handler_is_alerted_of_the_reassignment_and_no_one_else(w, db, make_user, make_staff):  # noqa: F811
    tax_phone, colleague_phone, admin_phone = (make_user(nickname=n) for n in ("税务所小王", "税务所小赵", "管理员"))
    colleague = make_staff(role="dept", department="税务所")
    _link(w.tax, tax_phone.id)
    _link(colleague, colleague_phone.id)
    _link(w.admin, admin_phone.id)
    appeal_id = w.submit(MONDAY)
    w.act(appeal_id, "accept", now=MONDAY)
    w.act(appeal_id, "assign", now=MONDAY, department="税务所", handler_id=w.tax.id)
    assert len(_alerts(db, tax_phone.id)) == 1 and len(_alerts(db, colleague_phone.id)) == 1
    w.act(appeal_id, "reassign", now=MONDAY + timedelta(hours=1), handler_id=colleague.id)
    alerts = _alerts(db, colleague_phone.id)
    assert len(alerts) == 2 and "承办" in alerts[1].body and w.appeal(appeal_id).number in alerts[1].title
    assert len(_alerts(db, tax_phone.id)) == 1 and _alerts(db, admin_phone.id) == []
    assert [d["alert"] for _, d in w.events(appeal_id, "staff_notified")] == ["assigned", "handler_changed"]
    # Naming oneself as handler alerts nobody.
    w.act(appeal_id, "reassign", now=MONDAY + timedelta(hours=2), handler_id=w.admin.id)
    assert _alerts(db, admin_phone.id) == [] and len(_alerts(db, colleague_phone.id)) == 2


# --- 2. an appeal nobody has accepted yet alerts the centre, who must accept it ----------------------------------

def test_alerts_on_an_appeal_not_yet_accepted_go_to_the_centre_not_the_guessed_department(w, db, make_user,  # noqa: F811
                                                                                          make_staff):
    tax_phone, centre_phone, admin_phone = (make_user(nickname=n) for n in ("税务所小王", "中心小陈", "管理员手机"))
    centre = make_staff(role="staff")
    _link(w.tax, tax_phone.id)
    _link(centre, centre_phone.id)
    _link(w.admin, admin_phone.id)
    appeal_id = w.submit(MONDAY)
    a = w.appeal(appeal_id)
    assert a.status == "submitted" and a.department == "税务所"  # chosen by the rules at submission
    jobs.tick(now=a.due_at - timedelta(minutes=30))
    assert _alerts(db, tax_phone.id) == []  # 税务所 has not been given it: nothing it can do yet
    (alert,) = _alerts(db, centre_phone.id)
    assert "临期" in alert.title and a.number in alert.title
    assert len(_alerts(db, admin_phone.id)) == 1
    (note, data), = w.events(appeal_id, "staff_notified")
    assert data["alert"] == "due_soon" and "营商服务中心" in note and "税务所" not in note
    with session_scope() as s:
        assert services.press_own(s, w.user.id, appeal_id, now=a.due_at - timedelta(minutes=10)) is True
    assert len(_alerts(db, centre_phone.id)) == 2 and _alerts(db, tax_phone.id) == []
    # The centre's 催办 of an appeal still waiting to be accepted: the centre's others, not the one urging.
    w.act(appeal_id, "urge", now=a.due_at - timedelta(minutes=5), note="请尽快受理")
    assert len(_alerts(db, centre_phone.id)) == 3 and len(_alerts(db, admin_phone.id)) == 2
    assert _alerts(db, tax_phone.id) == []
    # Accepted and given to 税务所: from then on it is 税务所's.
    w.act(appeal_id, "accept", now=a.due_at - timedelta(minutes=4))
    w.act(appeal_id, "assign", now=a.due_at - timedelta(minutes=3), department="税务所")
    jobs.tick(now=a.due_at + timedelta(minutes=5))
    assert [x.title.split("：")[0] for x in _alerts(db, tax_phone.id)] == ["新交办诉求", "已超期"]


def test_an_unaccepted_appeal_nobody_at_the_centre_could_hear_of_says_so(w, db):  # noqa: F811
    appeal_id = w.submit(MONDAY)
    jobs.tick(now=w.appeal(appeal_id).due_at + timedelta(minutes=5))
    (note, data), = w.events(appeal_id, "staff_unreachable")
    assert data["alert"] == "overdue" and "营商服务中心" in note
