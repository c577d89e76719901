"""Audit trail completeness and secret hygiene (QA pass 9): what changed is in the audit log, and no secret,
token or password reaches the logs, the audit rows or an error page."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from wxapp_backend.logs import configure_logging
from wxapp_backend.wechat.client import WeChatAPIError, build_api, code_to_session


@contextmanager
def captured_logs(state, level: str = "DEBUG", json_logs: bool = True) -> Iterator[io.StringIO]:
    """The application's own log handler (filters and JSON format as in production), writing to a buffer."""
    buf, stderr = io.StringIO(), sys.stderr
    sys.stderr = buf  # configure_logging binds the handler to the sys.stderr of the moment
    try:
        configure_logging(level, json_logs, state.settings.secret_values())
    finally:
        sys.stderr = stderr
    try:
        yield buf
    finally:
        configure_logging(state.settings.log_level, state.settings.log_json, state.settings.secret_values())


def test_debug_logs_never_carry_the_access_token_or_the_login_code(app_ctx, standin):
    """LOG_LEVEL=DEBUG makes urllib3 log every URL it calls, and WeChat takes the access token in the query
    string (jscode2session the secret and the one-time login code): the token was written out in full."""
    state = app_ctx.extensions["wxapp"]
    with captured_logs(state) as buf:
        wxa = build_api("wxa", state.settings, state.redis, state.wechat_http, sleep=lambda _s: None)
        wxa.send_text("o-user-1", "您好")
        token = wxa.access_token()
        standin.fail_next("/cgi-bin/message/custom/send", 45015)  # a failing call logs its URL too
        try:
            wxa.send_text("o-user-1", "您好")
        except WeChatAPIError:
            pass
        answer = code_to_session(state.wechat_http, state.settings.wxa_appid, state.settings.wxa_secret,
                                 "code-for-log-check")
    out = buf.getvalue()
    assert "/cgi-bin/message/custom/send" in out  # the URLs were logged: the check below means something
    assert token not in out
    assert "code-for-log-check" not in out
    assert state.settings.wxa_secret not in out
    assert answer["session_key"] not in out
    assert "access_token=***" in out


def _audit_rows(db, action: str, target_id=None) -> list:
    from sqlalchemy import select

    from wxapp_backend.audit import AuditLog

    db.expire_all()
    stmt = select(AuditLog).where(AuditLog.action == action)
    if target_id is not None:
        stmt = stmt.where(AuditLog.target_id == str(target_id))
    return list(db.scalars(stmt.order_by(AuditLog.id)))


def test_activity_publish_and_cancel_say_what_the_status_became(client, staff, staff_headers, new_activity, db):
    """Publishing and cancelling are edits of the status: the audit row named the field ("status") but not what
    it became, so the log could not tell a publication from a cancellation, nor an old capacity from a new one."""
    activity_id = new_activity(status="draft")
    created = _audit_rows(db, "activity.created", activity_id)
    assert len(created) == 1 and created[0].data["status"] == "draft"
    headers = staff_headers(staff)
    for body in ({"status": "published", "capacity": 5}, {"status": "cancelled"}):
        resp = client.patch(f"/api/v1/staff/activities/{activity_id}", json=body, headers=headers)
        assert resp.status_code == 200, resp.get_json()
    published, cancelled = _audit_rows(db, "activity.updated", activity_id)
    assert published.actor_type == "staff" and published.actor_id == str(staff.id)
    assert published.data["changes"]["status"] == ["draft", "published"]
    assert published.data["changes"]["capacity"] == [2, 5]
    assert cancelled.data["changes"]["status"] == ["published", "cancelled"]


