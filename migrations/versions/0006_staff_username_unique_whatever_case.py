"""staff_users: usernames unique whatever their case, in the database (a unique index on lower(username))

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 00:30:00

Usernames are one name whatever their case (login, lock-out, creation), but only the application held to it: a
row written another way (a script, a restore, a second code path) could add `Bob` next to `bob`. The index makes
the database refuse it, on SQLite and PostgreSQL alike.

Accounts made before that rule may already differ only in case. The oldest of each such group (lowest id) keeps
its name; each later one is renamed `<name>-<id>` (cut to fit 64 characters), with a warning in init-db's log
and a `staff.renamed` audit row naming the old and the new name: its password and everything else stay, and its
owner logs in with the new name from now on. (Refusing the upgrade instead would leave the operator with no way
out but SQL: the console cannot rename an account.)

Written so that it can also run after a regenerated 0001 (migrations/regenerate_initial.py), which already creates
the index from the models: it is created only if missing.
"""
import json
import logging
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import wxapp_backend.db

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

INDEX = "uq_staff_users_lower_username"
log = logging.getLogger("wxapp_backend.migrations")


def _rename_case_duplicates(bind) -> None:
    staff = sa.table("staff_users", sa.column("id", sa.Integer), sa.column("username", sa.String))
    audit = sa.table("audit_logs", sa.column("actor_type", sa.String), sa.column("actor_id", sa.String),
                     sa.column("action", sa.String), sa.column("target_type", sa.String),
                     sa.column("target_id", sa.String), sa.column("data", sa.JSON),
                     sa.column("created_at", wxapp_backend.db.UTCDateTime(timezone=True)))
    rows = bind.execute(sa.select(staff.c.id, staff.c.username).order_by(staff.c.id)).all()
    taken = {name.lower() for _, name in rows}
    kept: dict[str, str] = {}
    for staff_id, name in rows:
        if name.lower() not in kept:
            kept[name.lower()] = name
            continue
        n = 0
        while True:
            suffix = f"-{staff_id}" + (f"-{n}" if n else "")
            new = name[:64 - len(suffix)] + suffix
            if new.lower() not in taken:
                break
            n += 1
        taken.add(new.lower())
        bind.execute(staff.update().where(staff.c.id == staff_id).values(username=new))
        bind.execute(audit.insert().values(
            actor_type="system", actor_id="system", action="staff.renamed", target_type="staff_users",
            target_id=str(staff_id), created_at=datetime.now(UTC),
            data={"from": name, "to": new, "same_as": kept[name.lower()],
                  "reason": "用户名不区分大小写，与更早的账号重名"}))
        log.warning("工作人员账号 %s 与更早的账号 %s 只差大小写，已改名为 %s（密码不变，请通知本人用新用户名登录）",
                    json.dumps(name, ensure_ascii=False), json.dumps(kept[name.lower()], ensure_ascii=False),
                    json.dumps(new, ensure_ascii=False))


def upgrade() -> None:
    # Not looked up with the inspector: SQLite's cannot see an index on an expression. With the index already
    # there no two names can clash, and the renaming finds nothing to do.
    _rename_case_duplicates(op.get_bind())
    op.create_index(INDEX, "staff_users", [sa.text("lower(username)")], unique=True, if_not_exists=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="staff_users", if_exists=True)
