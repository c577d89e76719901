"""Scale QA: lists, reports and rates keep their query count and memory flat as the data grows."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, insert

from wxapp_backend.appeals import metrics
from wxapp_backend.appeals.models import Appeal, AppealRating
from wxapp_backend.db import session_scope, utcnow


@contextmanager
def loaded(model):
    """Counts the rows of `model` the ORM builds into objects inside the block."""
    seen = []

    def on_load(target, context):
        seen.append(target)

    event.listen(model, "load", on_load)
    try:
        yield seen
    finally:
        event.remove(model, "load", on_load)


@pytest.fixture
def appeals(db, make_user):
    """add(n): n appeals submitted in the last days, every other one closed (rated 5) and the rest in progress."""
    user = make_user()
    counter = iter(range(1, 10**6))

    def add(n: int) -> None:
        now = utcnow()
        rows = []
        for _ in range(n):
            i = next(counter)
            at = now - timedelta(hours=i)
            closed = i % 2 == 0
            rows.append({"id": i, "number": f"SQ{at:%Y%m%d}-{i:05d}", "user_id": user.id, "content": "停车难，请帮忙",
                         "contact_name": "张三", "contact_phone": "13800138000", "department": "营商办",
                         "status": "closed" if closed else "in_progress", "submitted_at": at,
                         "first_response_at": at + timedelta(minutes=5), "response_due_at": at + timedelta(hours=1),
                         "first_resolved_at": at + timedelta(minutes=30) if closed else None,
                         "resolved_at": at + timedelta(minutes=30) if closed else None,
                         "resolved_on_time": True if closed else None})
        db.execute(insert(Appeal), rows)
        db.execute(insert(AppealRating), [{"appeal_id": r["id"], "user_id": user.id, "round": 1, "resolved": True,
                                           "satisfaction": 5, "department": "营商办"}
                                          for r in rows if r["status"] == "closed"])

    return add


def test_appeal_rates_are_counted_in_the_database(app_ctx, appeals):
    # A rate over a year of a busy street covers thousands of appeals: loading each one (with its category,
    # enterprise and building) to count it took seconds.
    appeals(40)
    now = utcnow()
    with session_scope() as s, loaded(Appeal) as rows:
        m = metrics.compute(s, now - timedelta(days=30), now)
    assert rows == []
    assert m.submitted == 40
    assert (m.response.numerator, m.response.denominator) == (40, 40)
    assert (m.on_time.numerator, m.on_time.denominator) == (20, 20)
    assert (m.resolution.numerator, m.resolution.denominator) == (20, 40)
    assert (m.satisfaction.numerator, m.satisfaction.denominator) == (20, 20)


def test_weekly_report_counts_open_appeals_without_loading_them(app_ctx, appeals, db):
    # Open appeals pile up over the years: the weekly report loaded every one of them only to count them and
    # pick out the overdue ones.
    from sqlalchemy import update

    from wxapp_backend.appeals import reports

    appeals(50)  # 25 in progress, 25 closed, all in the last three days
    db.execute(update(Appeal).where(Appeal.id.in_([1, 3])).values(overdue=True))
    week, _, end = reports.parse_week(None)  # last week: every appeal above came later
    db.execute(update(Appeal).values(submitted_at=end - timedelta(days=30)))
    with session_scope() as s, loaded(Appeal) as rows:
        report = reports.weekly(s, week)
    assert report["totals"]["open_now"] == 25
    assert report["totals"]["overdue_now"] == 2
    assert [r["number"][-5:] for r in report["overdue"]] == ["00001", "00003"]
    assert rows == []  # the overdue ones it lists are read as columns too (session 20)


def test_enterprise_issue_list_reads_columns_not_objects(app_ctx, appeals):
    # The 企业问题清单 holds every appeal ever filed: building each one as an object with its category,
    # enterprise and building (and theirs) took seconds for a few years of a busy street.
    from wxapp_backend.appeals import reports

    appeals(30)
    with session_scope() as s, loaded(Appeal) as rows:
        report = reports.enterprise_issues(s)
    assert rows == []
    [group] = report["enterprises"]
    assert (group["enterprise"], group["enterprise_id"], group["open"], group["total"]) == ("未关联企业", None, 15, 30)
    first = group["appeals"][0]
    assert first["open"] is True and first["status"] == "办理中" and first["content"] == "停车难，请帮忙"
