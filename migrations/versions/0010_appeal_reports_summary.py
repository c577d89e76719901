"""appeal_reports.summary: the figures the list of stored weekly reports shows

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 16:00:00

Found by the session-19 scale pass (104 stored weeks of a busy street): the list of stored weekly reports (console
and staff API) loaded each report's whole data, every appeal of its week and every overdue one (about 1.25 MB a
week), to show seven numbers a row (~300 ms for a page of 20). The new column holds those numbers for the centre
and for each department (a department account's row is its own count); the backfill counts them from each stored
report once, one report at a time, as wxapp_backend.appeals.reports.summary does (copied here as it was, so that a
later change to the application does not change what this revision did).

Written so that it can also run after a regenerated 0001 (migrations/regenerate_initial.py), which already creates
the column from the models: it is added only if missing (the backfill runs either way, for rows still without one).
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def _summary(data: dict) -> dict:
    res = (data.get("metrics") or {}).get("resolution")
    departments: dict[str, dict[str, int]] = {}

    def of(row: dict) -> dict[str, int] | None:
        dept = row.get("department") if isinstance(row, dict) else None
        if not isinstance(dept, str):
            return None
        return departments.setdefault(dept, {"submitted": 0, "escalated": 0, "overdue_now": 0})

    for row in data.get("appeals") or []:
        if (counts := of(row)) is not None:
            counts["submitted"] += 1
            counts["escalated"] += 1 if row.get("escalated") else 0
    for row in data.get("overdue") or []:
        if (counts := of(row)) is not None:
            counts["overdue_now"] += 1
    return {"totals": dict(data.get("totals") or {}),
            "resolution": [res["numerator"], res["denominator"]] if res else None,
            "departments": departments}


def upgrade() -> None:
    bind = op.get_bind()
    if "summary" not in {c["name"] for c in sa.inspect(bind).get_columns("appeal_reports")}:
        op.add_column("appeal_reports", sa.Column("summary", sa.JSON(), nullable=True))
    reports = sa.table("appeal_reports", sa.column("id", sa.Integer), sa.column("data", sa.JSON),
                       sa.column("summary", sa.JSON))
    ids = list(bind.scalars(sa.select(reports.c.id).where(reports.c.summary.is_(None)).order_by(reports.c.id)))
    for report_id in ids:  # one at a time: each is about a megabyte
        data = bind.scalar(sa.select(reports.c.data).where(reports.c.id == report_id))
        bind.execute(reports.update().where(reports.c.id == report_id)
                     .values(summary=_summary(data if isinstance(data, dict) else {})))


def downgrade() -> None:
    with op.batch_alter_table("appeal_reports") as batch:
        batch.drop_column("summary")
