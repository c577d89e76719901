"""Nineteenth QA pass (grids and buildings): a change that hands open appeals to a grid's specialist (服务专员) says in
its audit row who was told; a bulk move tells each specialist once, not once per appeal; the merged appeals (已合并)
a building merge or correction takes along are on their timeline and in the message."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.integration.test_apnotify_qa_s18 import TALENT, World, _moved_alerts, _told
from tests.integration.test_appeals2_qa_s11 import _alerts
from tests.integration.test_buildings_qa_s18 import _appeal, _close, _rows
from wxapp_backend.appeals import services as appeals
from wxapp_backend.appeals.models import Appeal, AppealEvent
from wxapp_backend.db import session_scope
from wxapp_backend.enterprises import importer, services

LAMP, NOISE, WATER, PARK = ("楼道里的灯坏了好几天了，麻烦安排物业修一下", "晚上施工噪音太大，影响员工加班休息",
                            "大楼周末停水也没有提前通知，请帮忙协调", "园区停车位太少，能否协调增加一些车位")


@pytest.fixture
def w(make_grid, make_building, make_user, make_staff):
    return World(make_grid, make_building, make_user, make_staff)


def _numbers(db, ids):
    db.expire_all()
    return [db.get(Appeal, i).number for i in ids]


# --- a) the grid's audit row says who was told -----------------------------------------------------------------


def test_a_grid_updates_audit_row_names_the_specialist_told(w, db, make_user, make_staff, client, console_login):
    """grid.updated listed the appeals handed to the new specialist, but not that (or whom) they were told: the log
    could not answer “was the new specialist ever told?”."""
    from tests.integration.test_appeals2_qa_s11 import _link

    _appeal(make_user(building_id=w.old.id).id)
    newcomer, phone = make_staff(username="wang_zhuanyuan", role="staff"), make_user(nickname="王专员手机")
    _link(newcomer, phone.id)
    with session_scope() as s:
        services.update_grid(s, w.admin, w.first.id, {"specialist_staff_id": newcomer.id})
    assert len(_alerts(db, phone.id)) == 1
    [row] = _rows(db, "grid.updated")
    assert row.data["notified"] == [{"staff_id": newcomer.id, "name": "wang_zhuanyuan", "appeals": 1}], row.data
    # the console's audit page shows it
    console_login(make_staff(role="admin"))
    page = client.get("/console/audit?action=grid.updated").get_data(as_text=True)
    assert "notified" in page and "wang_zhuanyuan" in page

    # an unlinked specialist: nobody told, and the row says nobody
    unlinked = make_staff(role="staff")
    with session_scope() as s:
        services.update_grid(s, w.admin, w.first.id, {"specialist_staff_id": unlinked.id})
    row = _rows(db, "grid.updated")[-1]
    assert row.data["notified"] == [] and row.data["rerouted_appeals"], row.data


# --- b) a bulk move tells each specialist once ----------------------------------------------------------------


def test_a_building_moved_with_many_open_appeals_tells_the_new_specialist_once(w, db, make_user):
    """Four open appeals moved with their building: the new specialist got four messages at once."""
    u = make_user(building_id=w.old.id)
    ids = [_appeal(u.id, text) for text in (LAMP, NOISE, WATER, PARK)]
    closed = _appeal(u.id, TALENT)
    _close(db, closed)
    numbers = _numbers(db, ids)
    with session_scope() as s:
        services.update_building(s, w.admin, w.old.id, {"grid_id": w.second.id})
    [alert] = _moved_alerts(db, w.two_phone.id)
    assert "4 件" in alert.title and "第二网格" in alert.body, (alert.title, alert.body)
    assert all(n in alert.body for n in numbers[:3]) and numbers[3] not in alert.body and "等" in alert.body
    assert len(alert.body.encode()) < 600  # a few numbers, not the whole list (the customer-service text limit)
    assert [len(_told(db, i)) for i in ids] == [1, 1, 1, 1]  # each timeline says its specialist was told
    row = _rows(db, "building.updated")[-1]
    assert row.data["notified"] == [{"staff_id": w.two.id, "name": w.two.display_name or w.two.username,
                                     "appeals": 4}], row.data


def test_an_import_moving_several_enterprises_tells_each_specialist_once(w, db, make_enterprise, make_user):
    from wxapp_backend.demo import demo_credit_code

    ents = [make_enterprise(name=f"上海星河{i}号科技有限公司", credit_code=demo_credit_code("91310112", 20 + i),
                            building_id=w.old.id) for i in range(3)]
    ids = [_appeal(make_user(enterprise_id=e.id, binding_state="verified").id, text)
           for e, text in zip(ents, (LAMP, NOISE, WATER), strict=True)]
    csv = "企业名称,统一社会信用代码,楼宇\n" + "".join(f"{e.name},{e.credit_code},幸福大楼\n" for e in ents)
    with session_scope() as s:
        report = importer.import_file(s, w.admin, "enterprises", "e.csv", csv.encode())
    assert report.ok and report.updated == 3, report.to_dict()
    db.expire_all()
    assert [db.get(Appeal, i).grid_id for i in ids] == [w.second.id] * 3
    [alert] = _moved_alerts(db, w.two_phone.id)
    assert "3 件" in alert.title, alert.title
    row = _rows(db, "enterprises.imported")[-1]
    assert row.data["notified"][0]["staff_id"] == w.two.id, row.data


def test_a_single_moved_appeal_keeps_its_own_message(w, db, make_user):
    aid = _appeal(make_user(building_id=w.old.id).id)
    with session_scope() as s:
        services.update_building(s, w.admin, w.old.id, {"grid_id": w.second.id})
    [alert] = _moved_alerts(db, w.two_phone.id)
    assert _numbers(db, [aid])[0] in alert.title


# --- c) merged appeals taken along are on record and in the message --------------------------------------------


def _family_at(w, make_user, building_id):
    master = _appeal(make_user().id, TALENT, building_id=building_id, category="talent")
    child = _appeal(make_user().id, "人才公寓的申请条件是什么，需要哪些材料", building_id=building_id, category="talent")
    with session_scope() as s:
        appeals.perform(s, w.admin, master, "accept", {})
        appeals.perform(s, w.admin, child, "merge", {"master_id": master})
    return master, child


def test_a_building_merge_takes_merged_appeals_along_on_record(w, db, make_user):
    """Another enterprise's appeal merged into one (已合并) sat at the duplicate building: the merge changed its
    building by a bulk update (no timeline row, no grid: split off later it went back to the old grid's list), and
    the kept building's specialist heard only of the main one."""
    master, child = _family_at(w, make_user, w.old.id)
    with session_scope() as s:
        services.merge_buildings(s, w.admin, w.new.id, w.old.id, confirm_grid=True)
    db.expire_all()
    c = db.get(Appeal, child)
    assert (c.building_id, c.grid_id, c.status) == (w.new.id, w.second.id, "duplicate")
    [ev] = db.scalars(select(AppealEvent).where(AppealEvent.appeal_id == child,
                                                AppealEvent.action == "building_changed")).all()
    assert "幸福大楼" in ev.note
    [row] = _rows(db, "building.merged")
    assert row.data["merged_appeals"] == [child], row.data
    assert row.data["notified"] == [{"staff_id": w.two.id, "name": w.two.display_name or w.two.username,
                                     "appeals": 2}], row.data
    [alert] = _moved_alerts(db, w.two_phone.id)  # one message: the main appeal, and the merged one with it
    assert db.get(Appeal, master).number in alert.body and "合并" in alert.body, alert.body
    assert _told(db, child) == []  # the merged one is no work of its own


def test_correcting_a_main_appeals_building_says_its_merged_ones_came_along(w, db, make_user):
    master, child = _family_at(w, make_user, w.old.id)
    with session_scope() as s:
        appeals.perform(s, w.admin, master, "set_building", {"building_id": w.new.id})
    [alert] = _moved_alerts(db, w.two_phone.id)
    assert _numbers(db, [master])[0] in alert.body + alert.title and "1 件合并" in alert.body, alert.body


# --- part 2: a weekly report of a week that has not begun ---------------------------------------------------------


def test_a_weekly_report_of_a_week_not_yet_begun_is_refused_not_made_up(client, make_user, make_staff, staff_headers,
                                                                        console_login, db):
    """Asked for a week to come (2099-W01, a year typed wrong), the live report answered 200 with that week's name and
    today's open appeals (在办 1) as its figures, and the archive's 404 sent staff to that live report."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.appeals import reports
    from wxapp_backend.errors import ValidationError

    _appeal(make_user().id)
    h = staff_headers(make_staff(role="staff"))
    r = client.get("/api/v1/staff/reports/weekly?week=2099-W01", headers=h)
    assert r.status_code == 422 and "还没有开始" in r.get_json()["message"], r.get_json()
    assert r.get_json()["fields"] == {"week": "这一周还没有开始"}
    r = client.get("/api/v1/staff/reports/weekly/stored/2099-W01", headers=h)
    assert r.status_code == 422 and "还没有开始" in r.get_json()["message"], r.get_json()
    console_login(make_staff(role="staff"))
    for url in ("/console/appeals/report?week=2099-W01", "/console/appeals/reports/2099-W01"):
        r = client.get(url)
        page = r.get_data(as_text=True)
        assert r.status_code == 422 and "还没有开始" in page and "2099-W01" in page, (url, r.status_code)
    assert client.get("/console/appeals/report.xlsx?week=2099-W01").status_code == 422

    # the week begins at Monday 00:00 in Beijing (Sunday 16:00 UTC), not at UTC's midnight
    start = datetime(2026, 3, 1, 16, 0, tzinfo=UTC)  # 2026-W10 begins
    with session_scope() as s:
        with pytest.raises(ValidationError):
            reports.weekly(s, "2026-W10", now=start - timedelta(seconds=1))
        assert reports.weekly(s, "2026-W10", now=start)["week"] == "2026-W10"  # this week so far
