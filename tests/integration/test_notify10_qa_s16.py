"""Notices QA (session 16, notify10): staff stop a notice that is going out (停止发送) — nobody more gets it, the rest
are recorded as skipped with their credit kept, it is audited, and it is never resumed."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from wxapp_backend.notices import broadcast
from wxapp_backend.notices.broadcast_models import OutboxRow

SUBSCRIBE = "/cgi-bin/message/subscribe/send"


def _rows(db, nid):
    db.expire_all()
    return db.query(OutboxRow).filter_by(notice_id=nid, channel="subscribe").order_by(OutboxRow.id).all()


# --- migration 0007 ---------------------------------------------------------------------------------------------


def test_upgrading_to_0007_lets_a_notice_be_stopped_and_keeps_its_rows(settings, tmp_path):
    """0007 widens the notices' status CHECK by 'stopped' (SQLite rebuilds the table): an old database's notices and
    their outbox rows stay, 'stopped' is taken afterwards and a word the constraint does not know is still refused."""
    from tests.integration.test_ops2_qa_s14 import sqlite_database_at
    from wxapp_backend.cli import upgrade_database

    with sqlite_database_at(settings, tmp_path, "0006") as engine:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, openid, nickname, phone, role, binding_state, followed, blocked, no_show_count,"
                    " created_at, updated_at) VALUES (1, 'o-old', '', '', 'white_collar', 'none', 0, 0, 0,"
                    " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO notices (id, kind, title, summary, page, template_id, template_fields, audience, status,"
                    " expand_cursor, recipients, created_at, updated_at) VALUES (1, 'policy', '政策速递', '新政策', '',"
                    " 'tpl', '{}', '{\"all\": true}', 'sending', 1, 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO notice_outbox (notice_id, user_id, channel, status, attempts, errcode, detail, delivery)"
                    " VALUES (1, 1, 'subscribe', 'pending', 0, 0, '', '')"
                )
            )
            with pytest.raises(Exception, match="CHECK"):
                with conn.begin_nested():
                    conn.execute(text("UPDATE notices SET status = 'stopped' WHERE id = 1"))
        assert upgrade_database() >= "0007"
        with engine.begin() as conn:
            conn.execute(text("UPDATE notices SET status = 'stopped' WHERE id = 1"))
            assert conn.execute(text("SELECT status FROM notices")).scalar() == "stopped"
            assert conn.execute(text("SELECT count(*) FROM notice_outbox")).scalar() == 1
            ddl = conn.execute(text("SELECT sql FROM sqlite_master WHERE name = 'notices'")).scalar()
            assert "kind in ('policy','activity')" in ddl and "idempotency_key" in ddl, (
                ddl
            )  # the rest is kept
            with pytest.raises(Exception, match="CHECK"):
                with conn.begin_nested():
                    conn.execute(text("UPDATE notices SET status = 'paused' WHERE id = 1"))
        upgrade_database()  # idempotent


def test_the_database_in_use_takes_stopped_and_refuses_other_words(db, published_notice):
    """On the suite's own database (SQLite or PostgreSQL, migrated to the head)."""
    nid = published_notice(1)
    db.execute(text("UPDATE notices SET status = 'stopped' WHERE id = :id"), {"id": nid})
    with pytest.raises(Exception, match="(?i)check"):
        db.execute(text("UPDATE notices SET status = 'paused' WHERE id = :id"), {"id": nid})
    db.rollback()


# --- the fan-out ------------------------------------------------------------------------------------------------


def _actor(make_staff, role="staff"):
    staff = make_staff(role=role)
    return broadcast.Actor("staff", staff.id, role=role), staff


def _credits(db, template):
    from wxapp_backend.notices.models import SubscribeCredit

    db.expire_all()
    return {c.user_id: c.credits for c in db.query(SubscribeCredit).filter_by(template_id=template)}


