"""Appeals (诉求) and what hangs off them: events, ratings, sub-tasks, 退单, extensions, the catalogue."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..db import Base, UTCDateTime, utcnow
from .states import ACTOR_LABELS, EVENT_LABELS, LABELS, AppealStatus

_STATUSES = ",".join(f"'{s.value}'" for s in AppealStatus)


class AppealCategory(Base):
    """政府服务清单: one kind of appeal, the department that owns it and the promised working days."""

    __tablename__ = "appeal_categories"
    __table_args__ = (CheckConstraint("promised_days between 1 and 60", name="promised_days"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(32), unique=True)
    department: Mapped[str] = mapped_column(String(64))
    promised_days: Mapped[int] = mapped_column(Integer, default=5)
    required_fields: Mapped[list] = mapped_column(JSON, default=list)  # e.g. ["enterprise_id"]
    keywords: Mapped[list] = mapped_column(JSON, default=list)  # routing rules for classify.py
    description: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    sort: Mapped[int] = mapped_column(Integer, default=100)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def to_public(self) -> dict:
        return {"code": self.code, "name": self.name, "department": self.department,
                "promised_days": self.promised_days, "required_fields": list(self.required_fields or [])}

    def to_dict(self) -> dict:
        return {"id": self.id, **self.to_public(), "keywords": list(self.keywords or []),
                "description": self.description, "active": self.active, "sort": self.sort}


class Holiday(Base):
    """A staff-edited calendar day: overrides chinesecalendar (holiday = not a workday, 调休 = workday)."""

    __tablename__ = "appeal_holidays"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, unique=True)
    is_workday: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str] = mapped_column(String(64), default="")
    updated_by: Mapped[str] = mapped_column(String(64), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def to_dict(self) -> dict:
        return {"id": self.id, "day": self.day.isoformat(), "is_workday": self.is_workday, "name": self.name}


class AppealCounter(Base):
    """Per-day sequence behind the human numbers (SQ20251016-0007)."""

    __tablename__ = "appeal_counters"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)


class Appeal(Base):
    __tablename__ = "appeals"
    __table_args__ = (
        CheckConstraint(f"status in ({_STATUSES})", name="status"),
        CheckConstraint("master_id is null or master_id <> id", name="not_own_master"),
        UniqueConstraint("user_id", "idempotency_key", name="uq_appeals_user_idempotency"),
        Index("ix_appeals_status_due", "status", "due_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(20), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(16), default="miniprogram")  # miniprogram | chat | console
    status: Mapped[str] = mapped_column(String(20), default=AppealStatus.SUBMITTED.value, index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)

    content: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(10), default="")  # 咨询 | 投诉/求助 | 建言 (classify.message_type)
    contact_name: Mapped[str] = mapped_column(String(32))
    contact_phone: Mapped[str] = mapped_column(String(20))
    enterprise_id: Mapped[int | None] = mapped_column(ForeignKey("enterprises.id", ondelete="SET NULL"), index=True)
    enterprise_name: Mapped[str] = mapped_column(String(200), default="")
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id", ondelete="SET NULL"), index=True)
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("grids.id", ondelete="SET NULL"), index=True)
    images: Mapped[list] = mapped_column(JSON, default=list)  # [{"name","type","size"}]

    category_id: Mapped[int | None] = mapped_column(ForeignKey("appeal_categories.id", ondelete="SET NULL"),
                                                    index=True)
    category_chosen_by: Mapped[str] = mapped_column(String(10), default="")  # user | rules | staff
    suggested_category_id: Mapped[int | None] = mapped_column(ForeignKey("appeal_categories.id",
                                                                         ondelete="SET NULL"))
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    needs_triage: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    department: Mapped[str] = mapped_column(String(64), default="", index=True)
    # The department the appeal was last given to (交办 / 改派: the `assigned` / `reassigned` event naming it); ""
    # while nobody was. `department` alone is also the rules' (or the category's) guess at submission, so a
    # department's queue, counts and figures read this one (services.given_out, handled_by).
    given_to: Mapped[str] = mapped_column(String(64), default="", server_default="", index=True)

    specialist_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id", ondelete="SET NULL"))
    first_responder_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id", ondelete="SET NULL"))
    handler_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id", ondelete="SET NULL"))

    master_id: Mapped[int | None] = mapped_column(ForeignKey("appeals.id", ondelete="SET NULL"), index=True)
    paused_from: Mapped[str] = mapped_column(String(20), default="")
    info_request: Mapped[str] = mapped_column(Text, default="")
    resolution: Mapped[str] = mapped_column(Text, default="")
    round: Mapped[int] = mapped_column(Integer, default=1)  # resolution round; "not resolved" starts the next
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)

    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    response_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_minutes_left: Mapped[int | None] = mapped_column(Integer)  # frozen while paused
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    warned_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the deadline we warned about
    overdue: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    urge_count: Mapped[int] = mapped_column(Integer, default=0)
    last_urged_on: Mapped[date | None] = mapped_column(Date)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    first_resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_on_time: Mapped[bool | None] = mapped_column(Boolean)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    escalated: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalation_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    escalation_reason: Mapped[str] = mapped_column(Text, default="")

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    category = relationship(AppealCategory, foreign_keys=[category_id], lazy="joined")
    enterprise = relationship("Enterprise", lazy="joined")
    building = relationship("Building", lazy="joined")

    @property
    def status_label(self) -> str:
        return LABELS.get(self.status, self.status)

    def to_public(self) -> dict:
        """What the enterprise sees: no internal routing, no staff names."""
        return {
            "id": self.id, "number": self.number, "status": self.status, "status_label": self.status_label,
            "category": self.category.name if self.category else None, "content": self.content,
            "contact_name": self.contact_name, "contact_phone": self.contact_phone,
            "enterprise_name": self.enterprise.name if self.enterprise else self.enterprise_name,
            "building": self.building.name if self.building else None,
            "images": [i["name"] for i in self.images or []], "info_request": self.info_request,
            "resolution": self.resolution, "round": self.round,
            "submitted_at": _iso(self.submitted_at), "due_at": _iso(self.due_at),
            "resolved_at": _iso(self.resolved_at), "closed_at": _iso(self.closed_at),
            "escalated": self.escalated, "escalation_due_at": _iso(self.escalation_due_at),
        }

    def to_staff(self) -> dict:
        return {
            **self.to_public(), "version": self.version, "user_id": self.user_id, "kind": self.kind,
            "channel": self.channel, "enterprise_id": self.enterprise_id, "building_id": self.building_id,
            "grid_id": self.grid_id, "category_id": self.category_id,
            "suggested_category_id": self.suggested_category_id, "confidence": round(self.confidence, 3),
            "needs_triage": self.needs_triage, "department": self.department,
            "specialist_staff_id": self.specialist_staff_id, "first_responder_id": self.first_responder_id,
            "handler_id": self.handler_id, "master_id": self.master_id, "reopen_count": self.reopen_count,
            "overdue": self.overdue, "urge_count": self.urge_count, "escalation_reason": self.escalation_reason,
            "first_response_at": _iso(self.first_response_at), "response_due_at": _iso(self.response_due_at),
            "sla_minutes_left": self.sla_minutes_left, "resolved_on_time": self.resolved_on_time,
        }


class AppealEvent(Base):
    """The timeline: every state change and every step worth showing, with who did it."""

    __tablename__ = "appeal_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    appeal_id: Mapped[int] = mapped_column(ForeignKey("appeals.id", ondelete="CASCADE"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str] = mapped_column(String(20), default="")
    to_status: Mapped[str] = mapped_column(String(20), default="")
    actor_type: Mapped[str] = mapped_column(String(10))  # user | staff | system
    actor_id: Mapped[str] = mapped_column(String(64), default="")
    actor_name: Mapped[str] = mapped_column(String(64), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    public: Mapped[bool] = mapped_column(Boolean, default=False)  # shown to the enterprise
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    def to_public(self) -> dict:
        return {"action": self.action, "action_label": EVENT_LABELS.get(self.action, self.action),
                "status": self.to_status or None,
                "status_label": LABELS.get(self.to_status) if self.to_status else None,
                "note": self.data.get("public_note", self.note) if self.data else self.note,
                "at": _iso(self.created_at)}

    def to_dict(self) -> dict:
        return {"id": self.id, "action": self.action, "action_label": EVENT_LABELS.get(self.action, self.action),
                "from": self.from_status, "to": self.to_status, "actor_type": self.actor_type,
                "actor_label": ACTOR_LABELS.get(self.actor_type, self.actor_type), "actor_id": self.actor_id,
                "actor_name": self.actor_name,
                "note": self.note, "public": self.public, "data": self.data, "at": _iso(self.created_at)}


class AppealRating(Base):
    """好差评: one per appeal per resolution round."""

    __tablename__ = "appeal_ratings"
    __table_args__ = (
        UniqueConstraint("appeal_id", "round", name="uq_appeal_ratings_round"),
        CheckConstraint("satisfaction between 1 and 5", name="satisfaction"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    appeal_id: Mapped[int] = mapped_column(ForeignKey("appeals.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    round: Mapped[int] = mapped_column(Integer)
    resolved: Mapped[bool] = mapped_column(Boolean)
    satisfaction: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    department: Mapped[str] = mapped_column(String(64), default="")  # who handled this round
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    def to_dict(self) -> dict:
        return {"round": self.round, "resolved": self.resolved, "satisfaction": self.satisfaction,
                "comment": self.comment, "at": _iso(self.created_at)}


class TaskKind:
    COORDINATION = "coordination"  # 会办 sub-task for another department
    RECTIFICATION = "rectification"  # 整改 after a bad rating
    ESCALATION = "escalation"  # 办不成事: the escalation owner's task


class AppealTask(Base):
    __tablename__ = "appeal_tasks"
    __table_args__ = (
        CheckConstraint("kind in ('coordination','rectification','escalation')", name="kind"),
        CheckConstraint("status in ('open','done','cancelled')", name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    appeal_id: Mapped[int] = mapped_column(ForeignKey("appeals.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    department: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    required: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(10), default="open", index=True)
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "department": self.department, "description": self.description,
                "required": self.required, "status": self.status, "due_at": _iso(self.due_at),
                "result": self.result, "created_at": _iso(self.created_at), "closed_at": _iso(self.closed_at)}


class AppealReturn(Base):
    """退单: a department hands an appeal back with a reason; the centre accepts (re-route) or rejects."""

    __tablename__ = "appeal_returns"
    __table_args__ = (CheckConstraint("status in ('pending','accepted','rejected')", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    appeal_id: Mapped[int] = mapped_column(ForeignKey("appeals.id", ondelete="CASCADE"), index=True)
    department: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    requested_by: Mapped[str] = mapped_column(String(64), default="")
    decided_by: Mapped[str] = mapped_column(String(64), default="")
    decision_note: Mapped[str] = mapped_column(Text, default="")
    new_department: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict:
        return {"id": self.id, "department": self.department, "reason": self.reason, "status": self.status,
                "decision_note": self.decision_note, "new_department": self.new_department,
                "decided_by": self.decided_by, "created_at": _iso(self.created_at),
                "decided_at": _iso(self.decided_at)}


class AppealExtension(Base):
    """延期申请: more working days, granted by staff."""

    __tablename__ = "appeal_extensions"
    __table_args__ = (
        CheckConstraint("status in ('pending','approved','rejected')", name="status"),
        CheckConstraint("working_days between 1 and 30", name="working_days"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    appeal_id: Mapped[int] = mapped_column(ForeignKey("appeals.id", ondelete="CASCADE"), index=True)
    working_days: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="pending")
    requested_by: Mapped[str] = mapped_column(String(64), default="")
    decided_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def to_dict(self) -> dict:
        return {"id": self.id, "working_days": self.working_days, "reason": self.reason, "status": self.status,
                "decided_by": self.decided_by, "created_at": _iso(self.created_at),
                "decided_at": _iso(self.decided_at)}


class AppealReport(Base):
    """A prepared weekly report (the Monday job writes it; the API serves it or computes it fresh)."""

    __tablename__ = "appeal_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    week: Mapped[str] = mapped_column(String(8), unique=True)  # 2025-W40
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    # The few figures the list of stored reports shows (reports.summary), for the centre and each department: the
    # list read every report's data, each appeal of its week (about a megabyte a week), to show seven numbers.
    # NULL for a report stored some other way: the list counts it from its data then.
    summary: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    generated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def handled_by(department: str):
    """Appeals `department` handles: given to it (交办 / 改派) and still its own. Not those it was only guessed for
    at submission (已提交, or 已受理 and not given out), which the centre may yet send elsewhere: a department's
    queue, counts, figures and reports held those as its own (services.given_out is the same rule)."""
    return and_(Appeal.department == department, Appeal.given_to == department)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
