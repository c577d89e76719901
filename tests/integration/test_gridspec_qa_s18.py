"""Eighteenth QA pass (grid specialists): a grid given another specialist (服务专员) tells the new one, once, how many
open appeals are now theirs; a 延期 / 退单 decision posted for a request that no longer exists comes back to the
appeal's page with a word, not the console's 404 page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests.integration.test_apnotify_qa_s18 import World, _user_notifications
from tests.integration.test_appeals2_qa_s11 import _alerts, _link
from tests.integration.test_buildings_qa_s18 import _appeal, _close
from wxapp_backend.appeals.models import Appeal
from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.db import session_scope
from wxapp_backend.enterprises import services


@pytest.fixture
def w(make_grid, make_building, make_user, make_staff):
    return World(make_grid, make_building, make_user, make_staff)


def _grid_alerts(db, user_id):
    return [a for a in _alerts(db, user_id) if "未办结诉求转由您跟进" in a.body]


# --- 1. the grid's new specialist hears of its open appeals, once, in one message ----------------------------


def test_a_grid_given_another_specialist_tells_them_once_how_many_open_appeals_are_theirs(
    w, db, make_user, make_staff
):
    """The grid's open appeals went to its new specialist (session 17), who was told nothing: they sat in a list
    the newcomer did not know was theirs. One summary, not one message per appeal."""
    u = make_user(building_id=w.old.id)
    first_id, second_id = _appeal(u.id), _appeal(u.id, "想咨询一下人才公寓的申请条件和办理流程")
    closed_id = _appeal(u.id, "去年的空调噪音问题，已经处理好了，谢谢")
    _close(db, closed_id)
    soon = db.get(Appeal, second_id)
    soon.due_at = db.get(Appeal, first_id).due_at - timedelta(days=1)  # the second is due first
    db.commit()
    number = soon.number
    newcomer, phone = make_staff(role="staff"), make_user(nickname="王专员手机")
    _link(newcomer, phone.id)
    before = _user_notifications(db, u.id)

    with session_scope() as s:
        services.update_grid(s, w.admin, w.first.id, {"specialist_staff_id": newcomer.id, "specialist_name": "王专员"})
    [alert] = _alerts(db, phone.id)
    assert "网格「第一网格」的 2 件未办结诉求转由您跟进" in alert.body, alert.body
    assert number in alert.body and "前办结" in alert.body, alert.body  # the soonest deadline
    assert "第一网格" in alert.title and re.search(r"[\u4e00-\u9fff]", alert.title), alert.title
    assert _alerts(db, w.one_phone.id) == []  # the old specialist no longer serves it
    assert _user_notifications(db, u.id) == before  # never the enterprise

    # saved again (a retry, a second press): nothing changed, nobody told again
    with session_scope() as s:
        services.update_grid(s, w.admin, w.first.id, {"specialist_staff_id": newcomer.id, "specialist_name": "王专员"})
    assert len(_alerts(db, phone.id)) == 1
    # handed back to the first specialist: they hear of it
    with session_scope() as s:
        services.update_grid(s, w.admin, w.first.id, {"specialist_staff_id": w.one.id})
    assert len(_grid_alerts(db, w.one_phone.id)) == 1 and len(_alerts(db, phone.id)) == 1


def test_the_summary_is_written_with_the_change_and_sent_once_per_change(w, db, make_user, make_staff):
    from wxapp_backend.appeals import services as appeals

    _appeal(make_user(building_id=w.old.id).id)
    newcomer, phone = make_staff(role="staff"), make_user(nickname="王专员手机")
    _link(newcomer, phone.id)

    class Boom(Exception):
        pass

    with pytest.raises(Boom), session_scope() as s:  # the change is rolled back: so is the message
        services.update_grid(s, w.admin, w.first.id, {"specialist_staff_id": newcomer.id})
        raise Boom
    assert _alerts(db, phone.id) == []

    with session_scope() as s:
        services.update_grid(s, w.admin, w.first.id, {"specialist_staff_id": newcomer.id})
        grid = services.get_grid(s, w.first.id)
        row = s.scalars(select(AuditLog).where(AuditLog.action == "grid.updated")).one()
        key = f"grid.updated:{row.id}"
        # the same change replayed (a job run twice): the same key, no second message
        assert appeals.notify_grid_specialist(s, grid, row.data["rerouted_appeals"], key,
                                              actor=w.admin) == 0
    assert len(_alerts(db, phone.id)) == 1


def test_nobody_is_told_when_there_is_nothing_to_tell_or_nobody_to_tell(w, db, make_user, make_staff):
    u = make_user(building_id=w.old.id)
    # the admin making the change names themselves: they know
    me = make_staff(role="admin")
    my_phone = make_user(nickname="我的手机")
    _link(me, my_phone.id)
    _appeal(u.id)
    with session_scope() as s:
        services.update_grid(s, Actor("staff", me.id, role="admin"), w.first.id, {"specialist_staff_id": me.id})
    assert _alerts(db, my_phone.id) == []

    # a new specialist without a linked WeChat: the change is saved, nobody told, nothing fails
    unlinked = make_staff(role="staff")
    with session_scope() as s:
        services.update_grid(s, w.admin, w.first.id, {"specialist_staff_id": unlinked.id})
    db.expire_all()
    assert db.get(type(w.first), w.first.id).specialist_staff_id == unlinked.id

    # a grid with no open appeals: nothing to say
    with session_scope() as s:
        services.update_grid(s, w.admin, w.second.id, {"specialist_staff_id": w.one.id})
    assert _alerts(db, w.one_phone.id) == []


def test_the_console_save_of_a_grid_tells_the_new_specialist(client, w, db, make_user, make_staff, console_login):
    _appeal(make_user(building_id=w.old.id).id)
    token = console_login(make_staff(role="admin"))
    page = client.get(f"/console/grids/{w.first.id}/edit").get_data(as_text=True)
    fields = dict(re.findall(r'<input[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', body)
        fields[name] = chosen.group(1) if chosen else ""
    fields.update(csrf_token=token, specialist_staff_id=str(w.two.id))
    r = client.post(f"/console/grids/{w.first.id}/edit", data=fields)
    assert r.status_code == 302, r.get_data(as_text=True)
    [alert] = _grid_alerts(db, w.two_phone.id)
    assert "网格「第一网格」的 1 件未办结诉求转由您跟进" in alert.body


# --- 2. a stale 延期 / 退单 decision comes back to the appeal's page ------------------------------------


@pytest.mark.parametrize("action,key,word", [("decide_extension", "extension_id", "延期申请"),
                                             ("decide_return", "return_id", "退单申请")])
def test_a_decision_for_a_request_that_is_gone_comes_back_to_the_appeal_with_a_word(
    client, db, make_user, make_staff, console_login, action, key, word
):
    """The form of a request withdrawn or removed since the page was loaded (or a tampered id) showed the console's
    full 404 page, as if the appeal itself were gone; other stale actions come back to the page with the reason."""
    appeal_id = _appeal(make_user().id)
    token = console_login(make_staff(role="admin"))
    r = client.post(f"/console/appeals/{appeal_id}/action",
                    data={"csrf_token": token, "action": action, key: "987654", "accept": "0"})
    text = r.get_data(as_text=True)
    assert r.status_code in (404, 409), r.status_code
    assert db.get(Appeal, appeal_id).number in text, text[:500]  # the appeal's own page
    assert "操作未完成" in text and word in text, text[:2000]
    # an appeal that is not there at all is still the 404 page
    r = client.post("/console/appeals/987654/action",
                    data={"csrf_token": token, "action": action, key: "1", "accept": "0"})
    assert r.status_code == 404 and "操作未完成" not in r.get_data(as_text=True)
