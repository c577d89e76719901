"""精准推送: staff notices to many users, and the outbox that delivers each one exactly once."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, UTCDateTime, utcnow


class NoticeStatus(enum.StrEnum):
    DRAFT = "draft"
    EXPANDING = "expanding"  # outbox rows are being written in batches
    SENDING = "sending"
    DONE = "done"
    STOPPED = "stopped"  # staff stopped the fan-out: nobody more gets it; never resumed


class OutboxStatus(enum.StrEnum):
    PENDING = "pending"  # waiting (maybe for next_attempt_at after a transient error)
    CLAIMED = "claimed"  # a worker holds the lease; nothing sent yet
    SENDING = "sending"  # the WeChat call is under way: never sent again, even when the lease expires
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"  # no credit at send time (the inbox has it)


TERMINAL = (OutboxStatus.SENT.value, OutboxStatus.FAILED.value, OutboxStatus.SKIPPED.value)


class Notice(Base):
    __tablename__ = "notices"
    __table_args__ = (
        CheckConstraint("status in ('draft','expanding','sending','done','stopped')", name="status"),
        CheckConstraint("kind in ('policy','activity')", name="kind"),
        UniqueConstraint("created_by", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(12), default="policy")
    title: Mapped[str] = mapped_column(String(100))
    summary: Mapped[str] = mapped_column(Text, default="")
    page: Mapped[str] = mapped_column(String(200), default="")
    activity_id: Mapped[int | None] = mapped_column(ForeignKey("activities.id", ondelete="SET NULL"))
    template_id: Mapped[str] = mapped_column(String(64), default="")
    template_fields: Mapped[dict] = mapped_column(JSON, default=dict)
    # {"all": bool, "categories": [...], "building_ids": [...], "industries": [...], "tags": [...],
    #  "registrants_of": activity id or null, "verified_only": bool}; every given criterion must hold.
    audience: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(12), default=NoticeStatus.DRAFT.value, index=True)
    expand_cursor: Mapped[int] = mapped_column(Integer, default=0)  # last users.id written to the outbox
    recipients: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id", ondelete="SET NULL"))
    published_by: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id", ondelete="SET NULL"))
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # The creating request's Idempotency-Key (per staff member) and what that request asked for: a client's retry
    # gets this draft back, not a second one; the same key with another body is a 409.
    idempotency_key: Mapped[str | None] = mapped_column(String(80))
    request_digest: Mapped[str | None] = mapped_column(String(32))

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "title": self.title, "summary": self.summary, "page": self.page,
                "activity_id": self.activity_id, "template_id": self.template_id,
                "template_fields": dict(self.template_fields or {}), "audience": dict(self.audience or {}),
                "status": self.status, "recipients": self.recipients,
                "published_at": self.published_at.isoformat() if self.published_at else None,
                "finished_at": self.finished_at.isoformat() if self.finished_at else None}


class OutboxRow(Base):
    """One delivery of one notice to one user on one channel (inbox | subscribe)."""

    __tablename__ = "notice_outbox"
    __table_args__ = (
        UniqueConstraint("notice_id", "user_id", "channel", name="uq_notice_outbox_notice_user_channel"),
        CheckConstraint("status in ('pending','claimed','sending','sent','failed','skipped')", name="status"),
        Index("ix_notice_outbox_notice_status", "notice_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("notices.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(12))
    status: Mapped[str] = mapped_column(String(10), default=OutboxStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    errcode: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(String(200), default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # As NotificationAttempt: the subscribe message's msgid and WeChat's later delivery report ("" until then).
    msgid: Mapped[str | None] = mapped_column(String(32), index=True)
    delivery: Mapped[str] = mapped_column(String(60), default="")


class StaffTestRecipient(Base):
    """The mini-program user a staff member sends test notices to (their own phone)."""

    __tablename__ = "staff_test_recipients"

    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
