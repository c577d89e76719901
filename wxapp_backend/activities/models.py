"""白领活动: activities, registrations (with waitlist and check-in) and category subscriptions."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..db import Base, UTCDateTime, utcnow

# Activity categories named in the street's plans (午间一小时, 楼宇音乐会, 垂直马拉松, "缘来外滩", 营商论坛, 情感疏解 ...).
CATEGORIES: dict[str, str] = {
    "lunch_hour": "午间一小时",
    "concert": "楼宇音乐会",
    "vertical_marathon": "垂直马拉松",
    "social": "交友联谊",
    "health_check": "健康体检",
    "fitness": "健身",
    "training": "培训",
    "cfo_salon": "财务经理沙龙",
    "company_visit": "企业参访",
    "forum": "营商论坛",  # 营商论坛、专题会商 (seeds 001)
    "wellbeing": "情感疏解",  # the plans' 情感疏解 for office workers (seeds 000)
}


# What an activity saved under a category since retired reads (its code is no word for the worker).
RETIRED_CATEGORY_LABEL = "其他活动"


class ActivityStatus(enum.StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    CANCELLED = "cancelled"


ACTIVITY_STATUS_LABELS = {"draft": "草稿", "published": "已发布", "cancelled": "已取消"}


class RegStatus(enum.StrEnum):
    PENDING_APPROVAL = "pending_approval"  # holds a seat until staff decide
    CONFIRMED = "confirmed"
    WAITLISTED = "waitlisted"
    ATTENDED = "attended"
    NO_SHOW = "no_show"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


# Statuses that hold one of the activity's seats.
SEAT_STATUSES = (RegStatus.PENDING_APPROVAL.value, RegStatus.CONFIRMED.value, RegStatus.ATTENDED.value,
                 RegStatus.NO_SHOW.value)
# Statuses that count as "registered" (one per user and activity).
ACTIVE_STATUSES = SEAT_STATUSES + (RegStatus.WAITLISTED.value,)
# What the user and staff read for each status (the mini-program shows it as is).
STATUS_LABELS: dict[str, str] = {"pending_approval": "待审核", "confirmed": "报名成功", "waitlisted": "候补中",
                                 "attended": "已签到", "no_show": "未到场", "cancelled": "已取消", "rejected": "未通过"}

# The allowed moves; transition() refuses any other with 409.
TRANSITIONS: dict[str, set[str]] = {
    RegStatus.PENDING_APPROVAL: {RegStatus.CONFIRMED, RegStatus.REJECTED, RegStatus.CANCELLED},
    RegStatus.WAITLISTED: {RegStatus.CONFIRMED, RegStatus.PENDING_APPROVAL, RegStatus.CANCELLED},
    RegStatus.CONFIRMED: {RegStatus.ATTENDED, RegStatus.NO_SHOW, RegStatus.CANCELLED},
    RegStatus.ATTENDED: {RegStatus.CONFIRMED},  # checked in, then the activity was postponed: void for the new date
    RegStatus.NO_SHOW: {RegStatus.ATTENDED},  # a late scan after the no-show job still counts
    RegStatus.CANCELLED: set(),
    RegStatus.REJECTED: set(),
}

QUESTION_TYPES = {"text": "文字", "number": "数字", "choice": "单选", "multi": "多选", "bool": "是否",
                  "phone": "电话", "date": "日期"}


class Activity(Base):
    __tablename__ = "activities"
    __table_args__ = (
        CheckConstraint("capacity > 0", name="capacity_positive"),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        CheckConstraint("per_enterprise_cap IS NULL OR per_enterprise_cap > 0", name="cap_positive"),
        CheckConstraint("status in ('draft','published','cancelled')", name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    category: Mapped[str] = mapped_column(String(32), index=True)
    title: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    building_id: Mapped[int | None] = mapped_column(ForeignKey("buildings.id", ondelete="SET NULL"), index=True)
    address: Mapped[str] = mapped_column(String(200), default="")
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    registration_opens_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    registration_closes_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    capacity: Mapped[int] = mapped_column(Integer)
    waitlist_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Audience: every non-empty criterion must hold (empty lists = no restriction).
    audience_building_ids: Mapped[list] = mapped_column(JSON, default=list)
    audience_industries: Mapped[list] = mapped_column(JSON, default=list)
    audience_tags: Mapped[list] = mapped_column(JSON, default=list)
    verified_only: Mapped[bool] = mapped_column(Boolean, default=False)
    per_enterprise_cap: Mapped[int | None] = mapped_column(Integer)
    questions: Mapped[list] = mapped_column(JSON, default=list)
    requires_approval: Mapped[bool] = mapped_column(Boolean, default=False)
    cover_image: Mapped[str] = mapped_column(String(300), default="")
    status: Mapped[str] = mapped_column(String(12), default=ActivityStatus.PUBLISHED.value, index=True)
    attendance_closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # no-show job ran
    created_by: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    building = relationship("Building", lazy="joined")

    @property
    def category_label(self) -> str:
        return CATEGORIES.get(self.category, RETIRED_CATEGORY_LABEL)

    @property
    def place(self) -> str:
        if self.building is not None:
            return self.building.name + (f" {self.address}" if self.address else "")
        return self.address

    def to_dict(self, *, seats_taken: int | None = None, waitlisted: int | None = None) -> dict:
        out = {
            "id": self.id,
            "category": self.category,
            "category_label": self.category_label,
            "title": self.title,
            "description": self.description,
            "building": self.building.to_public() if self.building else None,
            "address": self.address,
            "place": self.place,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "registration_opens_at": _iso(self.registration_opens_at),
            "registration_closes_at": _iso(self.registration_closes_at),
            "cancel_deadline": _iso(self.cancel_deadline),
            "capacity": self.capacity,
            "waitlist_enabled": self.waitlist_enabled,
            "audience": {"building_ids": list(self.audience_building_ids or []),
                         "industries": list(self.audience_industries or []),
                         "tags": list(self.audience_tags or []), "verified_only": self.verified_only},
            "per_enterprise_cap": self.per_enterprise_cap,
            "questions": list(self.questions or []),
            "requires_approval": self.requires_approval,
            "cover_image": self.cover_image,
            "status": self.status,
            "status_label": ACTIVITY_STATUS_LABELS.get(self.status, self.status),
        }
        if seats_taken is not None:
            out["seats_taken"] = seats_taken
            out["seats_left"] = max(self.capacity - seats_taken, 0)
        if waitlisted is not None:
            out["waitlisted"] = waitlisted
        return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


class Registration(Base):
    """One user's registration; `active_key` is set while active so the database allows only one."""

    __tablename__ = "registrations"
    __table_args__ = (
        UniqueConstraint("active_key", name="uq_registrations_active_key"),
        UniqueConstraint("idempotency_key", name="uq_registrations_idempotency_key"),
        CheckConstraint("status in ('pending_approval','confirmed','waitlisted','attended','no_show',"
                        "'cancelled','rejected')", name="status"),
        Index("ix_registrations_activity_status", "activity_id", "status"),
        Index("ix_registrations_waitlist_order", "activity_id", "queue_hour", "penalty", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    activity_id: Mapped[int] = mapped_column(ForeignKey("activities.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    enterprise_id: Mapped[int | None] = mapped_column(ForeignKey("enterprises.id", ondelete="SET NULL"),
                                                      index=True)
    status: Mapped[str] = mapped_column(String(20))
    active_key: Mapped[str | None] = mapped_column(String(40))  # "activity:user" while active, else NULL
    idempotency_key: Mapped[str | None] = mapped_column(String(120))  # "user:Idempotency-Key"
    answers: Mapped[dict] = mapped_column(JSON, default=dict)
    # Waitlist order: (queue_hour, penalty, id). penalty=1 for users with >= 2 no-shows in 90 days.
    queue_hour: Mapped[int] = mapped_column(Integer, default=0)
    penalty: Mapped[int] = mapped_column(Integer, default=0)
    checked_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    checked_in_by: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id", ondelete="SET NULL"))
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    activity = relationship(Activity, lazy="joined")
    user = relationship("User", lazy="select")

    def to_dict(self, *, with_activity: bool = False) -> dict:
        out = {"id": self.id, "activity_id": self.activity_id, "status": self.status,
               "status_label": STATUS_LABELS.get(self.status, self.status), "answers": self.answers or {},
               "checked_in_at": _iso(self.checked_in_at), "created_at": self.created_at.isoformat()}
        if with_activity and self.activity is not None:
            a = self.activity
            out["activity"] = {"id": a.id, "title": a.title, "category": a.category, "place": a.place,
                               "starts_at": a.starts_at.isoformat(), "ends_at": a.ends_at.isoformat(),
                               "status": a.status}
        return out


class RegistrationEvent(Base):
    """One row per status change of a registration (who, from, to)."""

    __tablename__ = "registration_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    registration_id: Mapped[int] = mapped_column(ForeignKey("registrations.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str] = mapped_column(String(20), default="")
    to_status: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(40), default="")
    note: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CategorySubscription(Base):
    """A user wants notices about one activity category."""

    __tablename__ = "category_subscriptions"
    __table_args__ = (UniqueConstraint("user_id", "category", name="uq_category_subscriptions_user_category"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    category: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# Staff notices and their outbox live beside the notices domain; imported here so metadata sees them.
from ..notices import broadcast_models as _broadcast_models  # noqa: E402,F401
