"""Audit rows: every state change that matters records who did what to which row."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from .db import Base, UTCDateTime, utcnow


class AuditLog(Base):
    __tablename__ = "audit_logs"
    # The audit page's 操作人 filter (actor_id, or a username read as one) newest first: without it every look at one
    # person's actions read the whole log.
    __table_args__ = (Index("ix_audit_logs_actor_id_created_at", "actor_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    actor_type: Mapped[str] = mapped_column(String(20))  # staff | user | system
    actor_id: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(64), index=True)
    target_type: Mapped[str] = mapped_column(String(40), default="")
    target_id: Mapped[str] = mapped_column(String(128), default="", index=True)  # a KB entry id is up to 128
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Actor:
    """Who is acting: passed explicitly into services."""

    __slots__ = ("type", "id", "role", "department", "name")

    def __init__(self, type: str, id: int | str | None, role: str = "", department: str = "", name: str = ""):
        self.type, self.id, self.role, self.department, self.name = type, id, role, department, name

    def __repr__(self) -> str:
        return f"Actor({self.type}:{self.id})"


SYSTEM = Actor("system", "system", role="system")


def audit(session: Session, actor: Actor, action: str, target: Any = None, **data: Any) -> AuditLog:
    """Add an audit row in the caller's transaction."""
    target_type = "" if target is None else getattr(target, "__tablename__", type(target).__name__)
    target_id = "" if target is None else str(getattr(target, "id", target))
    row = AuditLog(actor_type=actor.type, actor_id=str(actor.id or ""), action=action,
                   target_type=target_type, target_id=target_id, data=_jsonable(data))
    session.add(row)
    return row


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def search_audit(session: Session, *, actor_type: str | None = None, actor_id: str | None = None,
                 username: str | None = None, action: str | None = None, actions: list[str] | None = None,
                 target_type: str | None = None, target_id: str | None = None, since: datetime | None = None, until: datetime | None = None,
                 page: int = 1, per_page: int = 50):
    """Audit rows, newest first, one page. `action` matches as a prefix ("appeal." finds every appeal
    action), `actions` as whole codes (any of them), `username` names a staff actor (whatever its case), `since` is inclusive and `until` exclusive."""
    from .auth.services import find_staff_by_username
    from .enterprises.services import Page

    stmt = select(AuditLog)
    if actor_type:
        stmt = stmt.where(AuditLog.actor_type == actor_type)
    if actor_id:
        stmt = stmt.where(AuditLog.actor_id == actor_id)
    if username:
        # The account the name logs in to, whatever its case (the same rule as login and account creation).
        staff = find_staff_by_username(session, username)
        stmt = stmt.where(AuditLog.actor_type == "staff", AuditLog.actor_id == str(staff.id if staff else ""))
    if action:
        stmt = stmt.where(AuditLog.action.startswith(action, autoescape=True))
    if actions is not None:
        stmt = stmt.where(AuditLog.action.in_(actions))
    if target_type:
        stmt = stmt.where(AuditLog.target_type == target_type)
    if target_id:
        stmt = stmt.where(AuditLog.target_id == target_id)
    if since:
        stmt = stmt.where(AuditLog.created_at >= since)
    if until:
        stmt = stmt.where(AuditLog.created_at < until)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = list(session.scalars(stmt.order_by(AuditLog.created_at.desc(), AuditLog.id.desc())
                                .limit(per_page).offset((page - 1) * per_page)))
    return Page(rows, total, page, per_page)