@pytest.mark.parametrize("control", [False, True], ids=["stop", "negative-control"])
def test_stopping_while_a_chunk_goes_out_sends_to_nobody_more(
    published_notice, standin, db, app, make_staff, monkeypatch, control
):
    """Staff stop the notice while a worker is half-way through a chunk of 6: the 2 WeChat already took count as sent,
    the 4 not yet handed over are skipped as 已停止发送 with their credit given back, and the stop is audited. (The
    negative control runs without the worker's check and sends to all 6: the test sees the difference.)"""
    from wxapp_backend.audit import AuditLog
    from wxapp_backend.db import session_scope
    from wxapp_backend.wechat.client import WeChatAPI

    nid = published_notice(6, fanout_send_chunk=6)
    broadcast.expand_notice(nid)
    template = broadcast._get(db, nid).template_id
    actor, staff = _actor(make_staff)
    real, calls = WeChatAPI.send_subscribe, []
    if control:
        monkeypatch.setattr(broadcast, "_stop_flagged", lambda notice_id: False)

    def send_then_stop(self, openid, template_id, data, page="", **kw):
        resp = real(self, openid, template_id, data, page, **kw)
        calls.append(openid)
        if len(calls) == 2:  # a colleague presses 停止发送 in the console meanwhile
            with session_scope() as s:
                broadcast.stop(s, actor, nid)
        return resp

    monkeypatch.setattr(WeChatAPI, "send_subscribe", send_then_stop)
    broadcast.send_notice(nid)
    rows = _rows(db, nid)
    if control:
        assert len(calls) == 6
        return
    assert len(calls) == 2 and len(standin.calls_to(SUBSCRIBE)) == 2
    assert [r.status for r in rows] == ["sent"] * 2 + ["skipped"] * 4, [(r.status, r.detail) for r in rows]
    assert all(r.detail == "已停止发送" and r.attempts == 0 for r in rows[2:])
    held = _credits(db, template)
    assert [held[r.user_id] for r in rows] == [0, 0, 1, 1, 1, 1]  # spent on the 2 sent only
    with app.app_context():
        p = broadcast.progress(db, nid)
    assert p["stopped"] and p["status_label"] == "已停止发送" and p["reached"] == 2 and not p["finished"]
    assert p["skipped_reasons"] == [{"errcode": 0, "detail": "已停止发送", "count": 4}]
    log = db.query(AuditLog).filter_by(action="notice.stopped").one()
    assert log.actor_id == str(staff.id) and log.target_id == str(nid) and log.created_at is not None
    assert log.data["in_flight"] == 6 and log.data["reached"] == 0  # the chunk was still out at the stop
    # Later turns (the next job, the sweeper) send nobody either and never finish it as “已完成”.
    broadcast.send_notice(nid)
    broadcast.sweep_leases()
    assert len(standin.calls_to(SUBSCRIBE)) == 2
    assert broadcast._get(db, nid).status == "stopped"


def test_a_worker_killed_after_the_stop_and_restarted_sends_to_nobody(
    published_notice, standin, db, app, make_staff, run_jobs, monkeypatch
):
    """A worker held a claimed batch and a chunk 'sending' when the notice was stopped, and was killed before it
    looked again: its queued send jobs run on the restart, the sweeper runs, a row a retry had put back to 'pending'
    comes round — nobody gets the message."""
    from datetime import timedelta

    from wxapp_backend.db import session_scope, utcnow

    nid = published_notice(6, fanout_claim_batch=4)
    broadcast.expand_notice(nid)  # queues the send job too
    token, claimed = broadcast._claim(nid, 4)  # the killed worker's batch
    assert len(claimed) == 4
    db.execute(text("UPDATE notice_outbox SET status = 'sending' WHERE id = :id"), {"id": claimed[0][0]})
    actor, _ = _actor(make_staff)
    with session_scope() as s:
        broadcast.stop(s, actor, nid)
    db.execute(
        text("UPDATE notice_outbox SET status = 'pending', detail = '' WHERE id = :id"), {"id": claimed[1][0]}
    )
    run_jobs()  # the restarted worker
    broadcast.sweep_leases(now=utcnow() + timedelta(seconds=broadcast.LEASE_SECONDS + 5))
    run_jobs()
    assert standin.calls_to(SUBSCRIBE) == []
    statuses = [(r.status, r.detail) for r in _rows(db, nid)]
    assert statuses[0][0] == "failed" and "结果未知" in statuses[0][1]  # at most once: it may have gone out
    assert statuses[1:] == [("skipped", "已停止发送")] * 5, statuses
    assert broadcast._get(db, nid).status == "stopped"
    # The dead worker's batch, were it to wake up, sends nothing: the rows are not its to send any more.
    outcomes = broadcast._send_chunk(
        broadcast._api(),
        broadcast.RateLimiter(app.extensions["wxapp"].redis, 1000),
        token,
        claimed[2:],
        broadcast._get(db, nid).template_id,
        {"thing1": "x"},
        "",
        notice_id=nid,
    )
    assert outcomes == ["lost_lease", "lost_lease"] and standin.calls_to(SUBSCRIBE) == []


def test_stopping_during_the_expansion_writes_nobody_more(
    published_notice, db, make_staff, standin, run_jobs
):
    """Stopped while the audience is still being written: the users not written yet get neither the inbox item nor
    the subscribe message."""
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices.models import InboxItem

    nid = published_notice(5)
    actor, _ = _actor(make_staff)
    with session_scope() as s:
        broadcast.stop(s, actor, nid)
    assert broadcast.expand_notice(nid, batch=2) == 0
    run_jobs()
    assert db.query(InboxItem).count() == 0 and _rows(db, nid) == [] and standin.calls_to(SUBSCRIBE) == []


# --- the staff API ------------------------------------------------------------------------------------------------