def test_kb_import_audits_each_entry_it_creates_changes_or_retires(app, app_ctx, tmp_path, db):
    """`kb import --replace` wrote one row of counts: which entries it took offline (or rewrote) could not be
    found by the entry's id, as each console edit and each imported enterprise can."""
    from wxapp_backend.knowledge_store.cli import load_default_if_empty
    from wxapp_backend.knowledge_store.models import KBEntry

    load_default_if_empty()
    kept, gone = db.query(KBEntry).order_by(KBEntry.id).limit(2).all()
    f = tmp_path / "kb.csv"
    f.write_text(f"id,question,answer\nnew-1,新问题,新答案\n{kept.id},{kept.question},改过的答案\n", encoding="utf-8")
    result = app.test_cli_runner().invoke(args=["kb", "import", str(f), "--replace"])
    assert result.exit_code == 0, result.output
    created = _audit_rows(db, "kb.entry_created", "new-1")
    updated = _audit_rows(db, "kb.entry_updated", kept.id)
    retired = _audit_rows(db, "kb.entry_retired", gone.id)
    assert [r.actor_type for r in created + updated + retired] == ["system"] * 3
    assert "answer" in updated[0].data["fields"] and retired[0].data["via"] == "import"
    default_load, summary = _audit_rows(db, "kb.imported")
    assert summary.data["retired"] == len(_audit_rows(db, "kb.entry_retired")) > 1
    # Which file: the operator's, or the default knowledge base that init-db loads (both run as "system").
    assert summary.data["source"] == str(f) and default_load.data["source"].endswith("data")


def test_a_console_500_keeps_secrets_out_of_the_page_and_the_logged_traceback(app, client, make_staff,
                                                                               console_login, monkeypatch):
    """The redaction filter rewrote the log message only: the traceback (the "exc" of a JSON line, or the text
    after a plain one) went out as it was, and an exception's text is where a library puts what it was given."""
    from wxapp_backend.console import audit_log

    state = app.extensions["wxapp"]
    secret = state.settings.wxa_secret

    def broken(*_a, **_kw):
        raise RuntimeError(f"could not reach https://api.example/x?secret={secret}&k={state.settings.secret_key}")

    admin = make_staff(role="admin")
    csrf = console_login(admin)
    monkeypatch.setattr(audit_log, "search_audit", broken)
    for json_logs in (True, False):
        with captured_logs(state, "INFO", json_logs) as buf:
            resp = client.get("/console/audit")
        page, out = resp.get_data(as_text=True), buf.getvalue()
        assert resp.status_code == 500 and "服务开了个小差" in page
        assert "RuntimeError" in out  # the traceback was logged: the checks below mean something
        for value in (secret, state.settings.secret_key, admin.plain_password):
            assert value not in out and value not in page
        assert csrf not in out  # the page has it, in its own forms
        assert "could not reach" not in page


def test_deleting_a_building_grid_or_enterprise_lists_the_records_it_unlinks(app_ctx, make_grid, make_building,
                                                                           make_enterprise, make_user,
                                                                           make_activity, db):
    """The database clears (ON DELETE SET NULL) the building, grid or enterprise of appeals, activities and
    registrations that named the deleted row: the appeal's record (企业问题清单, 一楼一档) and an activity's venue
    changed with no trace in the audit log. The deletion's audit row now lists them, as it lists users."""
    from datetime import UTC, datetime, timedelta

    from wxapp_backend.activities.models import Registration
    from wxapp_backend.appeals import services as appeal_services
    from wxapp_backend.audit import Actor
    from wxapp_backend.db import session_scope
    from wxapp_backend.enterprises import services as ent

    grid = make_grid()
    building = make_building(grid_id=grid.id)
    enterprise = make_enterprise()
    user = make_user(nickname="张三", enterprise_id=enterprise.id, binding_state="verified")
    past = make_activity(building_id=building.id, address="", starts_at=datetime.now(UTC) - timedelta(days=30))
    with session_scope() as s:
        appeal, _ = appeal_services.submit_appeal(s, user.id, appeal_services.Intake(
            content="楼道灯坏了", contact_name="张三", contact_phone="13800138000", building_id=building.id))
        appeal_id = appeal.id
        appeal.status = "closed"  # an open appeal holds its building (session 18): this one is on record only
        s.add(Registration(activity_id=past.id, user_id=user.id, enterprise_id=enterprise.id, status="attended"))
        s.flush()
        reg_id = s.scalar(Registration.__table__.select().with_only_columns(Registration.id))
    admin = Actor("staff", 1, role="admin")
    with session_scope() as s:
        ent.delete_enterprise(s, admin, enterprise.id)
    with session_scope() as s:
        ent.delete_building(s, admin, building.id)
    with session_scope() as s:
        ent.delete_grid(s, admin, grid.id)
    (e_row,), (b_row,), (g_row,) = (_audit_rows(db, a) for a in ("enterprise.deleted", "building.deleted",
                                                                  "grid.deleted"))
    assert e_row.data["cleared_appeals"] == [appeal_id] and e_row.data["cleared_registrations"] == [reg_id]
    assert b_row.data["cleared_appeals"] == [appeal_id] and b_row.data["cleared_activities"] == [past.id]
    assert g_row.data["cleared_appeals"] == [appeal_id]


