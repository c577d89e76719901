"""Notifications to one user: in-app inbox, subscribe-message credits, and every delivery attempt."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, Boolean, CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..db import Base, UTCDateTime, utcnow


class InboxItem(Base):
    """What the user sees in the mini-program's 消息 list; every notification lands here."""

    __tablename__ = "inbox_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text, default="")
    page: Mapped[str] = mapped_column(String(200), default="")  # mini-program page to open
    ref: Mapped[str] = mapped_column(String(64), default="")  # e.g. appeal:12, notice:3
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    def to_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "title": self.title, "body": self.body, "page": self.page,
                "ref": self.ref, "read": self.read_at is not None, "created_at": self.created_at.isoformat()}


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SENT_SUBSCRIBE = "sent_subscribe"  # a subscribe message went out
    SENT_CUSTOM = "sent_custom"  # a customer-service message went out
    INBOX_ONLY = "inbox_only"  # no channel could take it; the inbox has it
    FAILED = "failed"


class Notification(Base):
    """One notify() call: what to tell whom, and how it ended."""

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint("status in ('pending','sent_subscribe','sent_custom','inbox_only','failed')",
                        name="status"),
        UniqueConstraint("dedup_key", name="uq_notifications_dedup_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    fields: Mapped[dict] = mapped_column(JSON, default=dict)
    page: Mapped[str] = mapped_column(String(200), default="")
    ref: Mapped[str] = mapped_column(String(64), default="", index=True)
    inbox_item_id: Mapped[int | None] = mapped_column(ForeignKey("inbox_items.id", ondelete="SET NULL"))
    dedup_key: Mapped[str | None] = mapped_column(String(128))  # same key twice -> one notification
    # The exact subscribe message to send, {"data": {template key: value}, "page": "..."} (the page as is, even "":
    # no kind default), as a notice's fan-out sends it (its test send); None: made from the kind and `fields`.
    subscribe_message: Mapped[dict | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(20), default=DeliveryStatus.PENDING.value, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    attempts = relationship("NotificationAttempt", order_by="NotificationAttempt.id", lazy="selectin")


class NotificationAttempt(Base):
    __tablename__ = "notification_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(20))  # subscribe | custom
    outcome: Mapped[str] = mapped_column(String(20))  # ok | refused | failed | skipped
    errcode: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(String(300), default="")
    # A subscribe message WeChat took: its msgid, and what WeChat's subscribe_msg_sent_event later said became of
    # it ("success", "failed:user refuse to accept the msg", "failed:system failed"; "" until it says).
    msgid: Mapped[str | None] = mapped_column(String(32), index=True)
    delivery: Mapped[str] = mapped_column(String(60), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SubscribeCredit(Base):
    """How many one-time subscribe messages a user has allowed for a template (long-term: unlimited)."""

    __tablename__ = "subscribe_credits"
    __table_args__ = (
        UniqueConstraint("user_id", "template_id", name="uq_subscribe_credits_user_template"),
        CheckConstraint("credits >= 0", name="credits_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    template_id: Mapped[str] = mapped_column(String(64))
    credits: Mapped[int] = mapped_column(Integer, default=0)
    long_term: Mapped[bool] = mapped_column(Boolean, default=False)
    banned: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
