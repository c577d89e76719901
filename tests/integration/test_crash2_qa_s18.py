"""QA session 18, crash safety (second pass): the chat's appeal intake while the database is briefly away, and
real SIGKILLs (the live worker of test_crash_qa_s18) in the middle of a notice's fan-out and of an activity
reminder."""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy.exc import OperationalError

from handlers import appeal_intake as intake
from tests.integration.test_crash_qa_s9 import chat  # noqa: F401  (the fixture)
from tests.integration.test_crash_qa_s18 import SUBSCRIBE, _wait, workers  # noqa: F401  (the fixture)
from wxapp_backend import db as db_module
from wxapp_backend.appeals.models import Appeal
from wxapp_backend.db import session_scope

# --------------------------------------------------------------------------- 1. appeal intake, database away

LONG = ("我们公司在新华大厦12楼，最近三个星期楼下餐厅的油烟一直往上飘，每天中午和傍晚办公室里都是油烟味，"
        "员工开窗也不行，已经找过物业两次，物业说要和餐厅协调但一直没有结果，希望中心帮忙协调处理。") * 3


@pytest.fixture
def db_away(monkeypatch):
    """`with db_away():` every new database session fails to connect, as when PostgreSQL restarts."""
    real = db_module.session_scope

    @contextlib.contextmanager
    def away(*a, **kw):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        yield  # pragma: no cover

    @contextlib.contextmanager
    def switch():
        monkeypatch.setattr(db_module, "session_scope", away)
        try:
            yield
        finally:
            monkeypatch.setattr(db_module, "session_scope", real)

    return switch


def test_a_problem_told_with_wo_yao_fan_ying_is_kept_while_the_database_is_away(chat, db_away, redis_client,  # noqa: F811
                                                                               make_building):
    """“我要反映：<long text>” reads the database only for what it can fill in for the user (their enterprise, the
    contact of an appeal filed today); with the database away that read raised, the user got “请稍后再发一次” and
    the text they typed was in no draft. The draft now starts without those, the text kept."""
    make_building(name="新华大厦")
    with db_away():
        reply = chat("我要反映：" + LONG[:1990])
    assert reply.startswith("好的，我来帮您登记诉求"), reply
    assert "您说的问题已记下" in reply
    # the enterprise step, the database still away: the answer is kept as said (matched once it is back)
    with db_away():
        assert chat("上海某某科技有限公司，新华大厦").startswith("请留下联系人姓名和手机号")
    assert chat("张三 13800138000").startswith("如有现场照片")
    summary = chat("跳过")
    assert summary.startswith("请核对您的诉求") and f"楼宇：{intake.PLACE_CHECKED_LATER}" in summary, summary
    assert chat("确认").startswith("诉求已提交")
    with session_scope() as s:
        appeal = s.query(Appeal).order_by(Appeal.id.desc()).first()
        assert appeal.content == LONG[:1990]
        assert appeal.enterprise_name == "上海某某科技有限公司"
        assert appeal.building_id is not None and appeal.contact_phone == "13800138000"


def test_restart_while_the_database_is_away_starts_a_new_draft(chat, db_away):  # noqa: F811
    assert chat("我要反映").startswith("好的")
    with db_away():
        assert chat("重新开始").startswith("好的，我来帮您登记诉求")
        assert chat("办公楼空调不制冷，物业一直不处理").startswith("请告诉我企业名称")


# --------------------------------------------------------------------------- 2a. a notice's fan-out, kill -9


