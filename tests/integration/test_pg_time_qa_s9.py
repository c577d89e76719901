"""QA pass 9: what SQLite lets through and PostgreSQL refuses (or reads differently), and time handling.

Every test here runs on both backends except the races marked postgres (SQLite queues writers, so they
cannot happen there); each states what went wrong before its fix.
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select

from wxapp_backend.appeals import services as appeal_services
from wxapp_backend.appeals.models import Appeal, AppealEvent, AppealTask
from wxapp_backend.db import session_scope


def _appeal(user) -> int:
    with session_scope() as s:
        appeal, _ = appeal_services.submit_appeal(s, user.id, appeal_services.Intake(
            content="楼下路灯坏了一个星期，晚上很黑", contact_name="张三", contact_phone="13800138000"))
        return appeal.id


def test_console_appeal_action_checks_its_fields_like_the_api(client, make_user, make_staff, console_login, db):
    """The console's action form went to the service unchecked: a 100-character department was stored in the
    64-character column (PostgreSQL: a 500) and a NUL in a note was kept (PostgreSQL: a 500)."""
    aid = _appeal(make_user())
    csrf = console_login(make_staff(role="admin"))
    url = f"/console/appeals/{aid}/action"
    assert client.post(url, data={"csrf_token": csrf, "action": "accept"}).status_code == 302
    department = db.get(Appeal, aid).department

    resp = client.post(url, data={"csrf_token": csrf, "action": "assign", "department": "部" * 100},
                       follow_redirects=True)
    assert resp.status_code == 422  # the page comes back with the refusal and what was typed
    assert "操作未完成" in resp.get_data(as_text=True) and "部门不能超过 64 个字" in resp.get_data(as_text=True)
    db.expire_all()
    assert db.get(Appeal, aid).department == department and db.get(Appeal, aid).status == "accepted"

    assert client.post(url, data={"csrf_token": csrf, "action": "note", "note": "已电话\x00联系"}).status_code == 302
    notes = list(db.scalars(select(AppealEvent.note).where(AppealEvent.appeal_id == aid,
                                                           AppealEvent.action == "noted")))
    assert notes == ["已电话联系"]


def test_coordination_task_text_loses_control_characters(client, make_user, make_staff, staff_headers, db):
    """会办 tasks are free-form objects in the API body (validate() leaves dicts alone): a NUL in the department
    or the description reached the database (PostgreSQL: a 500, SQLite: stored)."""
    aid = _appeal(make_user())
    headers = staff_headers(make_staff(role="admin"))
    url = f"/api/v1/staff/appeals/{aid}/actions"
    assert client.post(url, json={"action": "accept"}, headers=headers).status_code == 200
    resp = client.post(url, json={"action": "coordinate",
                                  "tasks": [{"department": "城运\x00中心", "description": "核\x00查 "}]},
                       headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    task = db.scalar(select(AppealTask).where(AppealTask.appeal_id == aid))
    assert (task.department, task.description) == ("城运中心", "核查")
    resp = client.post(url, json={"action": "coordinate", "tasks": [{"department": "\x00 "}]}, headers=headers)
    assert resp.status_code == 422 and "请填写部门" in resp.get_json()["message"]


def test_searches_ignore_ascii_case_on_every_backend(client, make_staff, staff_headers, make_enterprise,
                                                     make_building, make_user, app_ctx):
    """SQLite's LIKE ignores ASCII case, PostgreSQL's does not: "soho" found "SOHO…" only on SQLite."""
    from wxapp_backend.enterprises import services as ent_services

    make_enterprise(name="SOHO科技有限公司")
    make_building(name="SOHO东海广场", address="延安东路 Tower A")
    make_user(nickname="Amy")
    headers = staff_headers(make_staff(role="admin"))
    found = client.get("/api/v1/staff/enterprises?q=soho", headers=headers).get_json()
    assert [e["name"] for e in found["items"]] == ["SOHO科技有限公司"]
    assert [b["name"] for b in client.get("/api/v1/buildings?q=soho").get_json()["items"]] == ["SOHO东海广场"]
    assert [b["name"] for b in client.get("/api/v1/buildings?q=tower a").get_json()["items"]] == ["SOHO东海广场"]
    with session_scope() as s:
        assert [u.nickname for u in ent_services.list_users(s, q="amy").items] == ["Amy"]


def test_console_kb_search_ignores_case_and_takes_percent_literally(client, make_staff, console_login):
    csrf = console_login(make_staff(role="staff"))
    for entry in ({"id": "app-guide", "question": "APP下载指南", "answer": "在应用商店搜索即可。"},
                  {"id": "subsidy-rate", "question": "补贴比例是多少", "answer": "按实际支出的 50% 补贴。"},
                  {"id": "other-entry", "question": "营业执照怎么办", "answer": "到政务服务中心办理。"}):
        assert client.post("/console/kb/new", data={"csrf_token": csrf, **entry}).status_code == 302

    def listed(q: str) -> list[str]:  # the table's rows (the page also shows what the bot would answer to q)
        page = client.get("/console/kb/", query_string={"q": q}).get_data(as_text=True)
        return [question for question in ("APP下载指南", "补贴比例是多少", "营业执照怎么办")
                if f"<td>{question}</td>" in page]

    assert listed("app下载") == ["APP下载指南"]
    assert listed("%") == ["补贴比例是多少"]  # a typed "%" is a character, not "anything"


def test_console_registration_note_loses_control_characters(client, make_user, make_staff, console_login,
                                                            make_activity, db):
    """The console's approve/reject/attended note went to the database as typed: a NUL was stored on SQLite
    and a 500 on PostgreSQL."""
    from datetime import UTC, datetime

    from wxapp_backend.activities.models import Registration, RegistrationEvent

    activity = make_activity(requires_approval=True)
    user = make_user()
    with session_scope() as s:
        reg = Registration(activity_id=activity.id, user_id=user.id, status="pending_approval",
                           active_key=f"{activity.id}:{user.id}", created_at=datetime.now(UTC))
        s.add(reg)
    csrf = console_login(make_staff(role="admin"))
    resp = client.post(f"/console/registrations/{reg.id}/reject", data={"csrf_token": csrf, "note": "名额\x00已满"})
    assert resp.status_code == 302
    assert db.get(Registration, reg.id).status == "rejected"
    notes = list(db.scalars(select(RegistrationEvent.note).where(RegistrationEvent.registration_id == reg.id)))
    assert notes == ["名额已满"]


def test_a_json_push_loses_characters_an_xml_push_cannot_carry(app, settings, db, run_jobs):
    """The mini-program's JSON push can carry a NUL (or a lone surrogate) where XML cannot: the text reached the
    chat log as is, so on PostgreSQL the handler failed and the user got no answer at all."""
    import json
    import time
    from urllib.parse import urlencode

    from wxapp_backend import create_app
    from wxapp_backend.knowledge_store.models import ChatTurn
    from wxapp_backend.wechat.chat import seal_push
    from wxapp_backend.wechat.pipeline import account_from_settings

    application = create_app(settings.with_overrides(wxa_token="wxaqa9", wxa_msg_format="json",
                                                     wxa_appid="wxaqa9appid"))
    acct = account_from_settings(application.extensions["wxapp"].settings, "wxa")
    body = {"ToUserName": "gh_1", "FromUserName": "oQa9User", "CreateTime": int(time.time()), "MsgType": "text",
            "MsgId": "7300000000000000901", "Content": "明天股票\u0000会涨吗\ud800"}
    args, raw = seal_push(acct, json.dumps(body), encrypt=False)
    resp = application.test_client().post("/wxa/message?" + urlencode(args), data=raw)
    assert resp.status_code == 200
    run_jobs()
    assert list(db.scalars(select(ChatTurn.question))) == ["明天股票会涨吗"]


def test_console_edit_sending_times_back_as_shown_moves_nothing(client, make_staff, console_login, make_activity,
                                                                make_user, db):
    """The editor shows times to the minute. An activity whose start has seconds (set through the API) had them
    cut by any edit, even of the title alone: the start moved and every registrant was told "活动调整"."""
    import re
    from datetime import UTC, datetime

    from wxapp_backend.activities.models import Activity, Registration
    from wxapp_backend.notices.models import Notification

    start = datetime(2030, 5, 6, 2, 30, 45, tzinfo=UTC)
    activity = make_activity(starts_at=start, category="cfo_salon")
    user = make_user()
    with session_scope() as s:
        s.add(Registration(activity_id=activity.id, user_id=user.id, status="confirmed",
                           active_key=f"{activity.id}:{user.id}", created_at=datetime.now(UTC)))
    csrf = console_login(make_staff(role="staff"))
    page = client.get(f"/console/activities/{activity.id}/edit").get_data(as_text=True)
    shown = dict(re.findall(r'name="(starts_at|ends_at)" value="([^"]*)"', page))
    assert shown["starts_at"] == "2030-05-06T10:30"  # Shanghai time, to the minute
    resp = client.post(f"/console/activities/{activity.id}/edit", data={
        "csrf_token": csrf, "category": "cfo_salon", "title": "财务经理沙龙（改名）", "address": "中心大厦",
        "capacity": "10", "status": "published", **shown})
    assert resp.status_code == 302
    saved = db.get(Activity, activity.id)
    assert saved.title == "财务经理沙龙（改名）" and saved.starts_at == start
    assert not list(db.scalars(select(Notification.dedup_key).where(Notification.dedup_key.like("activity_changed:%"))))
    # A time really changed in the form still moves the activity and tells the registrant.
    resp = client.post(f"/console/activities/{activity.id}/edit", data={
        "csrf_token": csrf, "category": "cfo_salon", "title": "财务经理沙龙（改名）", "address": "中心大厦",
        "capacity": "10", "status": "published", **shown, "starts_at": "2030-05-06T11:00"})
    assert resp.status_code == 302
    db.expire_all()
    assert db.get(Activity, activity.id).starts_at == datetime(2030, 5, 6, 3, 0, tzinfo=UTC)
    assert len(list(db.scalars(select(Notification.id).where(Notification.dedup_key.like("activity_changed:%"))))) == 1


def test_a_deadline_sent_back_as_shown_is_kept_not_cleared(client, make_staff, console_login, make_activity, db):
    """The two console fixes together: a time sent back unchanged is taken out of the edit, and a box sent empty
    clears its setting; judged on the data, the unchanged deadline looked empty and was cleared."""
    import re
    from datetime import UTC, datetime

    from wxapp_backend.activities.models import Activity

    closes = datetime(2030, 5, 1, 2, 0, 30, tzinfo=UTC)
    activity = make_activity(starts_at=datetime(2030, 5, 6, 2, 0, tzinfo=UTC), category="cfo_salon",
                             registration_closes_at=closes)
    csrf = console_login(make_staff(role="staff"))
    page = client.get(f"/console/activities/{activity.id}/edit").get_data(as_text=True)
    shown = dict(re.findall(r'name="(starts_at|ends_at|registration_closes_at)" value="([^"]*)"', page))
    assert shown["registration_closes_at"] == "2030-05-01T10:00"
    resp = client.post(f"/console/activities/{activity.id}/edit", data={
        "csrf_token": csrf, "category": "cfo_salon", "title": "改个名字", "address": "中心大厦", "capacity": "10",
        "status": "published", "registration_opens_at": "", "cancel_deadline": "", **shown})
    assert resp.status_code == 302
    assert db.get(Activity, activity.id).registration_closes_at == closes


def test_kb_entry_ids_no_entry_can_have_are_not_found(client, make_staff, console_login, db):
    """A NUL in an entry id from a URL went to the database: a 500 on PostgreSQL (the public detail API too), and
    the console's edit form, which cleans what it saves, edited the entry "ab" when asked for "a<NUL>b"."""
    from wxapp_backend.knowledge_store.models import KBEntry, UnansweredQuestion

    csrf = console_login(make_staff(role="staff"))
    assert client.post("/console/kb/new", data={"csrf_token": csrf, "id": "ab", "question": "营业执照怎么办",
                                                "answer": "到政务服务中心办理。"}).status_code == 302
    assert client.get("/api/v1/kb/entries/ab").status_code == 200
    assert client.get("/api/v1/kb/entries/a%00b").status_code == 404
    assert client.get("/console/kb/a%00b/edit").status_code == 404
    resp = client.post("/console/kb/a%00b/edit", data={"csrf_token": csrf, "question": "改掉了", "answer": "改掉了"})
    assert resp.status_code == 404
    assert db.get(KBEntry, "ab").question == "营业执照怎么办"
    assert client.post("/console/kb/a%00b/retire", data={"csrf_token": csrf}).status_code == 404
    assert db.get(KBEntry, "ab").retired is False
    assert client.get("/console/kb/?q=%00&category=%00").status_code == 200
    db.add(UnansweredQuestion(norm="明天股票会涨吗", text="明天股票会涨吗"))
    db.commit()
    qid = db.scalar(select(UnansweredQuestion.id))
    resp = client.post(f"/console/kb/unanswered/{qid}/phrasing", data={"csrf_token": csrf, "entry_id": "a\x00b"})
    assert resp.status_code == 404
    assert db.get(KBEntry, "ab").similar == []