def test_logins_leave_no_password_token_or_session_key_in_the_logs_or_audit_rows(app, client, make_staff,
                                                                                 console_login, standin, db):
    """Mini-program login (jscode2session), scripted staff login and console login, at DEBUG."""
    import base64
    import hashlib
    import json

    state = app.extensions["wxapp"]
    admin = make_staff(role="admin")
    code = "logincode-0001"
    with captured_logs(state) as buf:
        user_login = client.post("/api/v1/auth/login", json={"code": code})
        staff_login = client.post("/api/v1/staff/login", json={"username": admin.username,
                                                               "password": admin.plain_password})
        wrong = client.post("/api/v1/staff/login", json={"username": admin.username, "password": "Wr0ngPassw0rd"})
        csrf = console_login(admin)
    assert user_login.status_code == 200 and staff_login.status_code == 200 and wrong.status_code == 401
    digest = hashlib.sha256(f"{state.settings.wxa_appid}:{code}".encode()).digest()
    session_key = base64.b64encode(digest[:16]).decode("ascii")  # what the stand-in answered
    out = buf.getvalue()
    assert "jscode2session" in out  # the call was logged: the checks below mean something
    rows = json.dumps([r.data for r in _audit_rows(db, "staff.login") + _audit_rows(db, "user.created")],
                      ensure_ascii=False)
    for value in (code, session_key, state.settings.wxa_secret, user_login.get_json()["token"],
                  staff_login.get_json()["token"], admin.plain_password, "Wr0ngPassw0rd", csrf):
        assert value not in out and value not in rows


