"""Appeals QA: merged children of a master that ends unresolved, the deadline after a re-categorisation, the
overdue flag after an extension granted while paused, voice answers in the chat intake, the on-time rate of a
reopened appeal."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from wxapp_backend.appeals import jobs, services
from wxapp_backend.appeals.calendar import TZ
from wxapp_backend.appeals.models import Appeal, AppealEvent, AppealExtension
from wxapp_backend.audit import Actor, AuditLog
from wxapp_backend.db import session_scope


def sh(*a):
    return datetime(*a, tzinfo=TZ)


MONDAY = sh(2025, 10, 20, 10, 0)


@pytest.fixture
def w(make_user, make_staff, make_building, make_grid, make_enterprise):
    grid = make_grid()
    building = make_building(grid_id=grid.id)
    enterprise = make_enterprise(building_id=building.id)
    user = make_user(enterprise_id=enterprise.id, binding_state="verified")
    other = make_user()
    admin = make_staff(role="admin")
    actor = Actor("staff", admin.id, role="admin", name="管理员")

    def submit(now=MONDAY, user_id=None, content="我们公司的增值税发票开不出来，税控盘坏了", **kw):
        with session_scope() as s:
            appeal, _ = services.submit_appeal(s, user_id or user.id, services.Intake(
                content=content, contact_name="张三", contact_phone="13800138000", **kw), now=now)
            return appeal.id

    def act(appeal_id, action, now=MONDAY, **data):
        with session_scope() as s:
            return services.perform(s, actor, appeal_id, action, data, now=now).status

    def get(appeal_id):
        with session_scope() as s:
            a = s.get(Appeal, appeal_id)
            s.expunge(a)
            return a

    return SimpleNamespace(user=user, other=other, actor=actor, submit=submit, act=act, get=get,
                           enterprise=enterprise, make_staff=make_staff, make_user=make_user)


# --- a master that ends without a resolution hands its merged children back -------------------------------

@pytest.mark.parametrize("ending", ["withdrawn", "rejected"])
def test_children_of_a_master_that_ends_unresolved_go_on_as_their_own_appeals(w, ending):
    master = w.submit()
    child = w.submit(user_id=w.other.id, content="税控盘坏了，增值税发票开不出来")
    w.act(master, "accept")
    w.act(child, "accept")
    w.act(child, "merge", master_id=master)
    if ending == "withdrawn":
        with session_scope() as s:
            services.withdraw(s, w.user.id, master, "问题自己解决了")
    else:
        w.act(master, "reject", reason="不属于本中心受理范围")
    # The other enterprise's problem is still there: it must not wait for a master that will never be resolved.
    c = w.get(child)
    assert c.status == "accepted" and c.master_id is None
    with session_scope() as s:
        ev = s.scalars(select(AppealEvent).where(AppealEvent.appeal_id == child, AppealEvent.action == "split")
                       ).one()
        assert ev.public and ev.from_status == "duplicate" and ev.to_status == "accepted"
        assert s.scalar(select(AuditLog.id).where(AuditLog.action == "appeal.split",
                                                  AuditLog.target_id == str(child))) is not None
    # ... and is watched by the SLA clock again, then resolved and rated on its own.
    w.act(child, "resolve", resolution="已更换税控盘")
    assert w.get(child).status == "resolved"


# --- re-categorising keeps the clock's later starts and pauses -------------------------------------------------

def test_recategorising_a_reopened_appeal_counts_from_the_reopening(w):
    a = w.submit()  # 税务, 5 working days
    w.act(a, "accept", category="tax")
    w.act(a, "resolve", now=sh(2025, 10, 24, 10, 0), resolution="已联系税务专管员")
    reopened = sh(2025, 10, 28, 10, 0)
    with session_scope() as s:
        services.rate(s, w.user.id, a, resolved=False, satisfaction=3, now=reopened)
    assert w.get(a).due_at.astimezone(TZ) == sh(2025, 11, 4, 10, 0)  # 5 working days from the reopening
    # Staff find it was a building matter (楼宇物业, 3 working days): three days from the reopening, not from
    # the first submission (which would make the second round overdue the moment it is re-categorised).
    w.act(a, "set_category", now=sh(2025, 10, 28, 11, 0), category="property")
    assert w.get(a).due_at.astimezone(TZ) == sh(2025, 10, 31, 10, 0)
    done = jobs.tick(now=sh(2025, 10, 28, 12, 0))
    assert done["overdue"] == 0 and not w.get(a).overdue


def test_recategorising_keeps_the_time_the_clock_was_paused(w):
    a = w.submit(now=sh(2025, 11, 3, 9, 0))  # Monday 9:00, 5 working days -> Fri 11-07 17:30
    w.act(a, "accept", now=sh(2025, 11, 3, 10, 0))
    w.act(a, "request_info", now=sh(2025, 11, 4, 9, 0), note="请补充发票号码")
    with session_scope() as s:
        services.supplement(s, w.user.id, a, "发票号码 123", now=sh(2025, 11, 6, 9, 0))
    assert w.get(a).due_at.astimezone(TZ) == sh(2025, 11, 11, 17, 30)  # two paused days added
    # Another 5-day category: the promise is the same, so the two days the enterprise took stay added.
    w.act(a, "set_category", now=sh(2025, 11, 6, 10, 0), category="registration")
    assert w.get(a).due_at.astimezone(TZ) == sh(2025, 11, 11, 17, 30)
    # While paused, a longer promise adds to the frozen minutes.
    w.act(a, "request_info", now=sh(2025, 11, 7, 9, 0), note="请补充合同")
    left = w.get(a).sla_minutes_left
    w.act(a, "set_category", now=sh(2025, 11, 7, 10, 0), category="labour")  # 7 working days
    assert w.get(a).sla_minutes_left == left + 2 * 510


def test_a_longer_promise_clears_the_overdue_flag(w):
    a = w.submit()  # 税务, 5 working days: due Mon 10-27 10:00
    w.act(a, "accept", category="tax")
    late = sh(2025, 10, 28, 10, 0)
    jobs.tick(now=late)
    assert w.get(a).overdue
    w.act(a, "set_category", now=late, category="labour")  # 7 working days: due Wed 10-29 10:00
    got = w.get(a)
    assert got.due_at.astimezone(TZ) == sh(2025, 10, 29, 10, 0) and not got.overdue
    jobs.tick(now=sh(2025, 10, 29, 11, 0))  # and the tick marks it again once the new deadline passes
    assert w.get(a).overdue


# --- the overdue flag follows the deadline an extension gives ---------------------------------------------------

def test_extension_granted_while_paused_clears_the_overdue_flag(w):
    a = w.submit()  # due Mon 10-27 10:00
    w.act(a, "accept")
    # Asked for before the deadline (an extension cannot be asked for after it, pass 11), decided after it.
    w.act(a, "request_extension", now=sh(2025, 10, 27, 9, 30), working_days=10, reason="需等待上级批复")
    late = sh(2025, 10, 29, 10, 0)
    jobs.tick(now=late)
    assert w.get(a).overdue
    w.act(a, "request_info", now=late, note="请提供发票照片")
    with session_scope() as s:
        ext_id = s.scalar(select(AppealExtension.id).where(AppealExtension.appeal_id == a))
    w.act(a, "decide_extension", now=late, extension_id=ext_id, accept=True)
    with session_scope() as s:
        services.supplement(s, w.user.id, a, "已补充发票照片", now=sh(2025, 10, 29, 11, 0))
    got = w.get(a)
    assert got.due_at > sh(2025, 10, 29, 11, 0)
    assert not got.overdue  # the dashboard's 超期 count and the 超期 filter no longer list it
    jobs.tick(now=sh(2025, 10, 29, 12, 0))
    assert not w.get(a).overdue


# --- voice answers in the chat intake ---------------------------------------------------------------------------

@pytest.fixture
def chat(redis_client, make_user, make_building, app_ctx):
    from handlers.appeal_intake import install
    from handlers.router import Context, Router
    from wxapp_backend.wechat.messages import normalise

    building = make_building(name="新华大厦")
    user = make_user()
    router = install(Router())

    def say(content=None, *, recognition=None):
        raw = {"ToUserName": "gh_x", "FromUserName": user.openid, "CreateTime": "1700000000",
               "MsgType": "text" if recognition is None else "voice"}
        if content is not None:
            raw["Content"] = content
        if recognition is not None:
            raw["MediaId"], raw["Recognition"], raw["Format"] = "VOICE1", recognition, "amr"
        ctx = Context(msg=normalise(raw, "oa"), redis=redis_client, user_id=user.id)
        reply = router.dispatch(ctx)
        return reply.text if reply is not None else None

    say.user, say.building = user, building
    return say


def test_every_intake_step_can_be_answered_by_voice(chat):
    chat("我要反映")
    assert "企业名称" in chat(recognition="新华大厦十二楼电梯坏了三天没人修。")
    assert "联系人" in chat(recognition="上海某某科技有限公司，新华大厦。")
    assert "照片" in chat(recognition="张三，13800138000。")
    assert "请核对" in chat(recognition="跳过。")
    assert "诉求已提交" in chat(recognition="确认。")
    with session_scope() as s:
        appeal = s.scalars(select(Appeal).where(Appeal.user_id == chat.user.id)).unique().one()
        assert appeal.building_id == chat.building.id and appeal.contact_name == "张三"
        assert appeal.contact_phone == "13800138000" and appeal.content == "新华大厦十二楼电梯坏了三天没人修。"


def test_an_empty_voice_transcript_in_the_intake_is_not_taken_for_a_photo(chat):
    chat("我要反映")
    chat("新华大厦十二楼电梯坏了三天没人修")
    reply = chat(recognition="")
    assert "照片" not in reply and "没有听清" in reply


# --- 按时办结率 judges the first resolution ----------------------------------------------------------------------

def test_a_late_second_round_does_not_rewrite_the_first_resolution_on_time(w):
    from wxapp_backend.appeals import metrics

    a = w.submit()  # due Mon 10-27 10:00
    w.act(a, "accept")
    w.act(a, "resolve", now=sh(2025, 10, 22, 10, 0), resolution="已联系税务专管员")  # on time
    week = (sh(2025, 10, 20, 0, 0), sh(2025, 10, 27, 0, 0))
    with session_scope() as s:
        before = metrics.compute(s, *week).on_time.as_dict()
    assert (before["numerator"], before["denominator"]) == (1, 1)
    with session_scope() as s:
        services.rate(s, w.user.id, a, resolved=False, satisfaction=3, now=sh(2025, 10, 23, 10, 0))
    w.act(a, "resolve", now=sh(2025, 11, 10, 10, 0), resolution="已更换税控盘")  # round 2, late
    # The week's 按时办结率 counts appeals first resolved in it, judged at that moment: it does not change
    # weeks later (and a stored weekly report keeps agreeing with a fresh one).
    with session_scope() as s:
        assert metrics.compute(s, *week).on_time.as_dict() == before


def test_rating_an_appeal_staff_closed_early_does_not_say_the_window_lapsed(w):
    """The enterprise trying to rate a closed appeal on day 1 was told the 7-day window had passed. (Pass 13: staff
    no longer close a resolved appeal inside the window — 409 rating_window_open — so a rejected one stands for an
    appeal ended early.)"""
    from wxapp_backend.errors import Conflict

    a = w.submit()
    w.act(a, "accept", category="tax")
    w.act(a, "resolve", now=sh(2025, 10, 22, 10, 0), resolution="已更换税控盘")
    with pytest.raises(Conflict) as info:
        w.act(a, "close", now=sh(2025, 10, 22, 11, 0), note="企业电话确认已解决")
    assert info.value.code == "rating_window_open"
    b = w.submit()
    w.act(b, "reject", now=sh(2025, 10, 22, 11, 0), reason="不属于受理范围")
    with pytest.raises(Conflict) as info, session_scope() as s:
        services.rate(s, w.user.id, b, resolved=True, satisfaction=5, now=sh(2025, 10, 23, 10, 0))
    assert info.value.code == "not_awaiting_rating" and "不予受理" in info.value.message
    w.act(a, "close", now=sh(2025, 10, 31, 11, 0), note="归档")  # 7 working days have passed (10:00)
    with pytest.raises(Conflict) as info, session_scope() as s:  # and a lapsed window still says so
        services.rate(s, w.user.id, a, resolved=True, satisfaction=5, now=sh(2025, 11, 3, 10, 0))
    assert info.value.code == "rating_window_over"


@pytest.mark.parametrize(("task", "field_word"), [
    ({"department": ["城运中心", "市场监管所"]}, "缺少部门"),
    ({"department": "城运中心", "required": "no"}, "true 或 false"),
    ({"department": "城运中心", "required": 0}, "true 或 false"),
    ({"department": "城运中心", "description": {"a": 1}}, "说明应为文字"),
])
def test_coordination_tasks_with_values_of_the_wrong_kind_are_refused(w, task, field_word):
    from wxapp_backend.errors import ValidationError

    a = w.submit()
    w.act(a, "accept", category="tax")
    with pytest.raises(ValidationError) as info:
        w.act(a, "coordinate", tasks=[task])
    assert field_word in info.value.message
    assert w.get(a).status == "accepted"
    with pytest.raises(ValidationError):
        w.act(a, "coordinate", tasks={"department": "城运中心"})  # not a list
    w.act(a, "coordinate", tasks=[{"department": " 城运中心 ", "required": False}])
    with session_scope() as s:
        from wxapp_backend.appeals.models import AppealTask
        t = s.scalars(select(AppealTask).where(AppealTask.appeal_id == a)).one()
        assert (t.department, t.required) == ("城运中心", False)


def test_only_a_verified_contact_files_an_appeal_into_an_enterprises_record(w, make_enterprise, make_building):
    """Any user could attach an appeal to any enterprise by id, and it then counted in that enterprise's issue
    list; now the API refuses it (the name can still be written), and a chat mention stays words."""
    from wxapp_backend.appeals import intake as appeal_intake
    from wxapp_backend.errors import ValidationError

    rival = make_enterprise(name="隔壁贸易有限公司", building_id=make_building(name="幸福大楼").id)
    with pytest.raises(ValidationError) as info:
        w.submit(user_id=w.other.id, enterprise_id=rival.id)
    assert "enterprise_id" in info.value.fields and "已核实" in info.value.message
    named = w.get(w.submit(user_id=w.other.id, enterprise_name="隔壁贸易有限公司"))
    assert named.enterprise_id is None and named.enterprise_name == "隔壁贸易有限公司"
    with session_scope() as s:  # the chat found the company by its exact name: kept as words and its building
        draft = {"id": "d1", "content": "隔壁公司的空调外机噪音很大", "contact_name": "李四",
                 "contact_phone": "13800138001", **appeal_intake.match_place(s, "隔壁贸易有限公司")}
        appeal = appeal_intake.submit_from_chat(s, w.other.id, draft, account="oa")
        assert (appeal.enterprise_id, appeal.enterprise_name) == (None, "隔壁贸易有限公司")
        assert appeal.building_id == rival.building_id
    # the verified contact of an enterprise still files into it by id
    own = w.get(w.submit(enterprise_id=w.enterprise.id))
    assert own.enterprise_id == w.enterprise.id


def test_a_department_with_only_a_coordination_task_does_its_task_not_the_appeal(w, make_staff):
    """会办: the helping department completes its task and may add notes; resolving the appeal, asking the
    enterprise for material or an extension stay with the handling department (it could do all of them)."""
    from wxapp_backend.appeals.services import ESCALATION_OWNER
    from wxapp_backend.errors import Forbidden

    a = w.submit()
    w.act(a, "accept", category="tax")  # 税务: handled by 税务所
    w.act(a, "assign")  # given to 税务所 (pass 13: a department handles an appeal once it is given it)
    w.act(a, "coordinate", tasks=[{"department": "城运中心", "required": True}])
    helper_staff = make_staff(role="dept", department="城运中心")
    helper = Actor("staff", helper_staff.id, role="dept", department="城运中心", name="城运")
    with session_scope() as s:
        from wxapp_backend.appeals.models import AppealTask

        task_id = s.scalar(select(AppealTask.id).where(AppealTask.appeal_id == a))
    for action, data in (("resolve", {"resolution": "已处理"}), ("request_info", {"note": "请补充"}),
                         ("request_extension", {"working_days": 3, "reason": "需要时间"})):
        with pytest.raises(Forbidden), session_scope() as s:
            services.perform(s, helper, a, action, data)
    with session_scope() as s:
        services.perform(s, helper, a, "note", {"note": "已到现场查看"})
    with session_scope() as s:
        services.perform(s, helper, a, "complete_task", {"task_id": task_id, "note": "已核实"})
    handler_staff = make_staff(role="dept", department=w.get(a).department)
    handler = Actor("staff", handler_staff.id, role="dept", department=handler_staff.department, name="承办")
    with session_scope() as s:
        services.perform(s, handler, a, "resolve", {"resolution": "已更换税控盘"})
    assert w.get(a).status == "resolved"
    # the 办不成事 window acts on an escalated appeal it does not handle
    b = w.submit()
    w.act(b, "accept", category="tax")
    w.act(b, "escalate", reason="久拖不决")
    window_staff = make_staff(role="dept", department=ESCALATION_OWNER)
    window = Actor("staff", window_staff.id, role="dept", department=ESCALATION_OWNER, name="窗口")
    with session_scope() as s:
        services.perform(s, window, b, "resolve", {"resolution": "协调税务所当日办结"})
    assert w.get(b).status == "resolved"
