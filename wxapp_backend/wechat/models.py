"""What the WeChat side keeps in the database: the customer-service messages WeChat has taken."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, UTCDateTime, utcnow


class CustomSend(Base):
    """A customer-service message (a late chat reply, a mini-program reply) WeChat answered ok to, by the send id
    its job carries. Redis can be away at the moment the job notes its send (a restart, a fail-over): the job then
    fails and runs again, and this row, not a Redis key, tells the re-run that the user has the message already.
    Kept SENT_KEEP_DAYS (jobs.py), longer than a failed job can be requeued."""

    __tablename__ = "wechat_custom_sends"

    send_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    account: Mapped[str] = mapped_column(String(8))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