def test_console_login_reads_the_name_as_the_api_does(client, make_staff):
    """The console's login form sent the name as typed: a NUL in it was a 500 on PostgreSQL (before any login),
    where the API's login field is cleaned of control characters."""
    import re

    staff = make_staff(username="qa9admin", role="admin")
    token = re.search(r'name="csrf_token" value="([^"]+)"',
                      client.get("/console/login").get_data(as_text=True)).group(1)
    resp = client.post("/console/login", data={"username": "qa9\x00admin", "password": "wrong-password-1",
                                                "csrf_token": token})
    assert resp.status_code == 401 and "用户名或密码不正确" in resp.get_data(as_text=True)
    resp = client.post("/console/login", data={"username": "qa9\x00admin", "password": staff.plain_password,
                                                "csrf_token": token})
    assert resp.status_code == 302
    api = client.post("/api/v1/staff/login", json={"username": "qa9\x00admin", "password": staff.plain_password})
    assert api.status_code == 200


def test_attendance_is_not_closed_before_the_grace_after_a_moved_end(app_ctx, make_activity, make_user, db):
    """An activity's end moved 30 minutes later: the no-show job scheduled for the old end (old end + 1 hour) ran
    30 minutes into the new end's grace, while check-in was still open, and marked everyone a no-show then."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities import jobs
    from wxapp_backend.activities.models import Activity, Registration
    from wxapp_backend.activities.services import ATTENDANCE_GRACE

    ends = datetime(2030, 5, 6, 10, 0, tzinfo=UTC)
    activity = make_activity(starts_at=ends - timedelta(hours=3))
    user = make_user()
    with session_scope() as s:
        s.add(Registration(activity_id=activity.id, user_id=user.id, status="confirmed",
                           active_key=f"{activity.id}:{user.id}", created_at=ends - timedelta(days=1)))
    assert jobs.close_attendance(activity.id, now=ends + ATTENDANCE_GRACE - timedelta(minutes=30)) == 0
    assert db.scalar(select(Registration.status)) == "confirmed"
    assert db.get(Activity, activity.id).attendance_closed_at is None
    assert jobs.close_attendance(activity.id, now=ends + ATTENDANCE_GRACE) == 1
    db.expire_all()
    assert db.scalar(select(Registration.status)) == "no_show"


def test_change_notice_names_the_end_date_of_an_activity_past_midnight(app_ctx, make_activity, make_user,
                                                                       make_staff, db):
    """The 活动调整 notice wrote the end as a time only: a vertical marathon from 22:00 to 02:00 the next day,
    or a three-day event, read as ending on the day it starts."""
    from datetime import UTC, datetime

    from wxapp_backend.activities import services as act_services
    from wxapp_backend.activities.models import Registration
    from wxapp_backend.audit import Actor
    from wxapp_backend.notices.models import InboxItem

    activity = make_activity(starts_at=datetime(2030, 5, 6, 12, 0, tzinfo=UTC))  # 20:00 Shanghai
    user = make_user()
    with session_scope() as s:
        s.add(Registration(activity_id=activity.id, user_id=user.id, status="confirmed",
                           active_key=f"{activity.id}:{user.id}", created_at=datetime.now(UTC)))
    staff = make_staff(role="staff")
    with session_scope() as s:
        act_services.update_activity(s, Actor("staff", staff.id, role="staff"), activity.id,
                                     {"ends_at": "2030-05-07T02:00:00+08:00"})
    body = db.scalar(select(InboxItem.body).where(InboxItem.user_id == user.id))
    assert "2030-05-06 20:00-2030-05-07 02:00" in body, body
    with session_scope() as s:
        act_services.update_activity(s, Actor("staff", staff.id, role="staff"), activity.id,
                                     {"ends_at": "2030-05-06T23:30:00+08:00"})
    bodies = list(db.scalars(select(InboxItem.body).where(InboxItem.user_id == user.id).order_by(InboxItem.id)))
    assert "2030-05-06 20:00-23:30" in bodies[-1], bodies


def _second_waits_on_the_first(app_ctx, first_work, second_work) -> list[BaseException]:
    """`first_work(session)` writes and holds its transaction open; `second_work(session)` runs meanwhile in its own
    transaction (waiting on the first's uncommitted unique key), then the first commits. Returns the second's
    errors."""
    import threading
    import time

    from wxapp_backend.db import get_db

    first = get_db().Session()
    first_work(first)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with app_ctx.app_context(), session_scope() as s:
                second_work(s)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    t = threading.Thread(target=second)
    t.start()
    time.sleep(0.5)  # the second is now waiting on the first's uncommitted row
    first.commit()
    first.close()
    t.join(10)
    return errors


@pytest.mark.postgres
def test_the_same_holiday_saved_twice_at_once_is_one_row(app_ctx, db):
    """SQLite queues writers; on PostgreSQL the second save of a day (a double click, two staff) failed on the
    unique key: a 500 instead of the later setting."""
    from datetime import date

    from wxapp_backend.appeals.models import Holiday
    from wxapp_backend.audit import SYSTEM

    day = date(2031, 1, 1)
    errors = _second_waits_on_the_first(
        app_ctx, lambda s: appeal_services.set_holiday(s, SYSTEM, day, False, "元旦"),
        lambda s: appeal_services.set_holiday(s, SYSTEM, day, True, "调休"))
    assert not errors, errors
    assert [(h.day, h.is_workday, h.name) for h in db.scalars(select(Holiday))] == [(day, True, "调休")]


@pytest.mark.postgres
def test_two_votes_on_the_same_answer_at_once_are_one_vote(app_ctx, db):
    """A double tap on 有用/没用: on PostgreSQL the second vote failed on the unique turn (a 500) where SQLite
    queues it; the later vote now replaces the earlier, as a change of mind does."""
    from wxapp_backend.knowledge_store import services as kb_services
    from wxapp_backend.knowledge_store.models import AnswerFeedback, ChatTurn, KBEntry

    db.add(KBEntry(id="qa9-entry", question="营业执照怎么办", answer="到政务服务中心办理。"))
    db.commit()
    db.add(ChatTurn(channel="api", user_id=None, question="营业执照怎么办", decision="answer", entry_id="qa9-entry",
                    confidence=0.9))
    db.commit()
    turn_id = db.scalar(select(ChatTurn.id))

    def vote(useful: bool):
        # An anonymous turn: the vote carries the token its answer was sent with.
        return lambda s: kb_services.record_feedback(s, turn_id=turn_id, entry_id="qa9-entry", user_id=None,
                                                     useful=useful, secret="qa9-secret",
                                                     vote_token=kb_services.turn_vote_token("qa9-secret", turn_id))

    errors = _second_waits_on_the_first(app_ctx, vote(True), vote(False))
    assert not errors, errors
    assert [(f.turn_id, f.useful) for f in db.scalars(select(AnswerFeedback))] == [(turn_id, False)]


@pytest.mark.postgres
def test_the_weekly_report_stored_twice_at_once_is_one_row(app_ctx, db):
    """`flask appeals weekly` beside the Monday tick: on PostgreSQL the second store of the week failed on the
    unique key (the tick job failed); now the second finds the first's report."""
    from wxapp_backend.appeals import reports
    from wxapp_backend.appeals.models import AppealReport

    made: list[bool] = []
    errors = _second_waits_on_the_first(app_ctx, lambda s: made.append(reports.prepare_weekly(s, "2025-W10")[1]),
                                        lambda s: made.append(reports.prepare_weekly(s, "2025-W10")[1]))
    assert not errors, errors
    assert made == [True, False]
    assert [r.week for r in db.scalars(select(AppealReport))] == ["2025-W10"]


@pytest.mark.postgres
def test_the_same_new_kb_entry_created_twice_at_once_is_a_conflict(app_ctx, redis_client, db):
    """A double submit of the console's new-entry form: FOR UPDATE locks no row that does not exist yet, so on
    PostgreSQL the second insert failed on the primary key (a 500); SQLite queued it into the 409."""
    from knowledge.schema import Entry
    from wxapp_backend.audit import SYSTEM
    from wxapp_backend.errors import Conflict
    from wxapp_backend.knowledge_store import services as kb_services
    from wxapp_backend.knowledge_store.models import KBEntry

    def create(answer):
        def run(s):
            kb_services.save_entry(s, redis_client, SYSTEM, Entry(id="qa9-new", question="营业执照怎么办",
                                                                  answer=answer), create=True)
        return run

    # Since session 16 the same entry sent twice (a double click) is taken as the one already saved: no error.
    errors = _second_waits_on_the_first(app_ctx, create("到政务服务中心办理。"), create("到政务服务中心办理。"))
    assert errors == [], errors
    assert [e.id for e in db.scalars(select(KBEntry))] == ["qa9-new"]
    db.execute(delete(KBEntry))
    db.commit()
    # Another entry under the id being created at the same moment is the 409, not a 500.
    errors = _second_waits_on_the_first(app_ctx, create("到政务服务中心办理。"), create("在一网通办上办理。"))
    assert len(errors) == 1 and isinstance(errors[0], Conflict) and "已存在" in errors[0].message, errors
    assert [e.id for e in db.scalars(select(KBEntry))] == ["qa9-new"]


def test_a_kb_entry_with_a_long_id_is_audited_whole(client, make_staff, console_login, db):
    """Entry ids may be 128 characters, the audit log's target id column held 64: saving an entry with a longer
    id was a 500 on PostgreSQL (SQLite stored the longer text)."""
    from wxapp_backend.audit import AuditLog

    csrf = console_login(make_staff(role="staff"))
    entry_id = "policy-" + "x" * 100
    resp = client.post("/console/kb/new", data={"csrf_token": csrf, "id": entry_id, "question": "营业执照怎么办",
                                                "answer": "到政务服务中心办理。"})
    assert resp.status_code == 302
    assert db.scalar(select(AuditLog.target_id).where(AuditLog.action == "kb.entry_created")) == entry_id
    assert client.post(f"/console/kb/{entry_id}/retire", data={"csrf_token": csrf}).status_code == 302


def test_the_jobs_page_shows_when_a_job_failed_in_shanghai_time(client, make_staff, console_login, app, run_jobs):
    """The failed jobs' 结束时间 was RQ's UTC datetime as Python prints it (…+00:00), eight hours off from every
    other time in the console."""
    from zoneinfo import ZoneInfo

    from rq.job import Job

    state = app.extensions["wxapp"]
    job = state.queue.enqueue("wxapp_backend.no_such_module.job")
    run_jobs()
    ended = Job.fetch(job.id, connection=state.redis).ended_at
    assert ended is not None
    console_login(make_staff(role="admin"))
    page = client.get("/console/jobs").get_data(as_text=True)
    assert ended.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%Y-%m-%d %H:%M") in page  # as every console time
    assert "+00:00" not in page


def test_appeal_search_takes_percent_and_underscore_literally(client, make_user, make_staff, staff_headers):
    """The staff queue's q went into LIKE as typed: "50%" found every appeal with "50" in it, "_" anything."""
    user = make_user()
    with session_scope() as s:
        for content in ("补贴只到账了 50%，剩下的什么时候发", "500 元的罚款能不能分期缴纳", "文件名 a_b.pdf 上传失败"):
            appeal_services.submit_appeal(s, user.id, appeal_services.Intake(
                content=content, contact_name="张三", contact_phone="13800138000"))
    headers = staff_headers(make_staff(role="admin"))

    def found(q: str) -> list[str]:
        items = client.get("/api/v1/staff/appeals", query_string={"q": q}, headers=headers).get_json()["items"]
        return sorted(a["content"][:3] for a in items)

    assert found("50%") == ["补贴只"]
    assert found("a_b") == ["文件名"]
    assert found("A_B") == ["文件名"]  # any case, as before