def test_the_api_stops_once_refuses_drafts_and_finished_notices_and_never_resumes(
    client, published_notice, make_staff, staff_headers, db, standin
):
    from wxapp_backend.audit import AuditLog

    staff = make_staff(role="staff")
    hs = staff_headers(staff)
    nid = published_notice(3)
    broadcast.expand_notice(nid)
    first = client.post(f"/api/v1/staff/notices/{nid}/stop", headers=hs)
    assert first.status_code == 200, first.get_json()
    assert first.get_json()["status"] == "stopped" and first.get_json()["reached"] == 0
    again = client.post(f"/api/v1/staff/notices/{nid}/stop", headers=hs)  # a double click
    assert again.status_code == 200 and again.get_json()["status"] == "stopped"
    assert db.query(AuditLog).filter_by(action="notice.stopped").count() == 1
    assert [r.status for r in _rows(db, nid)] == ["skipped"] * 3
    # Not resumed by publishing it again, nor by the console's restart.
    resp = client.post(f"/api/v1/staff/notices/{nid}/publish", headers=hs)
    assert resp.status_code == 409 and resp.get_json()["error"] == "notice_stopped"
    assert "不能恢复" in resp.get_json()["message"]
    broadcast.sweep_leases(force=True)
    assert standin.calls_to(SUBSCRIBE) == []
    # A draft, and a notice that has gone out in full: 409 with a word saying why.
    draft = client.post(
        "/api/v1/staff/notices", headers=hs, json={"title": "草稿", "audience": {"all": True}}
    ).get_json()["id"]
    resp = client.post(f"/api/v1/staff/notices/{draft}/stop", headers=hs)
    assert (
        resp.status_code == 409
        and resp.get_json()["error"] == "not_sending"
        and "草稿" in resp.get_json()["message"]
    )
    done = published_notice(1)
    broadcast.expand_notice(done)
    broadcast.send_notice(done)
    assert broadcast._get(db, done).status == "done"
    resp = client.post(f"/api/v1/staff/notices/{done}/stop", headers=hs)
    assert resp.status_code == 409 and resp.get_json()["error"] == "already_finished"
    assert "已全部发送完成" in resp.get_json()["message"]
    assert client.post("/api/v1/staff/notices/999999/stop", headers=hs).status_code == 404
    # Department accounts follow notices; stopping one is for staff, as publishing is.
    dept = make_staff(role="dept", department="市场监管所")
    assert client.post(f"/api/v1/staff/notices/{nid}/stop", headers=staff_headers(dept)).status_code == 403
    assert client.post(f"/api/v1/staff/notices/{nid}/stop").status_code == 401
    spec = client.get("/api/v1/openapi.json").get_json()
    op = spec["paths"]["/api/v1/staff/notices/{notice_id}/stop"]["post"]
    assert "停止发送" in op["summary"] + op.get("description", "") and "409" in op["responses"]


# --- the console --------------------------------------------------------------------------------------------------


def test_the_console_stops_a_notice_with_a_confirmation_and_csrf(
    client, published_notice, make_staff, console_login, db, standin
):
    nid = published_notice(2)
    broadcast.expand_notice(nid)
    dept = make_staff(role="dept", department="市场监管所")
    csrf = console_login(dept)
    assert f"/console/notices/{nid}/stop" not in client.get(f"/console/notices/{nid}").get_data(as_text=True)
    assert client.post(f"/console/notices/{nid}/stop", data={"csrf_token": csrf}).status_code == 403
    client.post("/console/logout", data={"csrf_token": csrf})
    csrf = console_login(make_staff(role="staff"))
    page = client.get(f"/console/notices/{nid}").get_data(as_text=True)
    assert f'action="/console/notices/{nid}/stop"' in page and "确定停止发送吗" in page
    assert client.post(f"/console/notices/{nid}/stop", data={}).status_code in (400, 403)
    assert broadcast._get(db, nid).status == "sending"
    resp = client.post(f"/console/notices/{nid}/stop", data={"csrf_token": csrf}, follow_redirects=True)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and "已停止发送：停止前已发出订阅消息 0 人" in page, page
    assert (
        "停止后不能恢复" in page
        and "重新启动发送" not in page
        and f'/console/notices/{nid}/stop"' not in page
    )
    assert broadcast._get(db, nid).status == "stopped"
    page = client.post(
        f"/console/notices/{nid}/stop", data={"csrf_token": csrf}, follow_redirects=True
    ).get_data(as_text=True)
    assert "已经停止发送了" in page
    page = client.post(
        f"/console/notices/{nid}/resume", data={"csrf_token": csrf}, follow_redirects=True
    ).get_data(as_text=True)
    assert "不能恢复" in page and "已重新启动发送" not in page
    assert standin.calls_to(SUBSCRIBE) == []


def test_a_stop_flag_left_by_a_stop_that_did_not_commit_does_not_hold_the_fan_out(
    published_notice, db, redis_client, standin
):
    """The flag is set just before the stop commits; if that commit failed, the notice is still going out: the worker
    that sees the flag finds it still sending, drops the flag and sends to everyone."""
    nid = published_notice(3, fanout_send_chunk=3)
    broadcast.expand_notice(nid)
    redis_client.set(broadcast.STOP_FLAG.format(nid), 1)
    broadcast.send_notice(nid)
    assert [r.status for r in _rows(db, nid)] == ["sent"] * 3
    assert len(standin.calls_to(SUBSCRIBE)) == 3 and not redis_client.exists(broadcast.STOP_FLAG.format(nid))