def test_a_fanout_killed_mid_chunk_sends_the_rest_once_and_the_call_in_flight_never_again(
        app_ctx, standin, workers, published_notice, redis_client):
    """Six subscribers, one chunk, WeChat slow: the worker is killed -9 while WeChat has the first of them. The chunk's
    rows were all 'sending' (moved together before the first call), so the sweeper failed all six as 结果未知 for
    good: five subscribers never got the notice though WeChat never had their message. Only the one WeChat had is
    结果未知 now; the five go out once through the next worker, credit spent once each; the notice finishes."""
    from datetime import timedelta

    from wxapp_backend.auth.models import User
    from wxapp_backend.db import utcnow
    from wxapp_backend.notices import broadcast
    from wxapp_backend.notices.broadcast_models import Notice, OutboxRow
    from wxapp_backend.notices.kinds import get_kind
    from wxapp_backend.notices.models import SubscribeCredit

    standin.set_latency(4.0, SUBSCRIBE)
    try:
        fast = {"FANOUT_JOBS": "1", "FANOUT_RATE": "1000", "FANOUT_BURST": "100"}
        first = workers("first", **fast)
        nid = published_notice(6)
        _wait("WeChat has the first send", lambda: standin.count(SUBSCRIBE) >= 1, 15, workers.all)
        first.kill()
        standin.set_latency(0.0, SUBSCRIBE)
        in_flight = standin.count(SUBSCRIBE)
        assert in_flight == 1
        # What the minute's sweep does once the lease ran out (LEASE_SECONDS on): run at that time, here.
        swept = broadcast.sweep_leases(now=utcnow() + timedelta(seconds=broadcast.LEASE_SECONDS + 1))
        assert swept["unknown"] == 1, swept
        workers("second", **fast)

        def finished():
            with session_scope() as s:
                return s.get(Notice, nid).status == "done"

        _wait("the notice finishes", finished, 15, workers.all)
    finally:
        standin.set_latency(0.0, SUBSCRIBE)
    got = [c.body["touser"] for c in standin.calls_to(SUBSCRIBE)]
    template = get_kind("notice").template_id
    with session_scope() as s:
        rows = {r.user_id: r for r in s.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe")}
        progress = broadcast.progress(s, nid)
        openids = {u: s.get(User, u).openid for u in rows}
        credit = {c.user_id: c.credits for c in s.query(SubscribeCredit).filter(
            SubscribeCredit.template_id == template, SubscribeCredit.user_id.in_(list(rows)))}
    assert len(got) == len(set(got)) == 6, got  # each subscriber once, none twice
    assert set(got) == set(openids.values())
    unknown = [u for u, r in rows.items() if r.status == "failed"]
    assert len(unknown) == 1 and rows[unknown[0]].errcode == broadcast.UNKNOWN_RESULT
    assert openids[unknown[0]] == got[0]  # the one WeChat had when the worker died
    assert sorted(r.status for r in rows.values()) == ["failed"] + ["sent"] * 5
    assert progress["subscribe"]["sent"] == 5 and progress["subscribe"]["failed"] == 1
    assert progress["subscribe"]["sending"] == progress["subscribe"]["pending"] == 0
    assert progress["subscribe_done"] == progress["subscribe_total"] == 6 and progress["percent"] == 100.0
    assert progress["status"] == "done"
    assert credit == dict.fromkeys(rows, 0)  # one credit each, spent once (the unknown one: WeChat may have it)


# --------------------------------------------------------------------------- 2b. an activity reminder, kill -9


def test_an_activity_reminder_killed_mid_send_goes_out_at_most_once_and_the_others_go_out(
        app_ctx, standin, workers, make_activity, make_user, redis_client):
    """The 1-hour reminder of an activity with two registrants, made by its job on the live worker; WeChat slow, the
    worker killed -9 while WeChat has the first subscribe message. The next worker reruns that delivery: it ends it
    as 结果未知 (WeChat may have it), not sent twice, the inbox has it; the other registrant's reminder goes out."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities.models import Registration
    from wxapp_backend.activities.services import REMINDER_KIND
    from wxapp_backend.notices import credits
    from wxapp_backend.notices.jobs import UNKNOWN_RESULT
    from wxapp_backend.notices.kinds import get_kind
    from wxapp_backend.notices.models import InboxItem, Notification, SubscribeCredit
    from wxapp_backend.queue import enqueue

    template = get_kind(REMINDER_KIND).template_id
    activity = make_activity(starts_at=datetime.now(UTC) + timedelta(minutes=58))
    users = [make_user(), make_user()]
    with session_scope() as s:
        for u in users:
            s.add(Registration(activity_id=activity.id, user_id=u.id, status="confirmed",
                               active_key=f"{activity.id}:{u.id}"))
            credits.add_credit(s, u.id, template)
    # The call in flight outlasts the second worker's start (and, unlike the client's 5-s timeout, the kill: a
    # timeout is retried, the one duplicate notices/jobs.py owns to).
    standin.set_latency(10.0, SUBSCRIBE)
    try:
        first = workers("first", WECHAT_API_TIMEOUT="30")
        enqueue("wxapp_backend.activities.jobs.send_reminders", activity.id, "1h", job_id="qa-s18-reminders")
        _wait("WeChat has the first reminder", lambda: standin.count(SUBSCRIBE) >= 1, 15, workers.all)
        standin.set_latency(0.0, SUBSCRIBE)
        workers("second")
        first.kill()  # WeChat still has the first call (10 s)

        def delivered():
            with session_scope() as s:
                notes = s.query(Notification).filter_by(kind=REMINDER_KIND).all()
                return len(notes) == 2 and all(n.status != "pending" for n in notes)

        _wait("both reminders are through", delivered, 15, workers.all)
    finally:
        standin.set_latency(0.0, SUBSCRIBE)
    got = [c.body["touser"] for c in standin.calls_to(SUBSCRIBE)]
    assert sorted(got) == sorted(u.openid for u in users), got  # each once: the one in flight was not sent again
    with session_scope() as s:
        notes = {n.user_id: n for n in s.query(Notification).filter_by(kind=REMINDER_KIND)}
        killed = next(u for u in users if u.openid == got[0])
        other = next(u for u in users if u is not killed)
        assert notes[killed.id].status == "failed"
        assert [a.errcode for a in notes[killed.id].attempts] == [UNKNOWN_RESULT]
        assert notes[other.id].status == "sent_subscribe"
        assert s.query(InboxItem).filter(InboxItem.kind == REMINDER_KIND).count() == 2  # the inbox has both
        assert [c.credits for c in s.query(SubscribeCredit).filter(
            SubscribeCredit.user_id.in_([u.id for u in users]), SubscribeCredit.template_id == template)] == [0, 0]
