"""The knowledge base in the database (the source of truth), the unanswered-questions queue, feedback and chat log."""

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
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, UTCDateTime, utcnow


class KBEntry(Base):
    __tablename__ = "kb_entries"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    question: Mapped[str] = mapped_column(String(300))
    similar: Mapped[list] = mapped_column(JSON, default=list)
    answer: Mapped[str] = mapped_column(Text)
    category: Mapped[str] = mapped_column(String(40), default="", index=True)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    issuer: Mapped[str | None] = mapped_column(String(200))
    eligibility: Mapped[str | None] = mapped_column(Text)
    conditions: Mapped[str | None] = mapped_column(Text)
    window: Mapped[str | None] = mapped_column(String(300))
    benefit: Mapped[str | None] = mapped_column(Text)
    where_to_apply: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(String(500))
    valid_from: Mapped[date | None] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date)
    retired: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class UnansweredQuestion(Base):
    """Questions the bot could not answer, grouped by their normalised text, for staff to turn into entries."""

    __tablename__ = "kb_unanswered"
    __table_args__ = (CheckConstraint("status in ('open','resolved','ignored')", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    norm: Mapped[str] = mapped_column(String(200), unique=True)
    text: Mapped[str] = mapped_column(String(500))
    count: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(10), default="open", index=True)
    resolved_entry_id: Mapped[str | None] = mapped_column(String(128))
    first_asked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_asked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class ChatTurn(Base):
    """One question the bot handled: the denominator of the answer rates."""

    __tablename__ = "kb_chat_turns"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    channel: Mapped[str] = mapped_column(String(10))  # api | oa | wxa | console
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    question: Mapped[str] = mapped_column(String(500))
    decision: Mapped[str] = mapped_column(String(10), index=True)  # answer | suggest | fallback | handoff | choice (a picked choice) | rejected (choices turned down)
    entry_id: Mapped[str | None] = mapped_column(String(128), index=True)
    # The entry ids a 'suggest' turn offered (您是不是想问 1. 2. 3.), in order: the only ones its vote is taken for.
    offered: Mapped[list | None] = mapped_column(JSON)
    confidence: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class AnswerFeedback(Base):
    """有用 / 没用 on one answer."""

    __tablename__ = "kb_feedback"
    __table_args__ = (
        # One vote per user per entry outside a chat turn (有用 on a search result): the service looks first, but
        # two taps at the same moment both found none and both were saved (PostgreSQL). Migration 0002.
        Index("uq_kb_feedback_user_entry_without_turn", "user_id", "entry_id", unique=True,
              postgresql_where=text("turn_id IS NULL"), sqlite_where=text("turn_id IS NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int | None] = mapped_column(ForeignKey("kb_chat_turns.id", ondelete="SET NULL"), unique=True)
    entry_id: Mapped[str] = mapped_column(String(128), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    useful: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
