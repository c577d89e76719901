"""Scale QA (session 19): staff lists keep their statement count flat as rows grow, exports keep memory flat, and
filtered columns have their index. Few rows each: a bound that does not depend on the rows, not a timing."""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import event, insert

from wxapp_backend.auth.models import User
from wxapp_backend.demo import demo_credit_code
from wxapp_backend.enterprises.models import Enterprise


@contextmanager
def statements(app):
    """The SQL statements the application's engine runs inside the block."""
    seen: list[str] = []

    def count(conn, cursor, statement, params, context, executemany):
        seen.append(statement)

    engine = app.extensions["wxapp"].db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _switching_contacts(db, n: int, start: int) -> None:
    """n verified contacts each applying to switch to an enterprise of their own (改绑申请 waiting for staff)."""
    db.execute(insert(Enterprise), [
        {"id": start + i, "name": f"申请企业{start + i}有限公司", "credit_code": demo_credit_code("91310105", start + i)}
        for i in range(2 * n)])
    db.execute(insert(User), [
        {"openid": f"o-switch-{start + i}", "nickname": f"联系人{start + i}", "role": "enterprise_contact",
         "binding_state": "verified", "enterprise_id": start + i, "pending_enterprise_id": start + n + i}
        for i in range(n)])


def test_pending_bindings_list_loads_the_applied_enterprises_at_once(app, client, db, make_staff, console_login,
                                                                     staff_headers):
    # 待核实 (users?state=pending) is staff's binding to-do list: each row names the enterprise applied for
    # (User.pending_enterprise, a lazy relation), one SELECT per row: 24 statements for a page of 20.
    staff = make_staff(role="staff")
    console_login(staff)
    headers = staff_headers(staff)
    counts = {}
    for n, start in ((3, 1000), (12, 2000)):
        _switching_contacts(db, n if n == 3 else n - 3, start)
        with statements(app) as page:
            r = client.get("/console/users?state=pending")
        assert r.status_code == 200
        assert r.get_data(as_text=True).count("申请企业") >= n
        with statements(app) as api:
            body = client.get("/api/v1/staff/users?state=pending", headers=headers).get_json()
        assert len(body["items"]) == n and all(u["pending_enterprise"] for u in body["items"])
        counts[n] = (len(page), len(api))
    assert counts[3] == counts[12], counts


def _issue_rows(n: int) -> list[dict]:
    return [{"number": f"SQ20250101-{i:05d}", "status": "办理中", "category": "政策咨询", "department": "营商办",
             "enterprise": "上海云帆科技有限公司", "building": "新华大厦", "content": "停车难，请帮忙协调" * 5,
             "submitted_at": "2025-01-01 10:00", "due_at": "2025-01-08 10:00", "overdue": i % 2 == 0,
             "escalated": False, "reopen_count": 0, "open": True} for i in range(n)]


def _peak_bytes(build) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        build()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_issue_list_and_weekly_workbooks_stream_their_rows(app_ctx):
    # The 企业问题清单 workbook holds every appeal ever filed: openpyxl's in-memory workbook took about 4 KB a row
    # while it was built (+200 MB and 7 s for 50,000 appeals). A write-only workbook streams the rows to its file.
    import io

    from openpyxl import load_workbook

    from wxapp_backend.appeals import reports
    from wxapp_backend.db import session_scope

    rows = _issue_rows(1000)
    rows[1]["content"] = "=HYPERLINK(\"http://example.com\")"  # still text, not a formula
    issues = {"enterprises": [{"enterprise": "上海云帆科技有限公司", "enterprise_id": 1, "open": 1000, "total": 1000,
                               "appeals": rows}]}
    with session_scope() as s:
        weekly = reports.weekly(s, None)
    weekly["appeals"] = weekly["overdue"] = rows
    for build in (lambda: reports.issues_xlsx(issues), lambda: reports.weekly_xlsx(weekly)):
        assert _peak_bytes(build) < 1_500_000  # 1,000 rows: 4 MB (issues) and 8 MB (weekly) before
    book = load_workbook(io.BytesIO(reports.issues_xlsx(issues)))
    sheet = book["企业问题清单"]
    assert sheet.max_row == 1001
    assert sheet["G3"].value == "=HYPERLINK(\"http://example.com\")" and sheet["G3"].data_type == "s"
    assert sheet["G3"].quotePrefix
    book = load_workbook(io.BytesIO(reports.weekly_xlsx(weekly)))
    assert book.sheetnames == ["概览", "本周诉求", "当前超期在办"]
    assert book["当前超期在办"].max_row == 1001


def test_audit_actor_filter_and_pending_bindings_have_their_index(app_ctx):
    # The audit page's 操作人 filter (actor_id, newest first) and the dashboard's 待核实 count (binding_state) read
    # the whole audit log / every user: a sequential scan on each look, as both tables grow for good.
    from sqlalchemy import inspect

    engine = app_ctx.extensions["wxapp"].db.engine
    inspector = inspect(engine)
    audit = {tuple(i["column_names"]) for i in inspector.get_indexes("audit_logs")}
    users = {tuple(i["column_names"]) for i in inspector.get_indexes("users")}
    assert ("actor_id", "created_at") in audit, audit
    assert ("binding_state",) in users, users