def test_appeal_category_and_holiday_changes_keep_the_value_they_replace(client, make_staff, staff_headers, db):
    """A category's promised days are every appeal's deadline, a holiday row the SLA calendar: their audit rows
    held only the submitted values, so a promise cut from 5 to 3 days read as "3", and the seeded catalogue's
    first values were nowhere in the log."""
    admin = make_staff(role="admin")
    headers = staff_headers(admin)
    items = client.get("/api/v1/staff/appeal-categories", headers=headers).get_json()["items"]
    cat = items[0]
    new_days = cat["promised_days"] + 1
    resp = client.patch(f"/api/v1/staff/appeal-categories/{cat['id']}",
                        json={"promised_days": new_days, "name": cat["name"]}, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    (row,) = _audit_rows(db, "appeal_category.saved", cat["id"])
    assert row.actor_id == str(admin.id)
    assert row.data["changes"] == {"promised_days": [cat["promised_days"], new_days]}  # the name did not change
    for is_workday in (False, True):
        resp = client.post("/api/v1/staff/appeal-holidays", json={"day": "2027-01-04", "is_workday": is_workday,
                                                                  "name": "调休"}, headers=headers)
        assert resp.status_code == 200, resp.get_json()
    first, second = _audit_rows(db, "appeal_holiday.set")
    assert first.data["previous"] is None
    assert second.data["previous"] == {"is_workday": False, "name": "调休"} and second.data["is_workday"] is True


def test_notice_draft_edits_say_what_changed(client, make_staff, staff_headers, make_building, db):
    """notice.updated named only the notice: a draft whose audience was widened to everyone before it went out
    left no trace of what the audience had been (notice.created did not record it either)."""
    staff = make_staff(role="staff")
    headers = staff_headers(staff)
    building = make_building()
    resp = client.post("/api/v1/staff/notices", headers=headers, json={
        "title": "楼宇停水通知", "summary": "周六停水", "audience": {"building_ids": [building.id]}})
    assert resp.status_code == 201, resp.get_json()
    notice_id = resp.get_json()["id"]
    resp = client.patch(f"/api/v1/staff/notices/{notice_id}", headers=headers,
                        json={"title": "全街道停水通知", "audience": {"all": True}})
    assert resp.status_code == 200, resp.get_json()
    (created,) = _audit_rows(db, "notice.created", notice_id)
    assert created.data["audience"]["building_ids"] == [building.id]
    (updated,) = _audit_rows(db, "notice.updated", notice_id)
    assert updated.actor_id == str(staff.id)
    assert updated.data["changes"]["title"] == ["楼宇停水通知", "全街道停水通知"]
    old, new = updated.data["changes"]["audience"]
    assert old["building_ids"] == [building.id] and new["all"] is True
    assert "summary" not in updated.data["changes"]  # unchanged


def test_appeal_handler_changes_are_audited_with_the_handler_before_and_after(app_ctx, make_user, make_staff, db):
    """Accepting an appeal makes the accepting staff member its handler (when it has none), but the accepted row
    did not say so; changing the handler recorded only the new one."""
    from wxapp_backend.appeals import services as appeal_services
    from wxapp_backend.audit import Actor
    from wxapp_backend.db import session_scope

    user = make_user(nickname="张三")
    first, second = make_staff(role="staff"), make_staff(role="staff")
    with session_scope() as s:
        appeal, _ = appeal_services.submit_appeal(s, user.id, appeal_services.Intake(
            content="门口的路灯坏了", contact_name="张三", contact_phone="13800138000"))
        appeal_id = appeal.id
    a1 = Actor("staff", first.id, role="staff", name="甲")
    with session_scope() as s:
        appeal_services.perform(s, a1, appeal_id, "accept", {})
    with session_scope() as s:
        appeal_services.perform(s, a1, appeal_id, "reassign", {"handler_id": second.id})
    with session_scope() as s:
        appeal_services.perform(s, a1, appeal_id, "assign", {"department": "城运中心", "handler_id": first.id})
    (accepted,) = _audit_rows(db, "appeal.accepted", appeal_id)
    assert accepted.data["handler_id"] == first.id
    (changed,) = _audit_rows(db, "appeal.handler_changed", appeal_id)
    assert changed.data["handler_id"] == second.id and changed.data["previous_handler_id"] == first.id
    (assigned,) = _audit_rows(db, "appeal.assigned", appeal_id)
    assert assigned.data["handler_id"] == first.id and assigned.data["previous_handler_id"] == second.id


def test_kb_edit_keeps_the_answer_it_replaced(app, app_ctx, db):
    """An entry's answer is what the bot tells every enterprise that asks; an edit's audit row named the fields
    only and nothing else keeps old answers, so what the bot said before the edit was lost."""
    import dataclasses

    from wxapp_backend.audit import Actor
    from wxapp_backend.db import session_scope
    from wxapp_backend.knowledge_store.cli import load_default_if_empty
    from wxapp_backend.knowledge_store.models import KBEntry
    from wxapp_backend.knowledge_store.services import entry_from_row, save_entry

    load_default_if_empty()
    row = db.query(KBEntry).order_by(KBEntry.id).first()
    old_answer = row.answer
    entry = dataclasses.replace(entry_from_row(row), answer="新的答复：请致电营商服务中心。")
    with session_scope() as s:
        save_entry(s, app.extensions["wxapp"].redis, Actor("staff", 7, role="staff"), entry, create=False)
    (updated,) = _audit_rows(db, "kb.entry_updated", row.id)
    assert updated.data["fields"] == ["answer"]
    assert updated.data["changes"] == {"answer": [old_answer, "新的答复：请致电营商服务中心。"]}


def failing_job(n: int) -> None:
    raise ValueError(f"boom {n}")


def test_console_resume_and_job_requeue_are_audited(app, client, make_staff, console_login, staff_headers,
                                                    run_jobs, db):
    """Two console buttons that set work going again (a notice's sending; a failed job, a push say) left no
    trace of who pressed them."""
    from wxapp_backend.queue import enqueue

    admin = make_staff(role="admin")
    resp = client.post("/api/v1/staff/notices", headers=staff_headers(admin), json={
        "title": "政策通知", "audience": {"all": True}})
    notice_id = resp.get_json()["id"]
    job = enqueue(failing_job, 9)
    run_jobs()
    csrf = console_login(admin)
    resp = client.post(f"/console/jobs/{job.id}/requeue", data={"csrf_token": csrf})
    assert resp.status_code == 302 and app.extensions["wxapp"].queue.count == 1
    # A fan-out whose workers died (a draft or a finished notice is not restarted: session 17).
    from wxapp_backend.db import session_scope
    from wxapp_backend.notices.broadcast_models import Notice

    with session_scope() as s:
        s.get(Notice, notice_id).status = "sending"
    resp = client.post(f"/console/notices/{notice_id}/resume", data={"csrf_token": csrf})
    assert resp.status_code == 302
    (resumed,) = _audit_rows(db, "notice.resumed", notice_id)
    assert resumed.actor_type == "staff" and resumed.actor_id == str(admin.id) and resumed.target_type == "notices"
    (requeued,) = _audit_rows(db, "job.requeued")
    assert requeued.actor_id == str(admin.id) and requeued.data["job_id"] == job.id
    assert requeued.data["func"].endswith("failing_job")


def test_url_credentials_are_masked_under_any_prefix():
    """component_access_token, client_secret, appsecret: the same credentials under the names other WeChat and
    OAuth endpoints give them (the first filter only masked the bare names)."""
    import logging

    from wxapp_backend.logs import RedactFilter

    rec = logging.LogRecord("urllib3", logging.DEBUG, __file__, 1, '"GET %s HTTP/1.1"', (
        "/x?component_access_token=TOK1&client_secret=SEC2&appsecret=SEC3&authorizer_refresh_token=TOK4&n=1",), None)
    RedactFilter([]).filter(rec)
    msg = rec.getMessage()
    assert not any(v in msg for v in ("TOK1", "SEC2", "SEC3", "TOK4")) and "n=1" in msg


def _job_that_fails_with_a_token_in_its_text(url: str) -> None:
    raise RuntimeError(f"GET {url} failed")


def test_the_jobs_page_and_log_extras_mask_secrets(app, app_ctx, run_jobs, client, make_staff, console_login):
    """The failed-jobs page printed RQ's stored traceback and the job's arguments as they were (a URL with its
    access token); and the JSON log line's extra fields were not masked like its message."""
    import io
    import logging

    from wxapp_backend.logs import JsonFormatter, RedactFilter
    from wxapp_backend.queue import enqueue

    enqueue(_job_that_fails_with_a_token_in_its_text, "https://api.weixin.qq.com/cgi-bin/x?access_token=SECRET-TOKEN-1")
    assert run_jobs() == 1
    console_login(make_staff(role="admin"))
    page = client.get("/console/jobs").get_data(as_text=True)
    assert "SECRET-TOKEN-1" not in page and "access_token=***" in page

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactFilter(["configured-secret-xyz"]))
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("wxapp_backend.test_extras")
    log.addHandler(handler)
    try:
        log.warning("call failed", extra={"url": "https://x/?access_token=SECRET-TOKEN-2", "note": "configured-secret-xyz"})
    finally:
        log.removeHandler(handler)
    line = stream.getvalue()
    assert "SECRET-TOKEN-2" not in line and "configured-secret-xyz" not in line and "access_token=***" in line
